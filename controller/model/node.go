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
	UID      types.UID
	Node     string
	IPs      []netip.Addr
	Identity identity.ID
}

// ForNode cuts the model down to what node's ztunnel needs.
func (m *Model) ForNode(node string) NodeView {
	v := NodeView{Node: node}
	ws := m.sortedWorkloads()
	for _, w := range ws {
		if !w.Enrolled {
			continue
		}
		if w.Node != node {
			v.Peers = append(v.Peers, Peer{UID: w.UID, Node: w.Node, IPs: w.IPs, Identity: w.Identity})
			continue
		}
		mode, _ := m.MTLSMode(w)
		v.Workloads = append(v.Workloads, NodeWorkload{Workload: *w, Mode: mode})
	}
	for _, s := range m.Services {
		v.Services = append(v.Services, *s)
	}
	slices.SortFunc(v.Services, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, p := range m.Policies {
		for i := range v.Workloads {
			if p.AppliesTo(&v.Workloads[i].Workload, m.SystemNamespace) {
				v.Policies = append(v.Policies, p)
				break
			}
		}
	}
	return v
}
