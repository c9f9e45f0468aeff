package mail

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sharelinks/sharelinks/internal/atomicfile"
)

// FileSink is the dev mail sink: each message becomes an RFC 5322 .eml file
// (exactly the bytes SMTP would carry) that any mail client can open. Files
// are named "<UTC time>_<message id>.eml"; sending the same Message-ID again
// rewrites the existing file, so a retried notification does not pile up
// copies.
type FileSink struct {
	dir  string
	from string
	mu   sync.Mutex // serialises the find-or-create of a file name
}

// NewFileSink returns a sink writing into dir (created on first use) with
// from ("Name <addr>") as sender. An invalid from surfaces on Send.
func NewFileSink(dir, from string) Sender {
	return &FileSink{dir: dir, from: from}
}

// Send writes m as an .eml file and returns its Message-ID.
func (f *FileSink) Send(ctx context.Context, m Message) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	from, err := parseFrom(f.from)
	if err != nil {
		return "", err
	}
	msg, _, err := buildMsg(from, m)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		return "", fmt.Errorf("render message: %w", err)
	}
	id := msg.GetMessageID()
	key := fileKey(messageID(msg))

	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return "", fmt.Errorf("create mail sink dir: %w", err)
	}
	name, err := f.existing(key)
	if err != nil {
		return "", err
	}
	if name == "" {
		name = filepath.Join(f.dir, time.Now().UTC().Format("20060102T150405.000Z")+"_"+key+".eml")
	}
	if err := atomicfile.Write(name, buf.Bytes()); err != nil {
		return "", fmt.Errorf("write mail sink file: %w", err)
	}
	return id, nil
}

// existing returns the file already written for key, or "".
func (f *FileSink) existing(key string) (string, error) {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return "", fmt.Errorf("list mail sink dir: %w", err)
	}
	suffix := "_" + key + ".eml"
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			return filepath.Join(f.dir, e.Name()), nil
		}
	}
	return "", nil
}

// Close does nothing: the sink holds no resources.
func (f *FileSink) Close() error { return nil }

// fileKey makes a message id safe as part of a file name.
func fileKey(id string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '-', r == '@', r == '+', r == '=':
			return r
		}
		return '_'
	}, id)
}
