package hbone

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrBadAuthority is wrapped by ParseAuthority's errors.
var ErrBadAuthority = errors.New("bad authority")

// ParseAuthority parses a CONNECT :authority. HBONE names the destination by
// address, never by name, so only an IP literal and a port are accepted:
// "10.0.0.1:8080" or "[fd00::1]:8080". Zones, IPv4-mapped IPv6, port 0,
// leading zeros and signs are refused, so that policy, which sees the parsed
// address, sees exactly what will be dialled.
func ParseAuthority(s string) (netip.AddrPort, error) {
	if len(s) > len("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535") {
		return netip.AddrPort{}, fmt.Errorf("%w: too long", ErrBadAuthority)
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: no port", ErrBadAuthority, s)
	}
	host, port := s[:i], s[i+1:]
	var addr netip.Addr
	var err error
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return netip.AddrPort{}, fmt.Errorf("%w: %q: unbalanced brackets", ErrBadAuthority, s)
		}
		addr, err = netip.ParseAddr(host[1 : len(host)-1])
		if err == nil && !addr.Is6() {
			return netip.AddrPort{}, fmt.Errorf("%w: %q: IPv4 in brackets", ErrBadAuthority, s)
		}
	} else {
		addr, err = netip.ParseAddr(host)
		if err == nil && !addr.Is4() {
			return netip.AddrPort{}, fmt.Errorf("%w: %q: IPv6 without brackets", ErrBadAuthority, s)
		}
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: not an IP literal", ErrBadAuthority, s)
	}
	if addr.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: zone not allowed", ErrBadAuthority, s)
	}
	if addr.Is4In6() {
		// One address, one spelling: a v4-mapped destination is written as IPv4.
		return netip.AddrPort{}, fmt.Errorf("%w: %q: IPv4-mapped IPv6", ErrBadAuthority, s)
	}
	if len(port) == 0 || len(port) > 5 || port[0] == '0' {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: bad port", ErrBadAuthority, s)
	}
	p := 0
	for _, c := range []byte(port) {
		if c < '0' || c > '9' {
			return netip.AddrPort{}, fmt.Errorf("%w: %q: bad port", ErrBadAuthority, s)
		}
		p = p*10 + int(c-'0')
	}
	if p > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: port out of range", ErrBadAuthority, s)
	}
	return netip.AddrPortFrom(addr, uint16(p)), nil
}
