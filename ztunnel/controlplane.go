package ztunnel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/internal/controlplane"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy/policypb"
)

// Mesh is the part of the configuration the controller streams: everything
// but the node's own settings and its pods' network namespaces.
type Mesh struct {
	Workloads []Workload
	Services  []Service
	Policies  []Policy
	// Modes are the local pods' PeerAuthentication modes, by pod UID.
	Modes map[string]Mode
}

// ControlPlane is the ztunnel's client of the controller (api/proto/mesh/v1,
// through internal/controlplane): it subscribes to its node's view, turns
// every update into a Mesh, hands it to the tunnel and acks or nacks it; and
// it sends the local identities' CSRs to the CA. Calls carry the pod's
// service account token, read from TokenFile at each call (the kubelet
// rotates it).
type ControlPlane struct {
	// Addr is the controller's gRPC address (host:port).
	Addr string
	// ServerName is the name in the controller's serving certificate; the
	// host of Addr if empty.
	ServerName string
	// TokenFile holds the service account token.
	TokenFile string
	// Node is this node; TrustDomain the mesh's.
	Node        string
	TrustDomain string
	// Roots verify the controller: the mesh roots.
	Roots *identity.Roots
	Log   *slog.Logger
	// MaxBackoff caps the wait between reconnections; 10 s if zero.
	MaxBackoff time.Duration

	once sync.Once
	cl   *controlplane.Client
}

func (cp *ControlPlane) client() *controlplane.Client {
	cp.once.Do(func() {
		if cp.Log == nil {
			cp.Log = slog.New(slog.DiscardHandler)
		}
		cp.cl = &controlplane.Client{Addr: cp.Addr, ServerName: cp.ServerName, TokenFile: cp.TokenFile,
			Roots: cp.Roots, Log: cp.Log, MaxBackoff: cp.MaxBackoff}
	})
	return cp.cl
}

// Close ends the connection to the controller.
func (cp *ControlPlane) Close() error { return cp.client().Close() }

// Sign implements SignFunc with the controller's CA.
func (cp *ControlPlane) Sign(ctx context.Context, csrPEM []byte) ([]byte, []byte, error) {
	return cp.client().Sign(ctx, csrPEM)
}

// Run subscribes until ctx ends, reconnecting with backoff. Every update is
// applied on top of what was last accepted and handed to apply as a whole
// Mesh: nil acks it; an error nacks it, and the previous state stays (the
// controller sends the refused resources again with its next change).
func (cp *ControlPlane) Run(ctx context.Context, apply func(Mesh) error) error {
	return cp.client().Run(ctx, &meshv1.Hello{Node: cp.Node}, func(version uint64, res map[string]*meshv1.Resource) error {
		m, err := MeshFromResources(res, cp.TrustDomain, cp.Node)
		if err != nil {
			return err
		}
		if err := apply(m); err != nil {
			return err
		}
		cp.Log.Debug("mesh applied", "version", version,
			"workloads", len(m.Workloads), "services", len(m.Services), "policies", len(m.Policies))
		return nil
	})
}

// MeshFromResources converts the controller's resources for node into a
// Mesh. Every malformed field is reported; nothing is half converted.
func MeshFromResources(res map[string]*meshv1.Resource, trustDomain, node string) (Mesh, error) {
	m := Mesh{Modes: map[string]Mode{}}
	var errs []error
	bad := func(key, format string, a ...any) { errs = append(errs, fmt.Errorf(key+": "+format, a...)) }
	keys := slices.Sorted(maps.Keys(res))
	for _, k := range keys {
		r := res[k]
		switch {
		case r.GetWorkload() != nil:
			w := r.GetWorkload()
			ips, err := parseIPs(w.Ips)
			if err != nil {
				bad(k, "%v", err)
				continue
			}
			if len(ips) > 0 { // a pod still starting has none yet
				m.Workloads = append(m.Workloads, Workload{Name: w.Name, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount,
					IPs: ips, Labels: w.Labels, Node: node, Enrolled: true})
			}
			switch w.MtlsMode {
			case meshv1.MTLSMode_MTLS_MODE_STRICT:
				m.Modes[w.Uid] = ModeStrict
			case meshv1.MTLSMode_MTLS_MODE_PERMISSIVE:
				m.Modes[w.Uid] = ModePermissive
			}
		case r.GetPeer() != nil:
			p := r.GetPeer()
			id, err := identity.Parse(p.Identity)
			if err != nil {
				bad(k, "identity: %v", err)
				continue
			}
			if id.TrustDomain != trustDomain {
				bad(k, "identity %s: not of trust domain %s", id, trustDomain)
				continue
			}
			ips, err := parseIPs(p.Ips)
			if err != nil {
				bad(k, "%v", err)
				continue
			}
			if len(ips) == 0 {
				continue
			}
			m.Workloads = append(m.Workloads, Workload{Name: cmp.Or(p.Name, p.Uid), Namespace: id.Namespace,
				ServiceAccount: id.ServiceAccount, IPs: ips, Node: p.Node, Enrolled: true})
		case r.GetService() != nil:
			s := r.GetService()
			vips, err := parseIPs(s.Vips)
			if err != nil {
				bad(k, "%v", err)
				continue
			}
			svc := Service{Name: s.Name, Namespace: s.Namespace, VIPs: vips, Waypoint: s.Waypoint}
			for _, p := range s.Ports {
				if p.Port == 0 || p.Port > 65535 || p.TargetPort > 65535 {
					bad(k, "port %d -> %d: out of range", p.Port, p.TargetPort)
					continue
				}
				svc.Ports = append(svc.Ports, ServicePort{Port: uint16(p.Port), TargetPort: uint16(p.TargetPort), TargetPortName: p.TargetPortName})
			}
			for _, e := range s.Endpoints {
				ip, err := netip.ParseAddr(e.Ip)
				if err != nil {
					bad(k, "endpoint %q: %v", e.Ip, err)
					continue
				}
				ep := Endpoint{IP: ip, Ready: e.Ready}
				for n, p := range e.Ports {
					if p == 0 || p > 65535 {
						continue
					}
					if ep.Ports == nil {
						ep.Ports = map[string]uint16{}
					}
					ep.Ports[n] = uint16(p)
				}
				svc.Endpoints = append(svc.Endpoints, ep)
			}
			m.Services = append(m.Services, svc)
		case r.GetPolicy() != nil:
			p := r.GetPolicy()
			pol, err := policypb.FromProto(p)
			if err != nil {
				bad(k, "%v", err)
				continue
			}
			m.Policies = append(m.Policies, pol)
		default:
			// A kind this ztunnel does not know (a newer controller): ignore.
		}
	}
	return m, errors.Join(errs...)
}

func parseIPs(ss []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("ip %q: %w", s, err)
		}
		out = append(out, ip)
	}
	return out, nil
}
