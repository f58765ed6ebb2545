package ztunnel

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
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

// ControlPlane is the ztunnel's client of the controller (api/proto/mesh/v1):
// it subscribes to its node's view, turns every update into a Mesh, hands
// it to the tunnel and acks or nacks it; and it sends the local identities'
// CSRs to the CA. Calls carry the pod's service account token, read from
// TokenFile at each call (the kubelet rotates it).
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

	once   sync.Once
	conn   *grpc.ClientConn
	client meshv1.DistributionClient
	err    error
}

func (cp *ControlPlane) dial() (meshv1.DistributionClient, error) {
	cp.once.Do(func() {
		if cp.Log == nil {
			cp.Log = slog.New(slog.DiscardHandler)
		}
		name := cp.ServerName
		if name == "" {
			host, _, err := net.SplitHostPort(cp.Addr)
			if err != nil {
				cp.err = fmt.Errorf("controller address %q: %w", cp.Addr, err)
				return
			}
			name = host
		}
		tc := &tls.Config{
			MinVersion: tls.VersionTLS13,
			// The roots can change while the connection lives (the CA
			// answers with its current ones), so verify by hand against
			// the roots in force at each handshake.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("controller sent no certificate")
				}
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: cp.Roots.Load(), Intermediates: inter, DNSName: name})
				if err != nil {
					return fmt.Errorf("controller certificate: %w", err)
				}
				return nil
			},
		}
		cp.conn, cp.err = grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			grpc.WithPerRPCCredentials(tokenFile(cp.TokenFile)))
		if cp.err == nil {
			cp.client = meshv1.NewDistributionClient(cp.conn)
		}
	})
	return cp.client, cp.err
}

// Close ends the connection to the controller.
func (cp *ControlPlane) Close() error {
	if cp.conn != nil {
		return cp.conn.Close()
	}
	return nil
}

// tokenFile is a bearer token read from a file at every call.
type tokenFile string

func (f tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("service account token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + strings.TrimSpace(string(b))}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }

// Sign implements SignFunc with the controller's CA.
func (cp *ControlPlane) Sign(ctx context.Context, csrPEM []byte) ([]byte, []byte, error) {
	cl, err := cp.dial()
	if err != nil {
		return nil, nil, err
	}
	resp, err := cl.SignCertificate(ctx, &meshv1.SignRequest{Csr: csrPEM})
	if err != nil {
		return nil, nil, fmt.Errorf("controller CA: %w", err)
	}
	return resp.Chain, resp.Roots, nil
}

// Run subscribes until ctx ends, reconnecting with backoff. Every update is
// applied on top of what was last accepted and handed to apply as a whole
// Mesh: nil acks it; an error nacks it, and the previous state stays (the
// controller sends the refused resources again with its next change).
func (cp *ControlPlane) Run(ctx context.Context, apply func(Mesh) error) error {
	cl, err := cp.dial()
	if err != nil {
		return err
	}
	maxWait := cmp.Or(cp.MaxBackoff, 10*time.Second)
	wait := 200 * time.Millisecond
	for {
		start := time.Now()
		err := cp.subscribe(ctx, cl, apply)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			wait = 200 * time.Millisecond // it had worked for a while
		}
		cp.Log.Warn("controller stream ended, reconnecting", "addr", cp.Addr, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

func (cp *ControlPlane) subscribe(ctx context.Context, cl meshv1.DistributionClient, apply func(Mesh) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cl.Subscribe(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: &meshv1.Hello{Node: cp.Node}}}); err != nil {
		return err
	}
	var held map[string]*meshv1.Resource
	for {
		u, err := st.Recv()
		if err != nil {
			return err
		}
		next := map[string]*meshv1.Resource{}
		if !u.Snapshot {
			if held == nil {
				return errors.New("first update of the stream is not a snapshot")
			}
			next = maps.Clone(held)
		}
		for _, k := range u.Removals {
			delete(next, k)
		}
		for _, r := range u.Upserts {
			next[r.Key] = r
		}
		m, err := MeshFromResources(next, cp.TrustDomain, cp.Node)
		if err == nil {
			err = apply(m)
		}
		var req *meshv1.SubscribeRequest
		if err != nil {
			cp.Log.Warn("configuration refused", "version", u.Version, "err", err)
			req = &meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Nack{Nack: &meshv1.Nack{Version: u.Version, Error: err.Error()}}}
			if held == nil {
				held = map[string]*meshv1.Resource{} // a snapshot was seen
			}
		} else {
			held = next
			cp.Log.Debug("configuration applied", "version", u.Version, "snapshot", u.Snapshot,
				"workloads", len(m.Workloads), "services", len(m.Services), "policies", len(m.Policies))
			req = &meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Ack{Ack: &meshv1.Ack{Version: u.Version}}}
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
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
