package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Listening reports whether the revocation listener is connected (tests).
func (c *CachedKeys) Listening() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// GroupCommit is the group commit, for tests.
type GroupCommit = groupCommit

// NewGroupCommit returns a group commit with slots rounds in flight (a
// further one starting once the one out has been out for overlap) that
// reports each round's size to observe.
func NewGroupCommit(pool *pgxpool.Pool, slots int, overlap time.Duration, observe func(jobs int)) *GroupCommit {
	g := newGroupCommit(pool, func() {})
	g.slots, g.overlap, g.observe = slots, overlap, observe
	return g
}

// Run is run.
func (g *GroupCommit) Run(ctx context.Context, key []byte, queue func(b *pgx.Batch)) error {
	return g.run(ctx, key, queue)
}

// Pending is the number of jobs waiting for a round.
func (g *GroupCommit) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

// GroupBusy is how many waiting requests start a round beside the one out.
const GroupBusy = groupBusy

// The reaper's per-round statements, for tests of the work they do.
var (
	AuditSealLagSQL          = auditSealLagSQL
	DeleteExpiredSessionsSQL = deleteExpiredSessionsSQL
	ReemitChallengesSQL      = reemitChallengesSQL
)
