package ztunnel

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/identity"
)

func testConfig(t *testing.T, mutate func(*Config)) *State {
	t.Helper()
	c := &Config{
		Node: "node1", PinDir: "/sys/fs/bpf/warren/node1", CABundle: "ca.pem",
		Certs: map[string]CertPair{"demo/client": {"c.pem", "c.key"}, "demo/server": {"s.pem", "s.key"}},
		Pods: []LocalPod{
			{UID: "c1", Netns: "/run/netns/c", Workload: Workload{Name: "client", Namespace: "demo", ServiceAccount: "client", IPs: []netip.Addr{ip("10.0.1.2")}}},
			{UID: "s1", Netns: "/run/netns/s", Workload: Workload{Name: "server", Namespace: "demo", ServiceAccount: "server", IPs: []netip.Addr{ip("10.0.1.3")}, Labels: map[string]string{"app": "echo"}}},
		},
		Workloads: []Workload{
			{Name: "remote", Namespace: "demo", ServiceAccount: "server", IPs: []netip.Addr{ip("10.0.2.2"), ip("fd00::2")}, Enrolled: true},
			{Name: "legacy", Namespace: "other", IPs: []netip.Addr{ip("10.0.2.9")}},
		},
		Services: []Service{
			{Name: "echo", Namespace: "demo", VIPs: []netip.Addr{ip("10.96.0.20")}, Ports: []ServicePort{{Port: 80, TargetPort: 8080}, {Port: 81}},
				Endpoints: []Endpoint{{IP: ip("10.0.2.2"), Ready: true}, {IP: ip("10.0.1.3"), Ready: true}, {IP: ip("10.0.2.7"), Ready: false}}},
			{Name: "legacy", Namespace: "other", VIPs: []netip.Addr{ip("10.96.0.30")}, Ports: []ServicePort{{Port: 80, TargetPort: 8080}},
				Endpoints: []Endpoint{{IP: ip("10.0.2.9"), Ready: true}}},
			{Name: "empty", Namespace: "demo", VIPs: []netip.Addr{ip("10.96.0.40")}, Ports: []ServicePort{{Port: 80}}, Endpoints: []Endpoint{{IP: ip("10.0.2.2")}}},
		},
	}
	if mutate != nil {
		mutate(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return NewState(c)
}

func ip(s string) netip.Addr     { return netip.MustParseAddr(s) }
func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func refuseNonMesh(c *Config)    { c.NonMesh = NonMeshRefuse }
func strict(c *Config)           { c.Mode = ModeStrict }
func withPolicies(ps ...Policy) func(*Config) {
	return func(c *Config) { c.Policies = ps }
}

func TestRoute(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mutate   func(*Config)
		orig     string
		seq      uint64
		kind     PlanKind
		dst      string
		tunnel   string
		reason   string
		waypoint string
	}{
		{name: "pod IP in the mesh", orig: "10.0.2.2:8080", kind: PlanHBONE, dst: "10.0.2.2:8080", tunnel: "10.0.2.2:15008"},
		{name: "v6 pod IP in the mesh", orig: "[fd00::2]:8080", kind: PlanHBONE, dst: "[fd00::2]:8080", tunnel: "[fd00::2]:15008"},
		{name: "v4-mapped is the v4 pod", orig: "[::ffff:10.0.2.2]:9", kind: PlanHBONE, dst: "10.0.2.2:9", tunnel: "10.0.2.2:15008"},
		{name: "local pod goes over HBONE too", orig: "10.0.1.3:8080", kind: PlanHBONE, dst: "10.0.1.3:8080", tunnel: "10.0.1.3:15008"},
		{name: "VIP first endpoint", orig: "10.96.0.20:80", seq: 0, kind: PlanHBONE, dst: "10.0.2.2:8080", tunnel: "10.0.2.2:15008"},
		{name: "VIP round robin skips unready", orig: "10.96.0.20:80", seq: 1, kind: PlanHBONE, dst: "10.0.1.3:8080", tunnel: "10.0.1.3:15008"},
		{name: "VIP round robin wraps", orig: "10.96.0.20:80", seq: 2, kind: PlanHBONE, dst: "10.0.2.2:8080"},
		{name: "VIP port without target port", orig: "10.96.0.20:81", kind: PlanHBONE, dst: "10.0.2.2:81"},
		{name: "VIP unknown port", orig: "10.96.0.20:82", kind: PlanRefuse, reason: "no port 82"},
		{name: "VIP without ready endpoint", orig: "10.96.0.40:80", kind: PlanRefuse, reason: "no ready endpoint"},
		{name: "VIP of non-mesh endpoints passes through", orig: "10.96.0.30:80", kind: PlanPassthrough, dst: "10.0.2.9:8080"},
		{name: "non-enrolled workload passes through", orig: "10.0.2.9:8080", kind: PlanPassthrough, dst: "10.0.2.9:8080"},
		{name: "unknown address passes through", orig: "192.0.2.1:443", kind: PlanPassthrough, dst: "192.0.2.1:443"},
		{name: "unknown address refused by config", mutate: refuseNonMesh, orig: "192.0.2.1:443", kind: PlanRefuse, reason: "outside the mesh"},
		{name: "mesh still HBONE when non-mesh refused", mutate: refuseNonMesh, orig: "10.0.2.2:8080", kind: PlanHBONE, dst: "10.0.2.2:8080"},
		{name: "own address, direct", orig: "10.0.1.2:8080", kind: PlanPassthrough, dst: "10.0.1.2:8080"},
		{name: "own address through a Service, direct even when non-mesh is refused", mutate: func(c *Config) {
			c.NonMesh = NonMeshRefuse
			c.Services = append(c.Services, Service{Name: "self", Namespace: "demo", VIPs: []netip.Addr{ip("10.96.0.50")},
				Ports: []ServicePort{{Port: 80, TargetPort: 8080}}, Endpoints: []Endpoint{{IP: ip("10.0.1.2"), Ready: true}}})
		}, orig: "10.96.0.50:80", kind: PlanPassthrough, dst: "10.0.1.2:8080"},
		// Waypoint-bound: one tunnel to a ready waypoint pod, the original
		// destination as authority, never around the waypoint.
		{name: "waypoint: bound VIP", mutate: bindEcho, orig: "10.96.0.20:80", kind: PlanWaypoint, dst: "10.96.0.20:80", tunnel: "10.0.3.2:15008", waypoint: wpID},
		{name: "waypoint: round robin over ready waypoint pods", mutate: bindEcho, orig: "10.96.0.20:80", seq: 1, kind: PlanWaypoint, dst: "10.96.0.20:80", tunnel: "10.0.3.4:15008"},
		{name: "waypoint: unknown port of a bound VIP refused", mutate: bindEcho, orig: "10.96.0.20:82", kind: PlanRefuse, reason: "no port 82"},
		{name: "waypoint: pod IP of a bound endpoint", mutate: bindEcho, orig: "10.0.2.2:8080", kind: PlanWaypoint, dst: "10.0.2.2:8080", tunnel: "10.0.3.2:15008", waypoint: wpID},
		{name: "waypoint: v6 pod IP of a bound endpoint", mutate: bindEcho, orig: "[fd00::2]:8080", kind: PlanWaypoint, dst: "[fd00::2]:8080", tunnel: "10.0.3.2:15008"},
		{name: "waypoint: unready endpoint's pod IP too", mutate: bindEcho, orig: "10.0.2.7:8080", kind: PlanWaypoint, tunnel: "10.0.3.2:15008"},
		{name: "waypoint: own address stays direct", mutate: func(c *Config) {
			bindEcho(c)
			c.Services[0].Endpoints = append(c.Services[0].Endpoints, Endpoint{IP: ip("10.0.1.2"), Ready: true})
		}, orig: "10.0.1.2:8080", kind: PlanPassthrough, dst: "10.0.1.2:8080"},
		{name: "waypoint: unbound service direct as before", mutate: bindEcho, orig: "10.96.0.30:80", kind: PlanPassthrough, dst: "10.0.2.9:8080"},
		{name: "waypoint: its own Service never loops to itself", mutate: func(c *Config) {
			bindEcho(c)
			c.Services[3].Waypoint = "demo/wp"
		}, orig: "10.96.0.60:15008", kind: PlanPassthrough, dst: "10.0.3.2:15008"},
		{name: "waypoint: the waypoint itself goes direct", mutate: func(c *Config) {
			bindEcho(c)
			c.Pods[0].ServiceAccount, c.Certs["demo/wp"] = "wp", CertPair{"w.pem", "w.key"}
		}, orig: "10.96.0.20:80", kind: PlanHBONE, dst: "10.0.2.2:8080"},
		{name: "waypoint without ready pod: refused, not direct", mutate: func(c *Config) {
			bindEcho(c)
			for i := range c.Services[3].Endpoints {
				c.Services[3].Endpoints[i].Ready = false
			}
		}, orig: "10.96.0.20:80", kind: PlanRefuse, reason: "waypoint demo/wp of service demo/echo has no ready endpoint"},
		{name: "waypoint without ready pod: pod IP refused too", mutate: func(c *Config) {
			bindEcho(c)
			c.Services[3].Endpoints = nil
		}, orig: "10.0.2.2:8080", kind: PlanRefuse, reason: "no ready endpoint"},
		{name: "waypoint not in the configuration: refused", mutate: func(c *Config) {
			bindEcho(c)
			c.Services = c.Services[:3]
		}, orig: "10.96.0.20:80", kind: PlanRefuse, reason: "not in the configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := testConfig(t, tc.mutate)
			src := &st.cfg.Pods[0].Workload
			p := Route(st, src, ap(tc.orig), tc.seq)
			if p.Kind != tc.kind {
				t.Fatalf("kind %v, want %v (%+v)", p.Kind, tc.kind, p)
			}
			if tc.dst != "" && p.Dst != ap(tc.dst) {
				t.Errorf("dst %v, want %v", p.Dst, tc.dst)
			}
			if tc.tunnel != "" && p.Tunnel != ap(tc.tunnel) {
				t.Errorf("tunnel %v, want %v", p.Tunnel, tc.tunnel)
			}
			if !strings.Contains(p.Reason, tc.reason) {
				t.Errorf("reason %q, want %q in it", p.Reason, tc.reason)
			}
			if p.Kind == PlanHBONE && p.Workload.Identity().String() == "" {
				t.Error("HBONE plan without destination identity")
			}
			if tc.waypoint != "" && p.Waypoint.String() != tc.waypoint {
				t.Errorf("waypoint identity %v, want %s", p.Waypoint, tc.waypoint)
			}
			if p.Kind == PlanWaypoint && p.Waypoint.IsZero() {
				t.Error("waypoint plan without the waypoint's identity")
			}
		})
	}
}

