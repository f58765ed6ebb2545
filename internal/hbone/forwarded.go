package hbone

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/warrenmesh/warren/internal/identity"
)

// Headers a waypoint puts on the CONNECT of its upstream tunnel: who the
// original caller is. A destination trusts them from a waypoint's identity
// only; from any other peer they mean nothing.
const (
	HeaderForwarded = "Forwarded"
	HeaderCaller    = "X-Warren-Caller"
)

// ForwardedFor is RFC 7239's for= parameter for a: IPv6 quoted in brackets.
func ForwardedFor(a netip.Addr) string {
	if a.Is6() {
		return `for="[` + a.String() + `]"`
	}
	return "for=" + a.String()
}

// ParseForwardedFor returns the address of the first element's for=
// parameter of Forwarded header values, as ForwardedFor writes it (a port
// is allowed and dropped); invalid if there is none. An obfuscated or
// "unknown" node is an error.
func ParseForwardedFor(values []string) (netip.Addr, error) {
	if len(values) == 0 {
		return netip.Addr{}, nil
	}
	first, _, _ := strings.Cut(values[0], ",")
	for _, pair := range strings.Split(first, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(k, "for") {
			continue
		}
		v = strings.Trim(v, `"`)
		if ap, err := netip.ParseAddrPort(v); err == nil {
			return ap.Addr().Unmap(), nil
		}
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(v, "["), "]"))
		if err != nil || a.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("forwarded for=%q: not an address", v)
		}
		return a.Unmap(), nil
	}
	return netip.Addr{}, nil
}

// Caller reads a waypoint's CONNECT headers: the original caller's identity
// (required, exactly one) and address (invalid when the waypoint sent none).
func Caller(h http.Header) (identity.ID, netip.Addr, error) {
	ids := h.Values(HeaderCaller)
	if len(ids) != 1 {
		return identity.ID{}, netip.Addr{}, fmt.Errorf("%s: want one value, got %d", HeaderCaller, len(ids))
	}
	id, err := identity.Parse(ids[0])
	if err != nil {
		return identity.ID{}, netip.Addr{}, fmt.Errorf("%s: %w", HeaderCaller, err)
	}
	addr, err := ParseForwardedFor(h.Values(HeaderForwarded))
	if err != nil {
		return identity.ID{}, netip.Addr{}, err
	}
	return id, addr, nil
}
