package ztunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/bpf/redirect/pins"
)

// kernelMaps are the maps of the node agent's pins the ztunnel uses: the
// original destinations (read) and the tunnel listeners (write: sockets for
// inbound, tunnel_ports for outbound). They are
// opened by pin path through package bpf/redirect/pins rather than through
// package nodeagent, whose Kubernetes side would put client-go into every
// ztunnel (binary size and memory); the map layouts are bpf/redirect's,
// generated from the C, so both agree.
type kernelMaps struct {
	origByTuple *pins.OrigDstTable
	sockets     *ebpf.Map
	ports       *ebpf.Map
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
	ports, err := pins.OpenTunnelPorts(pinDir)
	if err != nil {
		orig.Close()
		socks.Close()
		return nil, fmt.Errorf("%w (a node agent older than this ztunnel?)", err)
	}
	return &kernelMaps{origByTuple: orig, sockets: socks, ports: ports}, nil
}

func (k *kernelMaps) Close() error {
	return errors.Join(k.origByTuple.Close(), k.sockets.Close(), k.ports.Close())
}

// origDst returns where an accepted redirected connection was going, keyed as
// the sockops program stored it: (netns cookie, client, listener).
func (k *kernelMaps) origDst(c *net.TCPConn) (netip.AddrPort, error) {
	return k.origByTuple.Conn(c)
}

// podListeners are one tunnel generation's listeners in a pod's netns.
type podListeners struct {
	hbone, inbound syscall.Conn
	// port4 and port6 are the outbound listeners' ports on 127.0.0.1 and
	// [::1]; port6 is 0 when the pod has no IPv6 address.
	port4, port6 uint16
}

// setListeners makes this tunnel the one the netns's connections reach:
// inbound ones to HBONE (port 15008) or inbound (any other port), outbound
// ones to 127.0.0.1:port4 / [::1]:port6. Each map update is atomic, inbound
// first: a previous tunnel's listeners stop getting new connections but keep
// what they queued. Both listeners must be non-MPTCP and in the same netns;
// one that closes leaves the sockets map by itself, and inbound connections
// then fail (fail closed). It returns the netns cookie.
func (k *kernelMaps) setListeners(l podListeners) (uint64, error) {
	var cookie uint64
	for _, e := range []struct {
		kind redirect.RedirectSockKind
		conn syscall.Conn
	}{
		{redirect.RedirectSockKindSOCK_KIND_HBONE, l.hbone},
		{redirect.RedirectSockKindSOCK_KIND_INBOUND, l.inbound},
	} {
		err := pins.SetListener(k.sockets, e.kind, e.conn, func(c uint64) error {
			if cookie != 0 && c != cookie {
				return errors.New("listeners in different netns")
			}
			cookie = c
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("map %s: %w", redirect.RedirectMapSockets, err)
		}
	}
	return cookie, pins.SetOutboundPorts(k.ports, cookie, l.port4, l.port6)
}
