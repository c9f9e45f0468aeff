package postgres

// Listening reports whether the revocation listener is connected (tests).
func (c *CachedKeys) Listening() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}