const wpID = "spiffe://cluster.local/ns/demo/sa/wp"

// bindEcho puts demo/echo behind the waypoint demo/wp, whose Service (VIP
// 10.96.0.60) has two ready pods and one not ready, none enrolled.
func bindEcho(c *Config) {
	c.Services[0].Waypoint = "demo/wp"
	c.Services = append(c.Services, Service{Name: "wp", Namespace: "demo", VIPs: []netip.Addr{ip("10.96.0.60")}, Ports: []ServicePort{{Port: 15008}},
		Endpoints: []Endpoint{{IP: ip("10.0.3.2"), Ready: true}, {IP: ip("10.0.3.3")}, {IP: ip("10.0.3.4"), Ready: true}}})
}

func TestWaypointGate(t *testing.T) {
	client := mustID("spiffe://cluster.local/ns/demo/sa/client")
	other := mustID("spiffe://cluster.local/ns/demo/sa/other-wp")
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		pod    int
		in     Inbound
		reason string // "" allowed
	}{
		{name: "unbound pod: direct tunnel", pod: 1, in: Inbound{Peer: client, Port: 8080}},
		{name: "unbound pod: plaintext", pod: 1, in: Inbound{Plaintext: true, Port: 8080}},
		{name: "bound pod: its waypoint", mutate: bindEcho, pod: 1, in: Inbound{Peer: client, Via: mustID(wpID), Port: 8080}},
		{name: "bound pod: direct tunnel refused", mutate: bindEcho, pod: 1, in: Inbound{Peer: client, Port: 8080}, reason: "not through its waypoint [demo/wp]"},
		{name: "bound pod: plaintext refused even in PERMISSIVE", mutate: bindEcho, pod: 1, in: Inbound{Plaintext: true, Port: 8080}, reason: "plaintext refused"},
		{name: "bound pod: another waypoint refused", mutate: bindEcho, pod: 1, in: Inbound{Peer: client, Via: other, Port: 8080}, reason: "not by its waypoint"},
		{name: "bound pod: the waypoint as a plain caller refused", mutate: bindEcho, pod: 1, in: Inbound{Peer: mustID(wpID), Port: 8080}, reason: "not through"},
		{name: "bound elsewhere: another pod unaffected", mutate: bindEcho, pod: 0, in: Inbound{Peer: client, Port: 8080}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := testConfig(t, func(c *Config) {
				// The server pod backs demo/echo.
				if tc.mutate != nil {
					tc.mutate(c)
				}
			})
			got := WaypointGate(st, &st.cfg.Pods[tc.pod], tc.in)
			if (got == "") != (tc.reason == "") || !strings.Contains(got, tc.reason) {
				t.Errorf("WaypointGate = %q, want %q", got, tc.reason)
			}
		})
	}
	st := testConfig(t, bindEcho)
	if !st.IsWaypoint(mustID(wpID)) || st.IsWaypoint(client) {
		t.Error("IsWaypoint: want the waypoint's identity only")
	}
	// A Service that becomes bound closes the direct connections open to
	// its pods (SetMesh's sweep asks denied), not those its waypoint carries.
	direct := &authorizedConn{pod: &st.cfg.Pods[1], in: Inbound{Peer: client, Port: 8080}}
	if denied(testConfig(t, nil), direct) != "" || denied(st, direct) == "" {
		t.Error("denied: a direct connection must stand unbound and fall once bound")
	}
	if via := (&authorizedConn{pod: &st.cfg.Pods[1], in: Inbound{Peer: client, Via: mustID(wpID), Port: 8080}}); denied(st, via) != "" {
		t.Error("denied: the waypoint's connection must stand")
	}
}

