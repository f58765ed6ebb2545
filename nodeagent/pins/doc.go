// Package pins is what the node agent and the ztunnel share of the agent's
// pinned eBPF maps (package bpf/redirect's layouts): the original-destination
// table (orig_by_tuple, looked up by netns cookie and 4-tuple) and the
// registration of the tunnel's listeners (the sockets map for inbound,
// tunnel_ports for outbound). It is a leaf:
// package nodeagent uses it on the maps it loaded, the ztunnel opens the
// same maps by pin path, without nodeagent's Kubernetes side (client-go).
package pins

import "errors"

// ErrNoOrigDst: the connection was not redirected (or its entry is gone).
var ErrNoOrigDst = errors.New("no original destination for this connection")
