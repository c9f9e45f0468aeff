// Package config reads settings from the environment, each also a flag
// (flags win), and reports a bad one in a single line naming the setting.
package config

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Set collects the settings of one command.
type Set struct {
	fs     *flag.FlagSet
	checks []func() error
}

// New returns a set for the named command.
func New(name string) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &Set{fs: fs}
}

// FlagSet exposes the underlying flags (for extra command flags).
func (s *Set) FlagSet() *flag.FlagSet { return s.fs }

func flagName(env string) string { return strings.ReplaceAll(strings.ToLower(env), "_", "-") }

// String binds env var env (flag --env-in-kebab-case) to p.
func (s *Set) String(p *string, env, def, usage string) {
	v := def
	if e, ok := os.LookupEnv(env); ok && e != "" {
		v = e
	}
	s.fs.StringVar(p, flagName(env), v, usage+" ($"+env+")")
}

// Required binds a string that must be set.
func (s *Set) Required(p *string, env, usage string) {
	s.String(p, env, "", usage)
	s.checks = append(s.checks, func() error {
		if *p == "" {
			return fmt.Errorf("%s is not set: %s (set $%s or --%s)", env, usage, env, flagName(env))
		}
		return nil
	})
}

// Duration binds a duration.
func (s *Set) Duration(p *time.Duration, env string, def time.Duration, usage string) {
	v := def
	var bad string
	if e, ok := os.LookupEnv(env); ok && e != "" {
		d, err := time.ParseDuration(e)
		if err != nil {
			bad = e
		} else {
			v = d
		}
	}
	s.fs.DurationVar(p, flagName(env), v, usage+" ($"+env+")")
	if bad != "" {
		s.checks = append(s.checks, func() error { return fmt.Errorf("%s=%q is not a duration like 15s or 24h", env, bad) })
	}
}

// Int binds an integer.
func (s *Set) Int(p *int, env string, def int, usage string) {
	v := def
	var bad string
	if e, ok := os.LookupEnv(env); ok && e != "" {
		n, err := strconv.Atoi(e)
		if err != nil {
			bad = e
		} else {
			v = n
		}
	}
	s.fs.IntVar(p, flagName(env), v, usage+" ($"+env+")")
	if bad != "" {
		s.checks = append(s.checks, func() error { return fmt.Errorf("%s=%q is not an integer", env, bad) })
	}
}

// Bool binds a boolean.
func (s *Set) Bool(p *bool, env string, def bool, usage string) {
	v := def
	var bad string
	if e, ok := os.LookupEnv(env); ok && e != "" {
		b, err := strconv.ParseBool(e)
		if err != nil {
			bad = e
		} else {
			v = b
		}
	}
	s.fs.BoolVar(p, flagName(env), v, usage+" ($"+env+")")
	if bad != "" {
		s.checks = append(s.checks, func() error { return fmt.Errorf("%s=%q is not true or false", env, bad) })
	}
}

// Check adds a validation run after parsing.
func (s *Set) Check(fn func() error) { s.checks = append(s.checks, fn) }

// Parse parses args and runs the checks; the first failure is returned.
func (s *Set) Parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	for _, c := range s.checks {
		if err := c(); err != nil {
			return err
		}
	}
	return nil
}

// Args returns the positional arguments left after parsing.
func (s *Set) Args() []string { return s.fs.Args() }
