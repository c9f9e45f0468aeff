// Command api is the sharelinks HTTP API: the owner API, the recipient
// endpoints, and the outbox relay that publishes their events.
//
//	api [serve]                 run the HTTP API (default)
//	api migrate                 apply database migrations (idempotent)
//	api keys create --owner N   create an API key; the key is the last line of stdout
//	api keys list               list keys (prefixes only)
//	api keys revoke PREFIX      revoke a key
//	api verify-audit -keys URL|FILE [-previous EARLIER] EXPORT
//	                            check an audit export offline
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sharelinks/sharelinks/internal/config"
	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/postgres"
	"github.com/sharelinks/sharelinks/internal/secret"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args)
	case "migrate":
		return migrateCmd(ctx, args, stdout)
	case "keys":
		return keysCmd(ctx, args, stdout)
	case "owners":
		return ownersCmd(ctx, args, stdout)
	case "verify-audit":
		return verifyAuditCmd(ctx, args, stdout)
	}
	return fmt.Errorf("unknown command %q (serve, migrate, keys, owners, verify-audit)", cmd)
}

func migrateCmd(ctx context.Context, args []string, stdout io.Writer) error {
	var c config.Common
	set := config.New("api migrate")
	set.BindCommon(&c, false, false)
	if err := set.Parse(args); err != nil {
		return err
	}
	from, to, err := postgres.Migrate(ctx, c.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	fmt.Fprintf(stdout, "schema at version %d (was %d)\n", to, from)
	return nil
}

func keysCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("keys needs a subcommand: create --owner NAME, list, revoke PREFIX")
	}
	sub, args := args[0], args[1:]
	// Accept the prefix before or after the flags.
	var positional []string
	if sub == "revoke" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		positional, args = args[:1], args[1:]
	}
	var c config.Common
	set := config.New("api keys " + sub)
	set.BindCommon(&c, false, false)
	var owner string
	if sub == "create" {
		set.FlagSet().StringVar(&owner, "owner", "", "owner (application) name the key belongs to")
		set.Check(func() error {
			if strings.TrimSpace(owner) == "" {
				return errors.New("keys create needs --owner NAME")
			}
			return nil
		})
	}
	store, closeStore, err := openAdminStore(ctx, set, &c, args)
	if err != nil {
		return err
	}
	defer closeStore()
	switch sub {
	case "create":
		key := secret.NewToken(link.APIKeyPrefix)
		prefix := key[:len(link.APIKeyPrefix)+8]
		if err := store.CreateKey(ctx, strings.TrimSpace(owner), prefix, secret.APIKeyHash(key)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created key %s for owner %q; it is shown only now:\n%s\n", prefix, owner, key)
	case "list":
		keys, err := store.ListKeys(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PREFIX\tOWNER\tCREATED\tREVOKED")
		for _, k := range keys {
			revoked := "-"
			if k.RevokedAt != nil {
				revoked = k.RevokedAt.UTC().Format("2006-01-02T15:04:05Z")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Prefix, k.Owner, k.CreatedAt.UTC().Format("2006-01-02T15:04:05Z"), revoked)
		}
		return tw.Flush()
	case "revoke":
		positional = append(positional, set.Args()...)
		if len(positional) != 1 {
			return errors.New("keys revoke needs one PREFIX (see keys list)")
		}
		if err := store.RevokeKey(ctx, positional[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s\n", positional[0])
	default:
		return fmt.Errorf("unknown keys subcommand %q (create, list, revoke)", sub)
	}
	return nil
}

// ownersCmd shows or sets what the operator allows one owner (a tenant):
// "owners policy NAME" prints it; with flags it replaces it whole (flags
// left out fall back to the service's settings); --clear removes it.
func ownersCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) < 2 || args[0] != "policy" || strings.HasPrefix(args[1], "-") {
		return errors.New("owners needs: policy NAME [--max-expiry D] [--default-expiry D] [--max-access-count N] " +
			"[--forbid-open-links] [--otp-code-length N] [--otp-ttl D] [--otp-max-attempts N] [--otp-resend-after D] [--clear]")
	}
	name, args := args[1], args[2:]
	var c config.Common
	set := config.New("api owners policy")
	set.BindCommon(&c, false, false)
	var (
		maxExpiry, defExpiry, otpTTL, otpResend time.Duration
		maxAccess, otpLength, otpAttempts       int
		forbidOpen, clear                       bool
	)
	fs := set.FlagSet()
	fs.DurationVar(&maxExpiry, "max-expiry", 0, "how far ahead this owner's links may expire (below MAX_EXPIRY)")
	fs.DurationVar(&defExpiry, "default-expiry", 0, "how far ahead a link sent without expires_at expires")
	fs.IntVar(&maxAccess, "max-access-count", 0, "the most accesses one of this owner's links may allow")
	fs.BoolVar(&forbidOpen, "forbid-open-links", false, "refuse this owner's links without an authenticator")
	fs.IntVar(&otpLength, "otp-code-length", 0, "digits in this owner's codes (6-10)")
	fs.DurationVar(&otpTTL, "otp-ttl", 0, "how long this owner's codes work (1m-10m)")
	fs.IntVar(&otpAttempts, "otp-max-attempts", 0, "wrong codes before one of this owner's codes locks (1-10)")
	fs.DurationVar(&otpResend, "otp-resend-after", 0, "wait between two codes for one of this owner's links (10s-10m)")
	fs.BoolVar(&clear, "clear", false, "remove the owner's policy: the service's settings apply")
	store, closeStore, err := openAdminStore(ctx, set, &c, args)
	if err != nil {
		return err
	}
	defer closeStore()
	changing := false
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "max-expiry", "default-expiry", "max-access-count", "forbid-open-links",
			"otp-code-length", "otp-ttl", "otp-max-attempts", "otp-resend-after", "clear":
			changing = true
		}
	})
	var p link.OwnerPolicy
	if changing && !clear {
		p = link.OwnerPolicy{MaxExpiry: int64(maxExpiry / time.Second), DefaultExpiry: int64(defExpiry / time.Second),
			MaxAccessCount: maxAccess, ForbidOpenLinks: forbidOpen}
		otp := link.OTPPolicy{CodeLength: otpLength, CodeTTL: int(otpTTL / time.Second), MaxAttempts: otpAttempts,
			ResendAfter: int(otpResend / time.Second)}
		if otp != (link.OTPPolicy{}) {
			p.OTP = &otp
		}
		if err := p.Check(); err != nil {
			return fmt.Errorf("owners policy %s: %w", name, err)
		}
	}
	if changing {
		if err := store.SetOwnerPolicy(ctx, name, p); err != nil {
			return err
		}
	} else if p, err = store.OwnerPolicy(ctx, name); err != nil {
		return err
	}
	out, err := json.Marshal(p)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "owner %q policy: %s\n", name, out)
	return nil
}

// openAdminStore parses a one-shot admin command's flags and opens a small
// pool for it; closeStore releases it.
func openAdminStore(ctx context.Context, set *config.Set, c *config.Common, args []string) (store *postgres.Store, closeStore func(), err error) {
	if err := set.Parse(args); err != nil {
		return nil, nil, err
	}
	pool, err := postgres.Open(ctx, c.DatabaseURL, 2)
	if err != nil {
		return nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	return postgres.NewStore(pool, nil), pool.Close, nil
}
