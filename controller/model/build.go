package model

import (
	"cmp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/gateway"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy"
)

// Inputs are the Kubernetes objects a Model is built from, as listed from
// informer caches. Build does not modify them.
type Inputs struct {
	// TrustDomain defaults to cluster.local, SystemNamespace to warren-system.
	TrustDomain           string
	SystemNamespace       string
	Namespaces            []*corev1.Namespace
	Pods                  []*corev1.Pod
	Services              []*corev1.Service
	EndpointSlices        []*discoveryv1.EndpointSlice
	AuthorizationPolicies []*v1alpha1.AuthorizationPolicy
	PeerAuthentications   []*v1alpha1.PeerAuthentication
	// The Gateway API objects; empty when its CRDs are not installed.
	HTTPRoutes      []*gwv1.HTTPRoute
	GRPCRoutes      []*gwv1.GRPCRoute
	ReferenceGrants []*gwv1.ReferenceGrant
	Gateways        []*gwv1.Gateway
}

// Build translates everything into a Model and judges every policy object.
// It is level-based: the same inputs give the same model, whatever happened
// before.
func Build(in Inputs) *Model {
	m := &Model{
		TrustDomain:      cmp.Or(in.TrustDomain, identity.DefaultTrustDomain),
		SystemNamespace:  cmp.Or(in.SystemNamespace, DefaultSystemNamespace),
		Workloads:        make(map[types.UID]*Workload, len(in.Pods)),
		Services:         make(map[Key]*Service, len(in.Services)),
		AuthzVerdicts:    map[Key]Verdict{},
		PeerAuthVerdicts: map[Key]Verdict{},
	}
	nsLabels := map[string]map[string]string{}
	for _, ns := range in.Namespaces {
		nsLabels[ns.Name] = ns.Labels
	}
	for _, pod := range in.Pods {
		w, ok, err := WorkloadFromPod(pod, nsLabels[pod.Namespace], m.TrustDomain)
		if !ok {
			continue
		}
		m.Workloads[w.UID] = &w
		if err != nil {
			if m.LabelErrors == nil {
				m.LabelErrors = map[types.UID]string{}
			}
			m.LabelErrors[w.UID] = err.Error()
		}
	}

	slicesBySvc := map[Key][]*discoveryv1.EndpointSlice{}
	for _, es := range in.EndpointSlices {
		k := Key{Namespace: es.Namespace, Name: es.Labels[discoveryv1.LabelServiceName]}
		slicesBySvc[k] = append(slicesBySvc[k], es)
	}
	for _, svc := range in.Services {
		k := Key{Namespace: svc.Namespace, Name: svc.Name}
		s := ServiceFromCore(svc, slicesBySvc[k])
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			if w := m.Workloads[e.WorkloadUID]; w != nil {
				e.Enrolled, e.Identity = w.Enrolled, w.Identity
			}
		}
		// A label naming a waypoint that does not exist still binds the
		// Service: the ztunnels then refuse its traffic (fail closed) rather
		// than let it bypass the policy the waypoint would enforce.
		if wp := gateway.WaypointFor(nsLabels[svc.Namespace], svc.Labels); wp != "" {
			s.Waypoint = svc.Namespace + "/" + wp
		}
		m.Services[k] = &s
	}

	for _, ap := range in.AuthorizationPolicies {
		p, err := PolicyFromCRD(ap)
		if err != nil {
			m.AuthzVerdicts[Key{Namespace: ap.Namespace, Name: ap.Name}] = invalid(err, failClosed(p.Action))
		}
		m.Policies = append(m.Policies, p)
	}
	slices.SortFunc(m.Policies, func(a, b policy.Policy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, pa := range in.PeerAuthentications {
		p, err := PeerAuthFromCRD(pa)
		if err != nil {
			m.PeerAuthVerdicts[Key{Namespace: pa.Namespace, Name: pa.Name}] = invalid(err, "enforced as STRICT until fixed")
		}
		m.PeerAuths = append(m.PeerAuths, p)
	}
	slices.SortFunc(m.PeerAuths, func(a, b PeerAuth) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	m.ordered = m.sortedWorkloads()
	m.byNode = map[string][]*Workload{}
	for _, w := range m.ordered {
		m.byNode[w.Node] = append(m.byNode[w.Node], w)
	}
	m.compileRoutes(in)
	m.judgePolicies()
	m.judgePeerAuths()
	return m
}

func invalid(err error, enforced string) Verdict {
	msg := strings.TrimPrefix(err.Error(), ErrInvalidPolicy.Error()+": ")
	return Verdict{Reason: v1alpha1.ReasonInvalid, Message: msg + "; " + enforced}
}

func failClosed(a policy.Action) string {
	if a == policy.ActionDeny {
		return "enforced as deny-all for the workloads it selects until fixed"
	}
	return "enforced as allow-nothing until fixed"
}
