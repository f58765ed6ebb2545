package pins

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
// it accepted on its outbound listener: where was it going? The programs record it from
// connect() until the tunnel's side of the connection closes.
type OrigDstTable struct {
	m *ebpf.Map
}

// NewOrigDstTable uses m, the orig_by_tuple map of a loaded object; Close
// closes m.
func NewOrigDstTable(m *ebpf.Map) *OrigDstTable { return &OrigDstTable{m: m} }

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
// the tunnel's listener, in the network namespace with this cookie, keyed as
// the sockops program stored it.
func (t *OrigDstTable) Lookup(netnsCookie uint64, client, listener netip.AddrPort) (netip.AddrPort, error) {
	key := redirect.RedirectTuple{
		Netns: netnsCookie,
		Src:   redirect.RedirectAddr{Ip6: Words(client.Addr().As16()), Port: client.Port()},
		Dst:   redirect.RedirectAddr{Ip6: Words(listener.Addr().As16()), Port: listener.Port()},
	}
	var orig redirect.RedirectAddr
	if err := t.m.Lookup(&key, &orig); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return netip.AddrPort{}, fmt.Errorf("%v -> %v: %w", client, listener, ErrNoOrigDst)
		}
		return netip.AddrPort{}, fmt.Errorf("map %s: %w", redirect.RedirectMapOrigByTuple, err)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(Unwords(orig.Ip6)).Unmap(), orig.Port), nil
}

// Conn is Lookup for a connection the tunnel accepted (a *net.TCPConn).
func (t *OrigDstTable) Conn(conn syscall.Conn) (netip.AddrPort, error) {
	var cookie uint64
	if err := WithFD(conn, func(fd int) (err error) { cookie, err = netns.SocketCookie(fd); return err }); err != nil {
		return netip.AddrPort{}, err
	}
	nc, ok := conn.(net.Conn)
	if !ok {
		return netip.AddrPort{}, errors.New("not a net.Conn")
	}
	remote, err1 := addrPort(nc.RemoteAddr())
	local, err2 := addrPort(nc.LocalAddr())
	if err := errors.Join(err1, err2); err != nil {
		return netip.AddrPort{}, err
	}
	return t.Lookup(cookie, remote, local)
}

// addrPort is a's address and port as its String form parses, v4-mapped
// addresses unmapped; a *net.TCPAddr (the tunnel's hot path) is converted
// without the round trip through a string.
func addrPort(a net.Addr) (netip.AddrPort, error) {
	if ta, ok := a.(*net.TCPAddr); ok && ta.IP != nil {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	return netip.ParseAddrPort(a.String())
}

// Close releases the table.
func (t *OrigDstTable) Close() error { return t.m.Close() }

// OpenSockets opens the sockets map an agent pinned in pinDir, writable, for
// SetListener from a tunnel in another process.
func OpenSockets(pinDir string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, redirect.RedirectMapSockets), nil)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", redirect.RedirectMapSockets, err)
	}
	return m, nil
}

// SetListener puts the listening socket conn into the sockets map as the
// tunnel's listener of this kind for its own netns, once check has accepted
// that netns's cookie. It must be a TCP listener, not multipath; a listener
// that closes leaves the map by itself.
func SetListener(sockets *ebpf.Map, kind redirect.RedirectSockKind, conn syscall.Conn, check func(netnsCookie uint64) error) error {
	return WithFD(conn, func(fd int) error {
		c, err := netns.SocketCookie(fd)
		if err != nil {
			return err
		}
		if err := check(c); err != nil {
			return err
		}
		key := redirect.RedirectSockKey{Netns: c, Kind: kind}
		return sockets.Update(&key, uint64(fd), ebpf.UpdateAny)
	})
}

// OpenTunnelPorts opens the tunnel_ports map an agent pinned in pinDir,
// writable, for SetOutboundPorts from a tunnel in another process.
func OpenTunnelPorts(pinDir string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, redirect.RedirectMapTunnelPorts), nil)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", redirect.RedirectMapTunnelPorts, err)
	}
	return m, nil
}

// SetOutboundPorts makes the connect4/connect6 programs send the outbound
// connections of the netns with this cookie to 127.0.0.1:port4 and
// [::1]:port6 (0: the pod has no IPv6 address). The switch is atomic: a
// connect() sees either the previous ports or these.
func SetOutboundPorts(ports *ebpf.Map, netnsCookie uint64, port4, port6 uint16) error {
	v := redirect.RedirectOutboundPorts{Port4: port4, Port6: port6}
	if err := ports.Update(&netnsCookie, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("map %s: %w", redirect.RedirectMapTunnelPorts, err)
	}
	return nil
}

// OutboundPorts returns the ports SetOutboundPorts last wrote for the netns;
// an error wrapping ebpf.ErrKeyNotExist when there is none.
func OutboundPorts(ports *ebpf.Map, netnsCookie uint64) (port4, port6 uint16, err error) {
	var v redirect.RedirectOutboundPorts
	if err := ports.Lookup(&netnsCookie, &v); err != nil {
		return 0, 0, fmt.Errorf("map %s: %w", redirect.RedirectMapTunnelPorts, err)
	}
	return v.Port4, v.Port6, nil
}

// WithFD runs f on the socket's file descriptor.
func WithFD(c syscall.Conn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Words reinterprets 16 address bytes as the four network-order u32 the
// programs compare, on this (little-endian) host.
func Words(b [16]byte) [4]uint32 {
	var w [4]uint32
	for i := range w {
		w[i] = uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24
	}
	return w
}

// Unwords is the inverse of Words.
func Unwords(w [4]uint32) [16]byte {
	var b [16]byte
	for i, v := range w {
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	return b
}