func TestAuthorize(t *testing.T) {
	client := "spiffe://cluster.local/ns/demo/sa/client"
	other := "spiffe://cluster.local/ns/other/sa/x"
	peer := func(s string) Inbound {
		in := Inbound{Port: 8080}
		if s != "" {
			in.Peer = mustID(s)
		} else {
			in.Plaintext = true
		}
		return in
	}
	allowClient := Policy{Name: "allow-client", Namespace: "demo", Action: ActionAllow, Rules: []Rule{{From: []Source{{Principals: []identity.ID{mustID(client)}}}}}}
	denyClient := Policy{Name: "deny-client", Namespace: "demo", Selector: map[string]string{"app": "echo"}, Action: ActionDeny, Rules: []Rule{{From: []Source{{Principals: []identity.ID{mustID(client)}}}}}}
	denyPort := Policy{Name: "deny-9000", Namespace: "demo", Action: ActionDeny, Rules: []Rule{{To: []Destination{{Ports: []uint16{9000}}}}}}
	allowNS := Policy{Name: "allow-other-ns", Namespace: "demo", Action: ActionAllow, Rules: []Rule{{From: []Source{{Namespaces: []string{"other"}}}}}}
	meshDeny := Policy{Name: "mesh-deny-other", Namespace: "warren-system", Action: ActionDeny, Rules: []Rule{{From: []Source{{Namespaces: []string{"other"}}}}}}
	otherSel := Policy{Name: "other-app", Namespace: "demo", Selector: map[string]string{"app": "nope"}, Action: ActionAllow}
	allowNothing := Policy{Name: "allow-nothing", Namespace: "demo", Action: ActionAllow}
	denyNothing := Policy{Name: "deny-nothing", Namespace: "demo", Action: ActionDeny}
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		in      Inbound
		allowed bool
		policy  string
	}{
		{name: "no policy: allowed", in: peer(client), allowed: true},
		{name: "permissive plaintext: allowed", in: peer(""), allowed: true},
		{name: "strict plaintext: refused", mutate: strict, in: peer("")},
		{name: "strict mTLS: allowed", mutate: strict, in: peer(client), allowed: true},
		{name: "pod mode beats default", mutate: func(c *Config) { c.Pods[1].Mode = ModeStrict }, in: peer("")},
		{name: "allow matches", mutate: withPolicies(allowClient), in: peer(client), allowed: true, policy: "demo/allow-client"},
		{name: "allow selects, other peer refused", mutate: withPolicies(allowClient), in: peer(other)},
		{name: "allow refuses plaintext (no identity)", mutate: withPolicies(allowClient), in: peer("")},
		{name: "deny wins over allow", mutate: withPolicies(allowClient, denyClient), in: peer(client), policy: "demo/deny-client"},
		{name: "deny wins whatever the order", mutate: withPolicies(denyClient, allowClient), in: peer(client), policy: "demo/deny-client"},
		{name: "deny by port", mutate: withPolicies(denyPort), in: Inbound{Peer: mustID(client), Port: 9000}, policy: "demo/deny-9000"},
		{name: "deny by port spares other ports", mutate: withPolicies(denyPort), in: peer(client), allowed: true},
		{name: "deny by port hits plaintext too", mutate: withPolicies(denyPort), in: Inbound{Plaintext: true, Port: 9000}, policy: "demo/deny-9000"},
		{name: "allow by namespace", mutate: withPolicies(allowNS), in: peer(other), allowed: true, policy: "demo/allow-other-ns"},
		{name: "mesh-wide deny", mutate: withPolicies(allowNS, meshDeny), in: peer(other), policy: "warren-system/mesh-deny-other"},
		{name: "selector not matching: not applied", mutate: withPolicies(otherSel), in: peer(other), allowed: true},
		{name: "allow with no rules allows nothing", mutate: withPolicies(allowNothing), in: peer(client)},
		{name: "deny with no rules denies nothing", mutate: withPolicies(denyNothing), in: peer(client), allowed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := testConfig(t, tc.mutate)
			d := Authorize(st, &st.cfg.Pods[1], tc.in)
			if d.Allowed != tc.allowed || d.Policy != tc.policy {
				t.Errorf("got %+v, want allowed=%v policy=%q", d, tc.allowed, tc.policy)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"duplicate IP", func(c *Config) { c.Workloads[1].IPs = c.Workloads[0].IPs }, "also demo/remote"},
		{"bad mode", func(c *Config) { c.Mode = "OFF" }, `mode: "OFF"`},
		{"bad action", withPolicies(Policy{Name: "p", Namespace: "demo", Action: "AUDIT"}), `action "AUDIT"`},
		{"bad principal", withPolicies(Policy{Name: "p", Namespace: "demo", Action: ActionDeny, Rules: []Rule{{From: []Source{{Principals: []identity.ID{{TrustDomain: "x", Namespace: "y"}}}}}}}), "principal"},
		{"empty source", withPolicies(Policy{Name: "p", Namespace: "demo", Action: ActionDeny, Rules: []Rule{{From: []Source{{}}}}}), "principals or namespaces required"},
		{"no certificate", func(c *Config) { delete(c.Certs, "demo/client") }, "certs: no certificate for demo/client"},
		{"no netns", func(c *Config) { c.Pods[0].Netns = "" }, "netns: required"},
		{"non-mesh knob", func(c *Config) { c.NonMesh = "drop" }, "nonMesh"},
		{"hbone limits", func(c *Config) { c.HBONE.StreamWindow = 1000 }, "hbone: "},
		{"waypoint reference", func(c *Config) { c.Services[0].Waypoint = "wp" }, `services demo/echo: waypoint "wp": want <namespace>/<name>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t, nil).cfg
			tc.mutate(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v, want %q in it", err, tc.want)
			}
		})
	}
}

func mustID(s string) identity.ID { return identity.MustParse(s) }
