//go:build pprof

package obs

import (
	"net/http"
	"net/http/pprof"
)

// Built only with -tags pprof (e.g. GOFLAGS=-tags=pprof make bench), so
// profiles can be taken from each binary under load; release builds do not
// contain these handlers.
func init() {
	debugHandlers = func(mux *http.ServeMux) {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	}
}
