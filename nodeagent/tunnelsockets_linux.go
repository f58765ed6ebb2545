package nodeagent

import (
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/internal/netns"
)

// TunnelSocketMap registers a tunnel's listeners from another process than
// the agent's: the ztunnel opens the agent's pinned `sockets` map and puts its
// listeners in it, keyed by the netns cookie of the listeners themselves (so
// it needs no pod UID, and a listener can only ever steer its own netns).
type TunnelSocketMap struct {
	m *ebpf.Map
}

// OpenTunnelSocketMap opens the sockets map an agent pinned in pinDir.
func OpenTunnelSocketMap(pinDir string) (*TunnelSocketMap, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, redirect.RedirectMapSockets), nil)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", redirect.RedirectMapSockets, err)
	}
	return &TunnelSocketMap{m: m}, nil
}

// Set puts both listeners in the map; see Kernel.SetTunnelSockets. Both must
// be in the same netns.
func (t *TunnelSocketMap) Set(s TunnelSockets) error {
	if s.HBONE == nil || s.Inbound == nil {
		return fmt.Errorf("tunnel sockets: both listeners are required")
	}
	var cookie uint64
	for _, e := range []struct {
		kind redirect.RedirectSockKind
		conn syscall.Conn
		name string
	}{
		{redirect.RedirectSockKindSOCK_KIND_HBONE, s.HBONE, "hbone"},
		{redirect.RedirectSockKindSOCK_KIND_INBOUND, s.Inbound, "inbound"},
	} {
		err := withFD(e.conn, func(fd int) error {
			c, err := netns.SocketCookie(fd)
			if err != nil {
				return err
			}
			if cookie != 0 && c != cookie {
				return fmt.Errorf("listeners in different netns")
			}
			cookie = c
			key := redirect.RedirectSockKey{Netns: c, Kind: e.kind}
			return t.m.Update(&key, uint64(fd), ebpf.UpdateAny)
		})
		if err != nil {
			return fmt.Errorf("%s socket: %w", e.name, err)
		}
	}
	return nil
}

// Close releases the map; registered listeners stay until they close.
func (t *TunnelSocketMap) Close() error { return t.m.Close() }
