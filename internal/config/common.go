package config

import (
	"fmt"

	"github.com/sharelinks/sharelinks/internal/secret"
)

// Common are the settings every binary shares.
type Common struct {
	DatabaseURL    string
	NATSURL        string
	Secret         string
	LogFormat      string
	LogLevel       string
	StreamReplicas int
	Keys           *secret.Keys
}

// BindCommon binds the shared settings. needNATS/needSecret say which the
// command requires.
func (s *Set) BindCommon(c *Common, needNATS, needSecret bool) {
	s.Required(&c.DatabaseURL, "DATABASE_URL", "Postgres connection URL")
	if needNATS {
		s.Required(&c.NATSURL, "NATS_URL", "NATS server URL")
		s.Int(&c.StreamReplicas, "STREAM_REPLICAS", 1, "JetStream stream replicas (3 in production)")
	}
	if needSecret {
		s.Required(&c.Secret, "SHARELINKS_SECRET", "base64 of at least 32 random bytes; all keys derive from it")
		s.Check(func() error {
			k, err := secret.Parse(c.Secret)
			if err != nil {
				return fmt.Errorf("SHARELINKS_SECRET %w", err)
			}
			c.Keys = k
			return nil
		})
	}
	s.String(&c.LogFormat, "LOG_FORMAT", "json", "log format: json or text")
	s.String(&c.LogLevel, "LOG_LEVEL", "info", "log level: debug, info, warn, error")
}
