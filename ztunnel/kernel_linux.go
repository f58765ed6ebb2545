package ztunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/nodeagent/pins"
)

// kernelMaps are the two maps of the node agent's pins the ztunnel uses: the
// original destinations (read) and the tunnel listeners (write). They are
// opened by pin path through package nodeagent/pins rather than through
// package nodeagent, whose Kubernetes side would put client-go into every
// ztunnel (binary size and memory); the map layouts are bpf/redirect's,
// generated from the C, so both agree.
type kernelMaps struct {
	origByTuple *pins.OrigDstTable
	sockets     *ebpf.Map
}

func openKernelMaps(pinDir string) (*kernelMaps, error) {
	orig, err := pins.OpenOrigDstTable(pinDir)
	if err != nil {
		return nil, err
	}
	socks, err := pins.OpenSockets(pinDir)
	if err != nil {
		orig.Close()
		return nil, err
	}
	return &kernelMaps{origByTuple: orig, sockets: socks}, nil
}

func (k *kernelMaps) Close() error {
	return errors.Join(k.origByTuple.Close(), k.sockets.Close())
}

// origDst returns where an accepted redirected connection was going, keyed as
// the sockops program stored it: (netns cookie, client, listener).
func (k *kernelMaps) origDst(c *net.TCPConn) (netip.AddrPort, error) {
	return k.origByTuple.Conn(c)
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
		err := pins.SetListener(k.sockets, e.kind, e.conn, func(c uint64) error {
			if cookie != 0 && c != cookie {
				return errors.New("listeners in different netns")
			}
			cookie = c
			return nil
		})
		if err != nil {
			return fmt.Errorf("map %s: %w", redirect.RedirectMapSockets, err)
		}
	}
	return nil
}
