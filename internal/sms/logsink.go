package sms

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sharelinks/sharelinks/internal/atomicfile"
)

// LogSink is the dev SMS sink. It logs one line per message with the number
// masked (never the body, which may hold a code) and writes the full message
// as JSON to its own file in dir, where a developer (or an end-to-end test)
// can read the code.
type LogSink struct {
	dir    string
	logger *slog.Logger
}

// SinkMessage is the JSON document LogSink writes for each message.
type SinkMessage struct {
	ID   string    `json:"id"`
	To   string    `json:"to"`
	Body string    `json:"body"`
	Time time.Time `json:"time"`
}

// NewLogSink returns a sink writing into dir (created on first use) and
// logging to logger (discarded when nil).
func NewLogSink(dir string, logger *slog.Logger) Sender {
	return &LogSink{dir: dir, logger: cmp.Or(logger, slog.New(slog.DiscardHandler))}
}

// Send writes the message to "<dir>/<UTC time>_<id>.json" and returns the id.
func (s *LogSink) Send(ctx context.Context, to, body string) (string, error) {
	if err := checkMessage(to, body); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	m := SinkMessage{ID: "SMdev" + hex.EncodeToString(raw[:]), To: to, Body: body, Time: time.Now().UTC()}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode sms: %w", err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return "", fmt.Errorf("create sms sink dir: %w", err)
	}
	name := filepath.Join(s.dir, m.Time.Format("20060102T150405.000Z")+"_"+m.ID+".json")
	if err := atomicfile.Write(name, append(data, '\n')); err != nil {
		return "", fmt.Errorf("write sms sink file: %w", err)
	}
	s.logger.InfoContext(ctx, "dev sms sink: message written", "to", MaskPhone(to), "id", m.ID, "file", name)
	return m.ID, nil
}

// LogSink satisfies Sender.
var _ Sender = (*LogSink)(nil)
