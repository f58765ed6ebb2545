package ztunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/podroute"
	"github.com/warrenmesh/warren/internal/policy"
)

// Mode is a PeerAuthentication mTLS mode.
type Mode string

// mTLS modes: STRICT refuses plaintext inbound on 15006, PERMISSIVE lets it
// through with no identity (policy still applies).
const (
	ModeStrict     Mode = "STRICT"
	ModePermissive Mode = "PERMISSIVE"
)

// Action is what a matching AuthorizationPolicy does.
type Action = policy.Action

// Policy actions; deny wins.
const (
	ActionAllow = policy.ActionAllow
	ActionDeny  = policy.ActionDeny
)

// Outbound policies for destinations outside the mesh.
const (
	NonMeshPassthrough = "passthrough"
	NonMeshRefuse      = "refuse"
)

// DefaultSystemNamespace holds the mesh-wide policies (no selector).
const DefaultSystemNamespace = "warren-system"

// Config is what a ztunnel needs. In static mode it comes from a file
// (LoadStatic); later the controller's stream fills the same shapes.
type Config struct {
	// Node names this ztunnel's node.
	Node string `json:"node"`
	// TrustDomain of the SPIFFE IDs; "cluster.local" if empty.
	TrustDomain string `json:"trustDomain,omitempty"`
	// SystemNamespace holds mesh-wide policies; DefaultSystemNamespace if empty.
	SystemNamespace string `json:"systemNamespace,omitempty"`
	// PinDir is the node agent's bpffs pin directory: the ztunnel reads the
	// original destinations from it and registers its listeners in it.
	PinDir string `json:"pinDir"`
	// Mark is the SO_MARK of the ztunnel's own sockets, which the eBPF
	// programs do not redirect; 0x5741 if zero.
	Mark uint32 `json:"mark,omitempty"`
	// NonMesh is what outbound connections to destinations outside the mesh
	// get: "passthrough" (default) or "refuse".
	NonMesh string `json:"nonMesh,omitempty"`
	// Mode is the default PeerAuthentication mode of local pods; PERMISSIVE if empty.
	Mode Mode `json:"mode,omitempty"`

	// Pods are the enrolled pods of this node (static mode; see PodSource).
	Pods []LocalPod `json:"pods,omitempty"`
	// Workloads are the other enrolled and non-enrolled workloads of the mesh.
	Workloads []Workload `json:"workloads,omitempty"`
	Services  []Service  `json:"services,omitempty"`
	Policies  []Policy   `json:"policies,omitempty"`

	// Certificates: CABundle (PEM file) holds the mesh roots. Certs gives a
	// certificate and key file per local service account ("ns/sa"); without
	// one, a ztunnel with a CA (Options.Sign) asks it.
	CABundle string              `json:"caBundle"`
	Certs    map[string]CertPair `json:"certs,omitempty"`

	// HBONE bounds the HTTP/2 connections (windows, frames, streams); zero
	// fields take internal/hbone's defaults. The receive windows bound what a
	// slow reader makes the ztunnel buffer, so they set its peak memory.
	HBONE hbone.Limits `json:"hbone,omitzero"`

	// Listen addresses on the node (host:port); empty disables.
	AdminAddr   string `json:"adminAddr,omitempty"`
	MetricsAddr string `json:"metricsAddr,omitempty"`
	ReadyAddr   string `json:"readyAddr,omitempty"`
}

// CertPair is a PEM certificate chain and key.
type CertPair struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// LocalPod is an enrolled pod on this node.
type LocalPod struct {
	Workload `json:",inline"`
	UID      string `json:"uid"`
	// Netns is /proc/<pid>/ns/net or /run/netns/<name>.
	Netns string `json:"netns"`
	// NetnsFile, when set, is the pod's netns already open (the node agent
	// hands it over zds) and Netns is ignored. Only borrowed by AddPod: the
	// caller still owns it and may close it once AddPod returns.
	NetnsFile *os.File `json:"-"`
	// Mode overrides Config.Mode for this pod (its PeerAuthentication).
	Mode Mode `json:"mode,omitempty"`
}

