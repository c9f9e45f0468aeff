package main

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sharelinks/sharelinks/internal/secret"
)

// seededLink is a link the bench wrote directly, with its clear token.
type seededLink struct {
	id    string
	token string
}

// benchTargets is the target list of every link the bench creates: one
// file with a URL, so /open answers 302 with the grant appended.
const benchTargets = `[{"id":"report.pdf","type":"file","url":"https://files.example.com/report.pdf"}]`

// linkSource generates open links for CopyFrom, hashing and sealing each
// token exactly as the service does, and keeps every k-th link as a sample.
type linkSource struct {
	keys      *secret.Keys
	owner     [16]byte
	expiresAt time.Time
	n, i      int
	every     int
	sample    []seededLink
	vals      []any
	targets   []byte
}

func (s *linkSource) Next() bool {
	if s.i >= s.n {
		return false
	}
	id := uuid.Must(uuid.NewV7())
	ids := id.String()
	tok := secret.NewToken("")
	if s.every > 0 && s.i%s.every == 0 {
		s.sample = append(s.sample, seededLink{id: ids, token: tok})
	}
	s.vals = []any{[16]byte(id), s.owner, s.keys.LookupHash(tok), s.keys.Seal([]byte(tok), []byte(ids)),
		"view", "none", s.targets, s.expiresAt}
	s.i++
	return true
}

func (s *linkSource) Values() ([]any, error) { return s.vals, nil }
func (s *linkSource) Err() error             { return nil }

// seedLinks writes n open, unlimited links expiring at expiresAt with one
// COPY per stream, in parallel when streams > 1 (each stream commits on
// its own). It keeps about sampleN of them with their tokens. It returns
// when the last COPY has committed, and that instant.
func seedLinks(ctx context.Context, pool *pgxpool.Pool, keys *secret.Keys, ownerID string, n, streams int,
	expiresAt time.Time, sampleN int) ([]seededLink, time.Time, error) {
	owner, err := uuid.Parse(ownerID)
	if err != nil {
		return nil, time.Time{}, err
	}
	every := 0
	if sampleN > 0 {
		every = max(n/sampleN, 1)
	}
	cols := []string{"id", "owner_id", "token_hash", "token_sealed", "link_type", "auth_type", "targets", "expires_at"}
	type out struct {
		sample []seededLink
		err    error
	}
	res := make(chan out, streams)
	for k := range streams {
		part := n / streams
		if k == streams-1 {
			part = n - part*(streams-1)
		}
		go func() {
			src := &linkSource{keys: keys, owner: owner, expiresAt: expiresAt, n: part, every: every,
				targets: []byte(benchTargets)}
			conn, err := pool.Acquire(ctx)
			if err != nil {
				res <- out{err: err}
				return
			}
			defer conn.Release()
			_, err = conn.Conn().CopyFrom(ctx, pgx.Identifier{"links"}, cols, src)
			res <- out{sample: src.sample, err: err}
		}()
	}
	var sample []seededLink
	var firstErr error
	for range streams {
		o := <-res
		sample = append(sample, o.sample...)
		if o.err != nil && firstErr == nil {
			firstErr = fmt.Errorf("copy links: %w", o.err)
		}
	}
	return sample, time.Now(), firstErr
}

// codeLink is a seeded SMS link with its clear token and sent code.
type codeLink struct {
	token, code string
}

// seedCodeLinks writes n SMS-code links, each with a challenge in the
// state the dispatcher leaves after sending (status sent, the code's
// HMAC stored), hashing and sealing as the service does, in one statement
// per table.
func seedCodeLinks(ctx context.Context, pool *pgxpool.Pool, keys *secret.Keys, ownerID string, n int) ([]codeLink, error) {
	out := make([]codeLink, n)
	linkIDs, hashes, sealed := make([]string, n), make([][]byte, n), make([][]byte, n)
	chIDs, codeHashes := make([]string, n), make([][]byte, n)
	for i := range n {
		id, ch := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
		tok := secret.NewToken("")
		code := fmt.Sprintf("%06d", mrand.IntN(1_000_000))
		out[i] = codeLink{token: tok, code: code}
		linkIDs[i], hashes[i], sealed[i] = id, keys.LookupHash(tok), keys.Seal([]byte(tok), []byte(id))
		chIDs[i], codeHashes[i] = ch, keys.CodeHash(hashes[i], code)
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO links (id, owner_id, token_hash, token_sealed, link_type, auth_type, recipient, targets, expires_at)
		SELECT id, $2, h, s, 'view', 'sms_otp', '+15555550100', $5, now() + interval '1 day'
		FROM unnest($1::uuid[], $3::bytea[], $4::bytea[]) AS t(id, h, s)`, linkIDs, ownerID, hashes, sealed, benchTargets)
	b.Queue(`INSERT INTO otp_challenges (id, link_id, channel, recipient, status, code_hash, sent_at, expires_at)
		SELECT c, l, 'sms', '+15555550100', 'sent', h, now(), now() + interval '30 minutes'
		FROM unnest($1::uuid[], $2::uuid[], $3::bytea[]) AS t(c, l, h)`, chIDs, linkIDs, codeHashes)
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("seed code links: %w", err)
	}
	return out, nil
}
