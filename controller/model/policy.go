package model

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/internal/identity"
)

// AppliesTo reports whether the policy applies to w.
func (p *Policy) AppliesTo(w *Workload, systemNamespace string) bool {
	return applies(p.Namespace, p.Selector, w, systemNamespace)
}

func applies(ns string, sel map[string]string, w *Workload, systemNamespace string) bool {
	if sel == nil {
		return ns == w.Namespace || ns == systemNamespace
	}
	if ns != w.Namespace {
		return false
	}
	for k, v := range sel {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Conn is an inbound connection as the destination's ztunnel sees it.
type Conn struct {
	// Peer is the source's verified identity; zero for plaintext.
	Peer identity.ID
	// Port is the destination workload's port.
	Port uint16
}

// Matches reports whether the policy matches c.
func (p *Policy) Matches(c Conn) bool {
	for i := range p.Rules {
		if p.Rules[i].matches(c) {
			return true
		}
	}
	return false
}

func (r *Rule) matches(c Conn) bool {
	fromOK := len(r.From) == 0 || slices.ContainsFunc(r.From, func(s Source) bool { return s.matches(c.Peer) })
	toOK := len(r.To) == 0 || slices.ContainsFunc(r.To, func(d Destination) bool { return slices.Contains(d.Ports, c.Port) })
	return fromOK && toOK
}

func (s *Source) matches(peer identity.ID) bool {
	if peer.IsZero() {
		return false // plaintext has no identity to match
	}
	if len(s.Principals) > 0 && !slices.Contains(s.Principals, peer) {
		return false
	}
	if len(s.Namespaces) > 0 && !slices.Contains(s.Namespaces, peer.Namespace) {
		return false
	}
	return true
}

// Decision is the outcome of Authorize.
type Decision struct {
	Allowed bool
	// Policy is namespace/name of the policy that decided, empty when none did.
	Policy string
	Reason string
}

// Authorize decides c to dst under policies: any matching DENY policy
// refuses it (deny wins, whatever else matches); otherwise, if ALLOW policies
// apply to dst, one of them must match; with no policy, it is allowed.
func Authorize(policies []Policy, systemNamespace string, dst *Workload, c Conn) Decision {
	var allows []*Policy
	for i := range policies {
		p := &policies[i]
		if !p.AppliesTo(dst, systemNamespace) {
			continue
		}
		if p.Action == v1alpha1.ActionDeny {
			if p.Matches(c) {
				return Decision{Policy: p.Namespace + "/" + p.Name, Reason: "matched a DENY policy"}
			}
			continue
		}
		allows = append(allows, p)
	}
	if len(allows) == 0 {
		return Decision{Allowed: true, Reason: "no policy applies"}
	}
	for _, p := range allows {
		if p.Matches(c) {
			return Decision{Allowed: true, Policy: p.Namespace + "/" + p.Name, Reason: "matched an ALLOW policy"}
		}
	}
	return Decision{Reason: "ALLOW policies apply and none matched"}
}

// MTLSMode returns the mode in force for w and the PeerAuthentication that
// sets it (empty: the default, PERMISSIVE). The most specific object wins:
// with a selector, then the namespace's, then the mesh-wide one; within a
// level the oldest, then the first by name.
func (m *Model) MTLSMode(w *Workload) (v1alpha1.MTLSMode, string) {
	var best *PeerAuth
	bestLevel := 0
	for i := range m.PeerAuths {
		pa := &m.PeerAuths[i]
		level := paLevel(pa, w, m.SystemNamespace)
		if level == 0 {
			continue
		}
		if best == nil || level > bestLevel || level == bestLevel && paOlder(pa, best) {
			best, bestLevel = pa, level
		}
	}
	if best == nil {
		return v1alpha1.ModePermissive, ""
	}
	return best.Mode, best.Namespace + "/" + best.Name
}

// paLevel ranks how specifically pa applies to w: 3 by selector, 2 to its
// namespace, 1 mesh-wide, 0 not at all.
func paLevel(pa *PeerAuth, w *Workload, systemNamespace string) int {
	switch {
	case pa.Selector != nil && applies(pa.Namespace, pa.Selector, w, systemNamespace):
		return 3
	case pa.Selector != nil:
		return 0
	case pa.Namespace == w.Namespace:
		return 2
	case pa.Namespace == systemNamespace:
		return 1
	}
	return 0
}

func paOlder(a, b *PeerAuth) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// judgePolicies fills the verdicts of valid AuthorizationPolicies: ALLOW
// policies that share a workload with a DENY policy are in force but told
// that deny wins where both match.
func (m *Model) judgePolicies() {
	for i := range m.Policies {
		p := &m.Policies[i]
		k := Key{Namespace: p.Namespace, Name: p.Name}
		if _, judged := m.AuthzVerdicts[k]; judged {
			continue // invalid, already said why
		}
		v := Verdict{Accepted: true, Reason: v1alpha1.ReasonAccepted, Message: "in force"}
		if p.Action == v1alpha1.ActionAllow {
			var denies []string
			for j := range m.Policies {
				d := &m.Policies[j]
				if d.Action == v1alpha1.ActionDeny && m.shareWorkload(p, d) {
					denies = append(denies, d.Namespace+"/"+d.Name)
				}
			}
			if len(denies) > 0 {
				v.Reason = v1alpha1.ReasonOverlapsDeny
				v.Message = fmt.Sprintf("in force, but DENY policies %s apply to some of the same workloads, and deny wins where both match", list(denies))
			}
		}
		m.AuthzVerdicts[k] = v
	}
}

func (m *Model) shareWorkload(a, b *Policy) bool {
	for _, w := range m.sortedWorkloads() {
		if a.AppliesTo(w, m.SystemNamespace) && b.AppliesTo(w, m.SystemNamespace) {
			return true
		}
	}
	return false
}

// judgePeerAuths marks PeerAuthentications that lose to an older object of
// the same scope: two without a selector in one namespace, or two with
// selectors that pick a common workload.
func (m *Model) judgePeerAuths() {
	for i := range m.PeerAuths {
		pa := &m.PeerAuths[i]
		k := Key{Namespace: pa.Namespace, Name: pa.Name}
		if _, judged := m.PeerAuthVerdicts[k]; judged {
			continue
		}
		var winner *PeerAuth
		for j := range m.PeerAuths {
			o := &m.PeerAuths[j]
			if o == pa || o.Namespace != pa.Namespace || !paOlder(o, pa) || (o.Selector == nil) != (pa.Selector == nil) {
				continue
			}
			if pa.Selector == nil || m.shareWorkloadPA(o, pa) {
				winner = o
				break
			}
		}
		if winner != nil {
			m.PeerAuthVerdicts[k] = Verdict{Reason: v1alpha1.ReasonConflicted,
				Message: fmt.Sprintf("%s/%s, older, has the same scope and is in force instead", winner.Namespace, winner.Name)}
			continue
		}
		m.PeerAuthVerdicts[k] = Verdict{Accepted: true, Reason: v1alpha1.ReasonAccepted, Message: "in force"}
	}
}

func (m *Model) shareWorkloadPA(a, b *PeerAuth) bool {
	for _, w := range m.sortedWorkloads() {
		if applies(a.Namespace, a.Selector, w, m.SystemNamespace) && applies(b.Namespace, b.Selector, w, m.SystemNamespace) {
			return true
		}
	}
	return false
}

func (m *Model) sortedWorkloads() []*Workload {
	ws := make([]*Workload, 0, len(m.Workloads))
	for _, w := range m.Workloads {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b *Workload) int { return cmp.Compare(a.UID, b.UID) })
	return ws
}

func list(names []string) string {
	slices.Sort(names)
	if len(names) > 3 {
		return strings.Join(names[:3], ", ") + fmt.Sprintf(" and %d more", len(names)-3)
	}
	return strings.Join(names, ", ")
}
