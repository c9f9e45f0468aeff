package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/evidence"
	"github.com/sharelinks/sharelinks/internal/link"
)

type auditEventJSON struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	LinkID     string          `json:"link_id"`
	OccurredAt time.Time       `json:"occurred_at"`
	Actor      events.Actor    `json:"actor"`
	Data       json.RawMessage `json:"data"`
}

func encodeCursor(c *link.Cursor) string {
	raw, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func parseAuditQuery(r *http.Request, allowed map[string]bool) (link.AuditQuery, error) {
	v := r.URL.Query()
	for k := range v {
		if !allowed[k] {
			e := apperr.New(apperr.Invalid, "unknown_parameter", "unknown query parameter %q", k)
			e.Field = k
			return link.AuditQuery{}, e
		}
	}
	q := link.AuditQuery{Size: 50, LinkID: v.Get("link_id"), Type: v.Get("type")}
	if err := textParams(v); err != nil {
		return q, err
	}
	if sz := v.Get("size"); sz != "" {
		n, err := strconv.Atoi(sz)
		if err != nil || n < 1 || n > 100 {
			return q, apperr.Field("size", "invalid_size", "size must be 1 to 100")
		}
		q.Size = n
	}
	if since := v.Get("since"); since != "" {
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			return q, apperr.Field("since", "invalid_since", "since must be an RFC 3339 time")
		}
		q.Since = t
	}
	if last := v.Get("last"); last != "" {
		var c link.Cursor
		raw, err := base64.RawURLEncoding.DecodeString(last)
		if err != nil || json.Unmarshal(raw, &c) != nil || !isUUID(c.ID) || c.OrderBy != "occurred_at" {
			return q, apperr.Field("last", "invalid_cursor", "last must be the value of a previous response's last")
		}
		q.After = &c
	}
	return q, nil
}

func (s *Server) writeAudit(w http.ResponseWriter, r *http.Request, o link.Owner, q link.AuditQuery) error {
	evs, next, err := s.svc.Audit(r.Context(), o, q)
	if err != nil {
		return err
	}
	out := make([]auditEventJSON, len(evs))
	for i, e := range evs {
		out[i] = auditEventJSON{ID: e.ID, Type: e.Type, LinkID: e.LinkID, OccurredAt: e.OccurredAt.UTC(), Actor: e.Actor, Data: e.Data}
	}
	resp := map[string]any{"events": out}
	if next != nil {
		resp["last"] = encodeCursor(next)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) linkEvents(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	q, err := parseAuditQuery(r, map[string]bool{"size": true, "last": true})
	if err != nil {
		return err
	}
	q.LinkID, q.OfLink = r.PathValue("id"), true
	if !isUUID(q.LinkID) {
		return apperr.New(apperr.NotFound, "link_not_found", "link not found")
	}
	return s.writeAudit(w, r, o, q)
}

func (s *Server) ownerEvents(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	q, err := parseAuditQuery(r, map[string]bool{"size": true, "last": true, "type": true, "link_id": true, "since": true})
	if err != nil {
		return err
	}
	if q.LinkID != "" && !isUUID(q.LinkID) {
		return apperr.Field("link_id", "invalid_link_id", "link_id must be a link id")
	}
	return s.writeAudit(w, r, o, q)
}

// auditExport streams a link's sealed audit chain with its head signed
// (evidence.Export), for an owner to keep as evidence and check offline
// against /.well-known/sharelinks-audit-keys.json. The rows are written as
// they are read, so a link with a million events costs no memory.
func (s *Server) auditExport(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	for k := range r.URL.Query() {
		e := apperr.New(apperr.Invalid, "unknown_parameter", "unknown query parameter %q", k)
		e.Field = k
		return e
	}
	linkID := r.PathValue("id")
	if !isUUID(linkID) {
		return apperr.New(apperr.NotFound, "link_not_found", "link not found")
	}
	started, first := false, true
	var bw *bufio.Writer
	var suffix []byte
	start := func(head evidence.Head, unsealed int64) error {
		sig, err := s.cfg.Evidence.Sign(linkID, o.ID, head, time.Now())
		if err != nil {
			return err
		}
		prefix, err := json.Marshal(evidence.Export{Format: evidence.Format, LinkID: linkID, OwnerID: o.ID,
			ExportedAt: time.Now().UTC(), Genesis: hex.EncodeToString(evidence.Genesis(linkID)),
			Head: head, Unsealed: unsealed, Signature: sig})
		if err != nil {
			return fmt.Errorf("marshal export: %w", err)
		}
		// The document with its entries spliced in as they come: the
		// marshalled struct ends `"entries":null,...}`; write up to the
		// array, the entries, then the rest.
		before, after, ok := bytes.Cut(prefix, []byte(`"entries":null`))
		if !ok {
			return errors.New("export layout: no entries field")
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="audit-`+linkID+`.json"`)
		w.WriteHeader(http.StatusOK)
		started = true
		bw = bufio.NewWriterSize(w, 32<<10)
		_, _ = bw.Write(before)
		_, _ = bw.WriteString(`"entries":[`)
		suffix = after
		return nil
	}
	entry := func(e evidence.Entry) error {
		if !first {
			_ = bw.WriteByte(',')
		}
		first = false
		raw, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("marshal entry: %w", err)
		}
		_, err = bw.Write(raw)
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), exportTimeout)
	defer cancel()
	// The server's write timeout is sized for ordinary answers.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(exportTimeout))
	err := s.svc.AuditChain(ctx, o, linkID, start, entry)
	if err != nil && started {
		s.log.Error("audit export failed mid-stream", "request_id", requestID(r.Context()), "err", err)
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		return err
	}
	_ = bw.WriteByte(']')
	_, _ = bw.Write(suffix)
	_ = bw.WriteByte('\n')
	return bw.Flush()
}

func (s *Server) auditKeys(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(s.cfg.Evidence.Keys())
}
