// Package model is the controller's compact view of the mesh: workloads,
// services and policies, translated from Kubernetes objects by pure
// functions, and cut per node into what one node's ztunnel needs.
//
// Everything here is deterministic (sorted slices, no clocks, no I/O) so that
// two builds from the same objects compare equal and a subscriber can be sent
// the difference.
package model

import (
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy"
)

// DefaultSystemNamespace holds the controller, its CA Secret and the
// mesh-wide policies.
const DefaultSystemNamespace = "warren-system"

// Workload is a pod as the mesh sees it.
type Workload struct {
	UID            types.UID
	Namespace      string
	Name           string
	Node           string
	ServiceAccount string
	// Identity is the SPIFFE ID of the pod's service account.
	Identity identity.ID
	// IPs are the pod's addresses, sorted; empty until the pod has one.
	IPs    []netip.Addr
	Labels map[string]string
	// Running: the pod's phase is Running.
	Running bool
	// Enrolled: internal/enrollment.ShouldEnroll (the namespace carries
	// warren.dev/mesh=enabled, the pod does not carry
	// warren.dev/mesh=disabled, neither label is malformed), and the pod is
	// not host-network (its traffic is the node's).
	Enrolled bool
}

// Service is a Kubernetes Service with its endpoints. Only TCP ports are
// kept: the mesh carries TCP and leaves everything else alone.
type Service struct {
	Namespace string
	Name      string
	// VIPs are the cluster IPs, sorted; empty for a headless service.
	VIPs      []netip.Addr
	Ports     []ServicePort
	Endpoints []Endpoint
	// Waypoint is "<namespace>/<name>" of the waypoint that handles the
	// traffic to this Service ("" for none): gateway.WaypointFor of the
	// namespace's and the Service's labels, in the Service's namespace.
	Waypoint string
}

// ServicePort is one TCP port of a Service.
type ServicePort struct {
	Name string
	Port uint16
	// TargetPort is the endpoint port when numeric (0 when named: the
	// endpoints then carry the resolved number).
	TargetPort uint16
	// TargetPortName is the named container port, if any.
	TargetPortName string
	// AppProtocol is the port's appProtocol, if set.
	AppProtocol string
}

// Endpoint is one address behind a Service, from its EndpointSlices.
type Endpoint struct {
	Addr netip.Addr
	Node string
	// WorkloadUID is the pod behind the address, when the slice names one.
	WorkloadUID types.UID
	Ready       bool
	// Ports maps a service port name to the endpoint's port number.
	Ports map[string]uint16
	// Enrolled and Identity come from the workload: an enrolled endpoint is
	// reached over HBONE and must prove Identity.
	Enrolled bool
	Identity identity.ID
}

// PeerAuth is a PeerAuthentication.
type PeerAuth struct {
	Namespace string
	Name      string
	Selector  map[string]string
	Mode      v1alpha1.MTLSMode
	Created   time.Time
}

// RouteRef names an HTTPRoute or GRPCRoute; Kind is "HTTPRoute" or
// "GRPCRoute".
type RouteRef struct {
	Kind, Namespace, Name string
}

// Route is an accepted route as the waypoints get it.
type Route struct {
	RouteRef
	// Proto is gateway.Compile*Route's result: shared, never modified.
	Proto *meshv1.Route
}

// Key names a namespaced object.
type Key = types.NamespacedName

// Verdict is the controller's judgement of one policy object, written into
// its Accepted condition.
type Verdict struct {
	Accepted bool
	Reason   string
	Message  string
}

// Model is the whole mesh at one moment. It is read-only once built: the
// controller publishes it to concurrent readers and builds a new one for
// every change.
type Model struct {
	TrustDomain     string
	SystemNamespace string
	Workloads       map[types.UID]*Workload
	Services        map[Key]*Service
	// Policies and PeerAuths are sorted by namespace and name. Policies are
	// internal/policy's, the values the ztunnel evaluates.
	Policies  []policy.Policy
	PeerAuths []PeerAuth
	// AuthzVerdicts and PeerAuthVerdicts judge every policy object given to
	// Build, including the invalid ones.
	AuthzVerdicts    map[Key]Verdict
	PeerAuthVerdicts map[Key]Verdict
	// LabelErrors says, by pod UID, why a pod with a malformed
	// warren.dev/mesh label (its own or its namespace's) is not enrolled.
	LabelErrors map[types.UID]string
	// Routes are the accepted HTTPRoutes and GRPCRoutes (at least one
	// Service parent accepted them), compiled for the waypoints, sorted by
	// kind, namespace and name.
	Routes []Route
	// RouteParents is, for every route with a Service parent (accepted or
	// not), the status of each of its Service parents: what the leader
	// writes in status.parents under gateway.ControllerName.
	RouteParents map[RouteRef][]gwv1.RouteParentStatus

	ordered []*Workload            // Workloads by UID
	byNode  map[string][]*Workload // the same, per node
}

// Scheduled reports whether a pod bound to node, and not finished, has the
// service account of id. The CA asks this before it signs id for a caller on
// node. Pending pods count: the CNI plugin enrolls a pod before its
// containers run, and its ztunnel needs the certificate by then, or the pod's
// first connections fail closed. Finished pods are not in the model.
func (m *Model) Scheduled(node string, id identity.ID) bool {
	for _, w := range m.onNode(node) {
		if w.Node == node && w.Identity == id {
			return true
		}
	}
	return false
}
