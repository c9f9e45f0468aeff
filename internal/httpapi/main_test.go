package httpapi_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/sharelinks/sharelinks/internal/testkit"
)

var dbURL string

func TestMain(m *testing.M) {
	url, drop, err := testkit.MigratedDatabase("httpapi")
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpapi tests:", err)
		os.Exit(1)
	}
	dbURL = url
	code := m.Run()
	drop()
	os.Exit(code)
}
