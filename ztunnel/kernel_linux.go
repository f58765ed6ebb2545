package ztunnel

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

// kernelMaps are the two maps of the node agent's pins the ztunnel uses: the
// original destinations (read) and the tunnel listeners (write). They are
// opened by pin path rather than through package nodeagent, whose Kubernetes
// side would put client-go into every ztunnel (binary size and memory); the
// map layouts are bpf/redirect's, generated from the C, so both agree.
type kernelMaps struct {
	origByTuple *ebpf.Map
	sockets     *ebpf.Map
}

// errNoOrigDst: the connection was not redirected (or its entry is gone).
var errNoOrigDst = errors.New("no original destination for this connection")

func openKernelMaps(pinDir string) (*kernelMaps, error) {
	orig, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, redirect.RedirectMapOrigByTuple), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", redirect.RedirectMapOrigByTuple, err)
	}
	socks, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, redirect.RedirectMapSockets), nil)
	if err != nil {
		orig.Close()
		return nil, fmt.Errorf("map %s: %w", redirect.RedirectMapSockets, err)
	}
	return &kernelMaps{origByTuple: orig, sockets: socks}, nil
}

func (k *kernelMaps) Close() error {
	return errors.Join(k.origByTuple.Close(), k.sockets.Close())
}

// origDst returns where an accepted redirected connection was going, keyed as
// the sockops program stored it: (netns cookie, client, listener).
func (k *kernelMaps) origDst(c *net.TCPConn) (netip.AddrPort, error) {
	var cookie uint64
	if err := withFD(c, func(fd int) (err error) { cookie, err = netns.SocketCookie(fd); return err }); err != nil {
		return netip.AddrPort{}, err
	}
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	listener := c.LocalAddr().(*net.TCPAddr).AddrPort()
	key := redirect.RedirectTuple{
		Netns: cookie,
		Src:   redirect.RedirectAddr{Ip6: words(client.Addr().As16()), Port: client.Port()},
		Dst:   redirect.RedirectAddr{Ip6: words(listener.Addr().As16()), Port: listener.Port()},
	}
	var orig redirect.RedirectAddr
	if err := k.origByTuple.Lookup(&key, &orig); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return netip.AddrPort{}, fmt.Errorf("%v -> %v: %w", client, listener, errNoOrigDst)
		}
		return netip.AddrPort{}, fmt.Errorf("map %s: %w", redirect.RedirectMapOrigByTuple, err)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(unwords(orig.Ip6)).Unmap(), orig.Port), nil
}

// setListeners steers the netns's inbound connections to the tunnel: 15008
// to hbone, any other port to inbound. Both must be non-MPTCP listeners in
// the same netns; a listener that closes leaves the map by itself, and
// inbound connections then fail (fail closed).
func (k *kernelMaps) setListeners(hbone, inbound syscall.Conn) error {
	var cookie uint64
	for _, e := range []struct {
		kind redirect.RedirectSockKind
		conn syscall.Conn
	}{
		{redirect.RedirectSockKindSOCK_KIND_HBONE, hbone},
		{redirect.RedirectSockKindSOCK_KIND_INBOUND, inbound},
	} {
		err := withFD(e.conn, func(fd int) error {
			c, err := netns.SocketCookie(fd)
			if err != nil {
				return err
			}
			if cookie != 0 && c != cookie {
				return errors.New("listeners in different netns")
			}
			cookie = c
			key := redirect.RedirectSockKey{Netns: c, Kind: e.kind}
			return k.sockets.Update(&key, uint64(fd), ebpf.UpdateAny)
		})
		if err != nil {
			return fmt.Errorf("map %s: %w", redirect.RedirectMapSockets, err)
		}
	}
	return nil
}

func withFD(c syscall.Conn, f func(fd int) error) error {
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

// words and unwords convert an address to the programs' four host-order u32.
func words(b [16]byte) [4]uint32 {
	var w [4]uint32
	for i := range w {
		w[i] = uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24
	}
	return w
}

func unwords(w [4]uint32) [16]byte {
	var b [16]byte
	for i, v := range w {
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	return b
}
