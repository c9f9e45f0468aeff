package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sharelinks/sharelinks/internal/evidence"
)

// verifyAuditCmd checks an audit export offline: its signed head against
// the published keys, its chain from the link's genesis, and, given an
// earlier export of the same link, that nothing the earlier one held was
// changed or removed since. It needs no database and no secret.
func verifyAuditCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("api verify-audit", flag.ContinueOnError)
	keys := fs.String("keys", "", "the key set: https://YOUR-API/.well-known/sharelinks-audit-keys.json or a saved copy")
	previous := fs.String("previous", "", "an earlier export of the same link, to check the new one extends it")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: api verify-audit -keys URL|FILE [-previous EARLIER.json] EXPORT.json")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keys == "" || fs.NArg() != 1 {
		fs.Usage()
		return errors.New("verify-audit needs -keys and one export file")
	}
	keySet, err := readKeys(ctx, *keys)
	if err != nil {
		return err
	}
	doc, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	head, err := evidence.Verify(doc, keySet)
	if err != nil {
		return err
	}
	if *previous != "" {
		earlier, err := os.ReadFile(*previous)
		if err != nil {
			return err
		}
		if _, err := evidence.Verify(earlier, keySet); err != nil {
			return fmt.Errorf("the earlier export: %w", err)
		}
		if err := evidence.Extends(earlier, doc); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "ok: link %s, %d sealed events, head %s, signed by %s\n", head.LinkID, head.Seq, head.Hash, head.Issuer)
	if *previous != "" {
		fmt.Fprintln(stdout, "ok: it extends the earlier export unchanged")
	}
	return nil
}

func readKeys(ctx context.Context, from string) ([]byte, error) {
	if !strings.HasPrefix(from, "https://") && !strings.HasPrefix(from, "http://") {
		return os.ReadFile(from)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, from, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch keys: %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}
