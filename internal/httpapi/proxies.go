package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/sharelinks/sharelinks/internal/link"
)

// ParseProxies reads TRUSTED_PROXIES: comma-separated addresses or CIDR
// prefixes (10.0.0.0/8, 192.0.2.1, fd00::/8).
func ParseProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if p, err := netip.ParsePrefix(part); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", part)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// behindProxies sets r.RemoteAddr to the client's address when the request
// came through the operator's own proxies (a load balancer, an ingress), so
// that the audit trail records who opened a link, not the proxy. It reads
// X-Forwarded-For from the right, past every trusted proxy; the first
// address that is not one is the client. A request whose peer is no
// trusted proxy came straight from the client, and its X-Forwarded-For,
// which anyone can send, is ignored.
func behindProxies(next http.Handler, trusted []netip.Prefix) http.Handler {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			next.ServeHTTP(w, r)
			return
		}
		client, err := netip.ParseAddr(host)
		if err != nil || !isTrusted(client.Unmap()) {
			next.ServeHTTP(w, r)
			return
		}
		var hops []string
		for _, v := range r.Header.Values("X-Forwarded-For") {
			hops = append(hops, strings.Split(v, ",")...)
		}
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a proxy we trust wrote something else: keep the last address it vouched for
			}
			client = a.Unmap()
			if !isTrusted(client) {
				break
			}
		}
		r = r.WithContext(r.Context())
		r.RemoteAddr = netip.AddrPortFrom(client.Unmap(), 0).String()
		next.ServeHTTP(w, r)
	})
}

// withClientIP records the client's address (RemoteAddr, after
// behindProxies when there are trusted proxies) in the request context,
// where the checks of links limited to networks read it.
func withClientIP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			r = r.WithContext(link.WithClientIP(r.Context(), ap.Addr()))
		}
		next.ServeHTTP(w, r)
	})
}
