// Package pins is the kernel contract the node agent and the ztunnel share:
// what both do with the redirect object's pinned maps (package bpf/redirect's
// layouts): the original-destination table (orig_by_tuple, looked up by netns
// cookie and 4-tuple) and the registration of the tunnel's listeners (the
// sockets map for inbound, tunnel_ports for outbound). It is a leaf beside the
// object it describes: the agent uses it on the maps it loaded, the ztunnel
// opens the same maps by pin path, and neither depends on the other's code
// (no client-go in the ztunnel).
package pins

import "errors"

// ErrNoOrigDst: the connection was not redirected (or its entry is gone).
var ErrNoOrigDst = errors.New("no original destination for this connection")