// Workload is a pod as the mesh sees it.
type Workload struct {
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
	IPs            []netip.Addr      `json:"ips"`
	Labels         map[string]string `json:"labels,omitempty"`
	// Node and NodeAddr say where it runs; informational for routing, since
	// HBONE goes to <pod IP>:15008 and the pod's node routes it.
	Node     string     `json:"node,omitempty"`
	NodeAddr netip.Addr `json:"nodeAddr,omitzero"`
	// Enrolled workloads are reached over HBONE and must prove Identity.
	Enrolled bool `json:"enrolled"`

	id identity.ID
}

// Identity is the workload's SPIFFE ID (valid after Config.Validate).
func (w *Workload) Identity() identity.ID { return w.id }

// Service is a Kubernetes Service: virtual IPs, ports and endpoints.
type Service struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace"`
	VIPs      []netip.Addr  `json:"vips"`
	Ports     []ServicePort `json:"ports"`
	Endpoints []Endpoint    `json:"endpoints"`
	// Waypoint, "<namespace>/<name>", names the waypoint that handles the
	// Service's traffic: its VIP and its endpoints' addresses are reached
	// through a ready pod of the waypoint's own Service (same namespace and
	// name), which must prove spiffe://<td>/ns/<namespace>/sa/<name>; and
	// its endpoints accept nothing else (see WaypointGate). Empty: none.
	Waypoint string `json:"waypoint,omitempty"`

	waypointID identity.ID
}

// waypointRef parses a "<namespace>/<name>" waypoint reference into the
// waypoint's identity: its pods run as the ServiceAccount of its name.
func waypointRef(trustDomain, ref string) (identity.ID, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return identity.ID{}, fmt.Errorf("%q: want <namespace>/<name>", ref)
	}
	id := identity.ID{TrustDomain: trustDomain, Namespace: ns, ServiceAccount: name}
	return id, id.Validate()
}

// ServicePort maps a service port to the endpoints' port.
type ServicePort struct {
	Port       uint16 `json:"port"`
	TargetPort uint16 `json:"targetPort,omitempty"` // Port if zero
	// TargetPortName, when set, names the container port: each endpoint's
	// number is in its Ports.
	TargetPortName string `json:"targetPortName,omitempty"`
}

// Endpoint is one address behind a service; its workload (if any) is found
// by address.
type Endpoint struct {
	IP    netip.Addr `json:"ip"`
	Ready bool       `json:"ready"`
	// Ports are the endpoint's named ports (ServicePort.TargetPortName).
	Ports map[string]uint16 `json:"ports,omitempty"`
}

// Policy, Rule, Source and Destination are internal/policy's: the
// configuration holds the values the ztunnel evaluates, read from JSON (the
// static file: principals as SPIFFE ID strings) or from the controller's
// protobuf (internal/policy/policypb), with the semantics of the CRD:
// selector nil means the namespace's workloads, or the mesh's in the system
// namespace; an ALLOW with no rules allows nothing, a DENY with no rules
// denies nothing, an empty rule matches all.
type (
	Policy      = policy.Policy
	Rule        = policy.Rule
	Source      = policy.Source
	Destination = policy.Destination
)

// LoadStatic reads a static configuration file (YAML or JSON).
func LoadStatic(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("static config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("static config %s: %w", path, err)
	}
	return &c, nil
}

