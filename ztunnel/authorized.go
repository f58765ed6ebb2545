package ztunnel

import (
	"fmt"
	"sync"
)

// authorizedConn is an open inbound connection with what authorized it, so
// that every new mesh view is checked against it (Tunnel.SetMesh), as Istio
// ztunnel's connection manager does: a DENY applied now closes the
// connections it forbids, not only the next ones.
type authorizedConn struct {
	pod   *LocalPod // the destination
	in    Inbound   // the caller's identity (none for plaintext), the waypoint that carried it, the port
	res   *connResult
	close func() // ends the connection both ways; its handler then records res
}

// connRegistry holds the open inbound connections of every pod the tunnel
// serves, draining ones included. Its lock covers the map only.
type connRegistry struct {
	mu    sync.Mutex
	conns map[*authorizedConn]struct{}
}

func (r *connRegistry) add(c *authorizedConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		r.conns = map[*authorizedConn]struct{}{}
	}
	r.conns[c] = struct{}{}
}

func (r *connRegistry) remove(c *authorizedConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
}

func (r *connRegistry) list() []*authorizedConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*authorizedConn, 0, len(r.conns))
	for c := range r.conns {
		out = append(out, c)
	}
	return out
}

// denied says why st no longer allows c ("" if it does): its pod is now
// behind a waypoint that did not carry it, or the policy denies it.
func denied(st *State, c *authorizedConn) string {
	if why := WaypointGate(st, c.pod, c.in); why != "" {
		return why
	}
	d := Authorize(st, c.pod, c.in)
	if d.Allowed {
		return ""
	}
	return decisionReason(d)
}

// decisionReason is a refusal's reason, with the policy that decided.
func decisionReason(d Decision) string {
	if d.Policy != "" {
		return fmt.Sprintf("%s (policy %s)", d.Reason, d.Policy)
	}
	return d.Reason
}

// revokeDenied closes the registered connections that st denies and returns
// how many. Authorize is evaluated outside the registry's lock.
func (t *Tunnel) revokeDenied(st *State) int {
	n := 0
	for _, c := range t.conns.list() {
		if why := denied(st, c); why != "" {
			c.res.revoke(why)
			c.close()
			n++
		}
	}
	return n
}

// admit registers c, which authorized allowed. A mesh view swapped in since
// may have been swept before c was registered, so c is checked against the
// view in force now: admit returns why that one denies c, and then leaves it
// unregistered ("" once registered; the caller removes it when it ends).
func (t *Tunnel) admit(authorized *State, c *authorizedConn) string {
	t.conns.add(c)
	if st := t.state(); st != authorized {
		if why := denied(st, c); why != "" {
			t.conns.remove(c)
			return why
		}
	}
	return ""
}
