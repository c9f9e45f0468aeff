package link

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/sharelinks/sharelinks/internal/apperr"
)

// MaxNetworks is how many networks one link may list.
const MaxNetworks = 50

// parseNetworks reads a link's allowed_networks: CIDR prefixes
// ("203.0.113.0/24", "2001:db8::/48") or single addresses, each stored as
// the network it names (host bits cleared; an IPv4-mapped IPv6 address as
// IPv4). Duplicates are dropped; none at all leaves the link open to every
// network.
func parseNetworks(field string, in []string) ([]netip.Prefix, error) {
	if len(in) > MaxNetworks {
		return nil, apperr.Field(field, "invalid_networks", "at most %d networks per link", MaxNetworks)
	}
	var out []netip.Prefix
	for i, s := range in {
		p, err := parseNetwork(s)
		if err != nil {
			return nil, apperr.Field(fmt.Sprintf("%s[%d]", field, i), "invalid_network", "%s", err.Error())
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func parseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%q mixes IPv4-mapped addresses with other IPv6 ones", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or a CIDR network such as 203.0.113.0/24", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Allows reports whether a recipient at ip may use the link: any address
// when the link lists no networks; otherwise only one inside them (an
// unknown address is outside every network).
func (l Link) Allows(ip netip.Addr) bool {
	if len(l.AllowedNetworks) == 0 {
		return true
	}
	ip = ip.Unmap()
	for _, p := range l.AllowedNetworks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

type clientIPKey struct{}

// WithClientIP records the recipient's address for the checks of links
// limited to networks. The HTTP edge sets it once, after resolving trusted
// proxies, so every path a request takes checks the same address.
func WithClientIP(ctx context.Context, ip netip.Addr) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

// ClientIP is the address WithClientIP recorded (invalid when none was).
func ClientIP(ctx context.Context) netip.Addr {
	ip, _ := ctx.Value(clientIPKey{}).(netip.Addr)
	return ip
}

// networkNotAllowed is the answer to a recipient outside a link's
// networks. Unlike a missing link it is not disguised: whoever asks holds
// the link's token, and being told to use another network is what lets
// them open it.
func networkNotAllowed() error {
	return apperr.New(apperr.Forbidden, "network_not_allowed", "this link cannot be opened from your network")
}

// allowed passes on a link the request's client may use.
func allowed(ctx context.Context, l Link) error {
	if !l.Allows(ClientIP(ctx)) {
		return networkNotAllowed()
	}
	return nil
}