// Validate fills defaults and checks the configuration; every problem is
// reported, each naming its field.
func (c *Config) Validate() error {
	if c.TrustDomain == "" {
		c.TrustDomain = identity.DefaultTrustDomain
	}
	if c.SystemNamespace == "" {
		c.SystemNamespace = DefaultSystemNamespace
	}
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	if c.NonMesh == "" {
		c.NonMesh = NonMeshPassthrough
	}
	if c.Mode == "" {
		c.Mode = ModePermissive
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Node == "" {
		bad("node: required")
	}
	if err := c.HBONE.Validate(); err != nil {
		bad("hbone: %v", err)
	}
	if c.PinDir == "" {
		bad("pinDir: required")
	}
	if err := podroute.CheckTunnelMark(c.Mark); err != nil {
		bad("mark: %v", err)
	}
	if c.NonMesh != NonMeshPassthrough && c.NonMesh != NonMeshRefuse {
		bad("nonMesh: %q: want passthrough or refuse", c.NonMesh)
	}
	if !validMode(c.Mode) {
		bad("mode: %q: want STRICT or PERMISSIVE", c.Mode)
	}
	if c.CABundle == "" {
		bad("caBundle: required")
	}
	ips := map[netip.Addr]string{}
	checkWorkload := func(field string, w *Workload) {
		if w.ServiceAccount == "" {
			w.ServiceAccount = "default"
		}
		w.id = identity.ID{TrustDomain: c.TrustDomain, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}
		if err := w.id.Validate(); err != nil {
			bad("%s %s/%s: %v", field, w.Namespace, w.Name, err)
		}
		if len(w.IPs) == 0 {
			bad("%s %s/%s: ips: required", field, w.Namespace, w.Name)
		}
		for _, ip := range w.IPs {
			if !ip.IsValid() || ip.IsUnspecified() || ip.Unmap().IsLoopback() {
				bad("%s %s/%s: ip %v: not a pod address", field, w.Namespace, w.Name, ip)
				continue
			}
			if prev, dup := ips[ip.Unmap()]; dup {
				bad("%s %s/%s: ip %v: also %s", field, w.Namespace, w.Name, ip, prev)
			}
			ips[ip.Unmap()] = w.Namespace + "/" + w.Name
		}
	}
	uids := map[string]bool{}
	for i := range c.Pods {
		p := &c.Pods[i]
		p.Enrolled = true
		checkWorkload("pods", &p.Workload)
		if p.UID == "" || uids[p.UID] {
			bad("pods %s/%s: uid %q: required and unique", p.Namespace, p.Name, p.UID)
		}
		uids[p.UID] = true
		if p.Netns == "" {
			bad("pods %s/%s: netns: required", p.Namespace, p.Name)
		}
		if p.Mode != "" && !validMode(p.Mode) {
			bad("pods %s/%s: mode %q: want STRICT or PERMISSIVE", p.Namespace, p.Name, p.Mode)
		}
		if p.Enrolled {
			if _, ok := c.Certs[p.Identity().Namespace+"/"+p.ServiceAccount]; !ok {
				bad("certs: no certificate for %s/%s (pod %s)", p.Namespace, p.ServiceAccount, p.Name)
			}
		}
	}
	for i := range c.Workloads {
		checkWorkload("workloads", &c.Workloads[i])
	}
	vips := map[netip.Addr]bool{}
	for i := range c.Services {
		s := &c.Services[i]
		name := s.Namespace + "/" + s.Name
		s.waypointID = identity.ID{}
		if s.Waypoint != "" {
			id, err := waypointRef(c.TrustDomain, s.Waypoint)
			if err != nil {
				bad("services %s: waypoint %v", name, err)
			}
			s.waypointID = id
		}
		for _, v := range s.VIPs {
			if !v.IsValid() || vips[v.Unmap()] {
				bad("services %s: vip %v: invalid or duplicate", name, v)
			}
			vips[v.Unmap()] = true
		}
		for _, p := range s.Ports {
			if p.Port == 0 {
				bad("services %s: port 0", name)
			}
		}
		for _, e := range s.Endpoints {
			if !e.IP.IsValid() {
				bad("services %s: endpoint address missing", name)
			}
		}
	}
	for i := range c.Policies {
		p := &c.Policies[i]
		name := p.Namespace + "/" + p.Name
		if p.Name == "" || p.Namespace == "" {
			bad("policies %s: name and namespace required", name)
		}
		if p.Action != ActionAllow && p.Action != ActionDeny {
			bad("policies %s: action %q: want ALLOW or DENY", name, p.Action)
		}
		for r := range p.Rules {
			for s, src := range p.Rules[r].From {
				if len(src.Principals) == 0 && len(src.Namespaces) == 0 {
					bad("policies %s: rules[%d].from[%d]: principals or namespaces required", name, r, s)
				}
				for _, id := range src.Principals {
					if err := id.Validate(); err != nil {
						bad("policies %s: principal %q: %v", name, id, err)
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

func validMode(m Mode) bool { return m == ModeStrict || m == ModePermissive }

// certKey names a local service account in Config.Certs.
func certKey(id identity.ID) string { return id.Namespace + "/" + id.ServiceAccount }

// String is for logs.
func (w *Workload) String() string {
	if w == nil {
		return "unknown"
	}
	return w.Namespace + "/" + w.Name
}
