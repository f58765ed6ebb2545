package nodeagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/internal/netns"
)

// OrigDstTable answers the tunnel's question about a redirected connection
// it accepted on 15001: where was it going? The programs record it from
// connect() until the tunnel's side of the connection closes.
type OrigDstTable struct {
	m *ebpf.Map
}

// OpenOrigDstTable opens the table an agent pinned in pinDir, read-only, for
// a tunnel in another process.
func OpenOrigDstTable(pinDir string) (*OrigDstTable, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, redirect.RedirectMapOrigByTuple), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", redirect.RedirectMapOrigByTuple, err)
	}
	return &OrigDstTable{m: m}, nil
}

// Lookup returns the original destination of the connection from client to
// the tunnel's listener, in the network namespace with this cookie.
func (t *OrigDstTable) Lookup(netnsCookie uint64, client, listener netip.AddrPort) (netip.AddrPort, error) {
	key := redirect.RedirectTuple{
		Netns: netnsCookie,
		Src:   redirect.RedirectAddr{Ip6: words(client.Addr().As16()), Port: client.Port()},
		Dst:   redirect.RedirectAddr{Ip6: words(listener.Addr().As16()), Port: listener.Port()},
	}
	var orig redirect.RedirectAddr
	if err := t.m.Lookup(&key, &orig); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return netip.AddrPort{}, fmt.Errorf("%v -> %v: %w", client, listener, ErrNoOrigDst)
		}
		return netip.AddrPort{}, fmt.Errorf("map %s: %w", redirect.RedirectMapOrigByTuple, err)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(unwords(orig.Ip6)).Unmap(), orig.Port), nil
}

// Conn is Lookup for a connection the tunnel accepted (a *net.TCPConn).
func (t *OrigDstTable) Conn(conn syscall.Conn) (netip.AddrPort, error) {
	var cookie uint64
	if err := withFD(conn, func(fd int) (err error) { cookie, err = netns.SocketCookie(fd); return err }); err != nil {
		return netip.AddrPort{}, err
	}
	nc, ok := conn.(net.Conn)
	if !ok {
		return netip.AddrPort{}, errors.New("not a net.Conn")
	}
	remote, err1 := netip.ParseAddrPort(nc.RemoteAddr().String())
	local, err2 := netip.ParseAddrPort(nc.LocalAddr().String())
	if err := errors.Join(err1, err2); err != nil {
		return netip.AddrPort{}, err
	}
	return t.Lookup(cookie, remote, local)
}

// Close releases the table.
func (t *OrigDstTable) Close() error { return t.m.Close() }
