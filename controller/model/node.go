package model

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/internal/identity"
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
	Policies []Policy
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
func (m *Model) Local(node string) ([]NodeWorkload, []Policy) {
	var ws []NodeWorkload
	for _, w := range m.onNode(node) {
		if w.Enrolled {
			mode, _ := m.MTLSMode(w)
			ws = append(ws, NodeWorkload{Workload: *w, Mode: mode})
		}
	}
	var ps []Policy
	for _, p := range m.Policies {
		for i := range ws {
			if p.AppliesTo(&ws[i].Workload, m.SystemNamespace) {
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
	var ps []Peer
	for _, w := range m.sortedWorkloads() {
		if w.Enrolled && len(w.IPs) > 0 { // no address yet: nothing to route to
			ps = append(ps, Peer{UID: w.UID, Namespace: w.Namespace, Name: w.Name, Node: w.Node, IPs: w.IPs, Identity: w.Identity})
		}
	}
	return ps
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
