package model

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy"
)

// NodeView is what the ztunnel of one node needs: its own enrolled workloads
// in full (it holds their certificates and enforces their inbound policy),
// the address and identity of every other enrolled workload (to reach and
// verify them), the services (to route), and only the policies that apply to
// its own workloads. Nothing else about other nodes' pods leaves the
// controller.
type NodeView struct {
	Node string
	// Workloads are the node's enrolled workloads, sorted by UID.
	Workloads []NodeWorkload
	// Peers are the enrolled workloads of the other nodes, sorted by UID.
	Peers []Peer
	// Services are all services, sorted by namespace and name.
	Services []Service
	// Policies apply to at least one of Workloads.
	Policies []policy.Policy
}

// NodeWorkload is a local workload with its effective mTLS mode.
type NodeWorkload struct {
	Workload
	Mode v1alpha1.MTLSMode
}

// Peer is an enrolled workload on another node.
type Peer struct {
	UID       types.UID
	Namespace string
	Name      string
	Node      string
	IPs       []netip.Addr
	Identity  identity.ID
}

// ForNode cuts the model down to what node's ztunnel needs.
func (m *Model) ForNode(node string) NodeView {
	v := NodeView{Node: node}
	v.Workloads, v.Policies = m.Local(node)
	for _, p := range m.Peers() {
		if p.Node != node {
			v.Peers = append(v.Peers, p)
		}
	}
	v.Services = m.SortedServices()
	return v
}

// Local is the part of ForNode that differs between nodes: the node's
// enrolled workloads, sorted by UID, and the policies that apply to them.
func (m *Model) Local(node string) ([]NodeWorkload, []policy.Policy) {
	refs, prefs := m.LocalRefs(node)
	ws := make([]NodeWorkload, 0, len(refs))
	for _, r := range refs {
		ws = append(ws, NodeWorkload{Workload: *r.Workload, Mode: r.Mode})
	}
	var ps []policy.Policy
	for _, p := range prefs {
		ps = append(ps, *p)
	}
	return ws, ps
}

// LocalRef is a local workload with its effective mTLS mode, not copied.
type LocalRef struct {
	*Workload
	Mode v1alpha1.MTLSMode
}

// LocalRefs is Local without copies, for a server that calls it for every
// node on every change: the model's own workloads and policies, read-only.
func (m *Model) LocalRefs(node string) ([]LocalRef, []*policy.Policy) {
	on := m.onNode(node)
	ws := make([]LocalRef, 0, len(on))
	for _, w := range on {
		if w.Enrolled {
			mode, _ := m.MTLSMode(w)
			ws = append(ws, LocalRef{Workload: w, Mode: mode})
		}
	}
	var ps []*policy.Policy
	for i := range m.Policies {
		p := &m.Policies[i]
		for _, w := range ws {
			if p.AppliesTo(target(w.Workload), m.SystemNamespace) {
				ps = append(ps, p)
				break
			}
		}
	}
	return ws, ps
}

// Peers returns every enrolled workload, sorted by UID, as other nodes see
// it; the same for all nodes, so a server can convert it once per model.
func (m *Model) Peers() []Peer {
	ws := m.PeerWorkloads()
	ps := make([]Peer, 0, len(ws))
	for _, w := range ws {
		ps = append(ps, w.Peer())
	}
	return ps
}

// PeerWorkloads returns the workloads of Peers, sorted by UID, not copied.
func (m *Model) PeerWorkloads() []*Workload {
	all := m.sortedWorkloads()
	ws := make([]*Workload, 0, len(all))
	for _, w := range all {
		if w.Enrolled && len(w.IPs) > 0 { // no address yet: nothing to route to
			ws = append(ws, w)
		}
	}
	return ws
}

// Peer is w as other nodes see it.
func (w *Workload) Peer() Peer {
	return Peer{UID: w.UID, Namespace: w.Namespace, Name: w.Name, Node: w.Node, IPs: w.IPs, Identity: w.Identity}
}

// SortedServices returns the services by namespace and name.
func (m *Model) SortedServices() []Service {
	ss := make([]Service, 0, len(m.Services))
	for _, s := range m.Services {
		ss = append(ss, *s)
	}
	slices.SortFunc(ss, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return ss
}

// onNode returns the node's workloads by UID.
func (m *Model) onNode(node string) []*Workload {
	if m.byNode != nil {
		return m.byNode[node]
	}
	var ws []*Workload
	for _, w := range m.sortedWorkloads() {
		if w.Node == node {
			ws = append(ws, w)
		}
	}
	return ws
}
