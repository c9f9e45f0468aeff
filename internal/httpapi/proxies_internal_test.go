package httpapi

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestClientAddressBehindTrustedProxies(t *testing.T) {
	trusted, err := ParseProxies("10.0.0.0/8, 127.0.0.1 ,")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseProxies("10.0.0.0/8,proxy.local"); err == nil {
		t.Error("a host name accepted as a proxy")
	}
	cases := []struct {
		peer string
		xff  []string
		want string
	}{
		{"127.0.0.1:5000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"127.0.0.1:5000", []string{"198.51.100.1, 203.0.113.7, 10.1.2.3"}, "203.0.113.7"}, // the client could have written the leftmost
		{"127.0.0.1:5000", []string{"198.51.100.1", "203.0.113.7"}, "203.0.113.7"},         // two headers are one list
		{"127.0.0.1:5000", []string{"10.1.2.3"}, "10.1.2.3"},                               // every hop trusted: the first
		{"127.0.0.1:5000", []string{"203.0.113.7, not-an-ip"}, "127.0.0.1"},                // garbage from a trusted hop: stop there
		{"127.0.0.1:5000", nil, "127.0.0.1"},
		{"192.0.2.9:5000", []string{"203.0.113.7"}, "192.0.2.9"}, // not our proxy: its header is anyone's
		{"[::1]:5000", []string{"203.0.113.7"}, "::1"},
		{"[::ffff:10.9.9.9]:5000", []string{"2001:db8::1"}, "2001:db8::1"},
	}
	for _, c := range cases {
		var got string
		h := behindProxies(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			got, _, _ = net.SplitHostPort(r.RemoteAddr)
		}), trusted)
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
}
