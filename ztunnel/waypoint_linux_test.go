package ztunnel

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/identity/identitytest"
	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/waypoint"
)

var (
	waypointIP  = ip("10.78.5.2") // the waypoint's pod (not enrolled), node2
	waypointVIP = ip("10.96.78.5")
)

const (
	// clientDeniedPort: the server's DENY names the client's principal;
	// the echo Service's port 81 leads to it.
	clientDeniedPort = 9091
	wpRef            = "demo/wp"
)

// bindToWaypoint puts the echo Service (the server pod) behind the
// waypoint demo/wp, whose Service has the one waypoint pod.
func bindToWaypoint(c *Config, ready bool) {
	c.Services = slices.Clone(c.Services)
	c.Services[0].Waypoint = wpRef
	c.Services[0].Ports = []ServicePort{{Port: 80, TargetPort: appPort}, {Port: 81, TargetPort: clientDeniedPort}}
	c.Services = append(c.Services, Service{Name: "wp", Namespace: "demo", VIPs: []netip.Addr{waypointVIP},
		Ports: []ServicePort{{Port: hbone.Port}}, Endpoints: []Endpoint{{IP: waypointIP, Ready: ready}}})
}

// startWaypoint runs a real waypoint (package waypoint) in the waypoint
// pod's netns on :15008, as spiffe://cluster.local/ns/demo/sa/wp, fronting
// the echo Service over TCP.
func startWaypoint(t *testing.T, n *testNet, ca *identitytest.CA) (wp *waypoint.Waypoint, stop func()) {
	t.Helper()
	wp, err := waypoint.New(waypoint.Options{
		Self:   wpRef,
		Certs:  identity.NewCertSource(ca.Issue(t, identity.MustParse("spiffe://cluster.local/ns/demo/sa/wp"))),
		Roots:  ca.Roots(),
		Logger: testLogger(t, "waypoint"),
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return n.dial("waypoint", netip.MustParseAddrPort(addr))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop = sync.OnceFunc(func() { wp.Close() })
	t.Cleanup(stop)
	server := "spiffe://cluster.local/ns/demo/sa/server"
	err = wp.SetConfig(&meshv1.WaypointConfig{Services: []*meshv1.Service{{
		Namespace: "demo", Name: "echo", Vips: []string{serviceVIP.String()}, Waypoint: wpRef,
		Ports:     []*meshv1.ServicePort{{Name: "tcp", Port: 80, TargetPort: appPort}, {Name: "tcp-denied", Port: 81, TargetPort: clientDeniedPort}},
		Endpoints: []*meshv1.Endpoint{{Ip: serverIP.String(), Ready: true, Enrolled: true, Identity: server}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := netns.Do(n.files["waypoint"], func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(waypointIP, hbone.Port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go wp.Serve(ln)
	return wp, stop
}

// TestWaypoint runs client pod → ztunnel (node1) → a real waypoint → ztunnel
// (node2) → app, over the eBPF redirection, and checks that nothing gets
// around the waypoint and that the destination trusts the caller it vouches
// for, and only from it.
func TestWaypoint(t *testing.T) {
	requireKernel(t)
	dir := t.TempDir()
	bpffs := testBPFFS(t, dir)
	n := newTestNet(t)
	n.addNetns("waypoint")
	n.wirePod("waypoint", "node2", waypointIP)
	run(t, "ip", "-n", n.names["node1"], "route", "add", "10.78.5.0/24", "via", node2Link)
	ca, certs := meshCA(t, dir, "demo/client", "demo/server")
	good := &identitytest.CA{Cert: ca.Cert, Key: ca.Key}
	for _, role := range []string{"server", "strict"} {
		n.echoServer(role, appPort)
		n.echoServer(role, clientDeniedPort)
	}
	wp, stopWaypoint := startWaypoint(t, n, good)

	clientID := identity.MustParse("spiffe://cluster.local/ns/demo/sa/client")
	serverID := identity.MustParse("spiffe://cluster.local/ns/demo/sa/server")
	cfg1, cfg2 := mesh(n, ca.Bundle, certs)
	bindToWaypoint(cfg1, true)
	bindToWaypoint(cfg2, true)
	// The server takes the client only (an ALLOW the waypoint's identity
	// does not match) and not on 9091 (a DENY on the client's principal);
	// the strict pod (not behind the waypoint) denies the client on 9091.
	server := map[string]string{"app": "echo"}
	cfg2.Pods[0].Labels, cfg2.Pods[1].Labels = server, map[string]string{"app": "strict"}
	cfg2.Policies = append(cfg2.Policies,
		Policy{Name: "allow-client", Namespace: "demo", Selector: server, Action: ActionAllow,
			Rules: []Rule{{From: []Source{{Principals: []identity.ID{clientID}}}}}},
		Policy{Name: "deny-client-9091", Namespace: "demo", Action: ActionDeny,
			Rules: []Rule{{From: []Source{{Principals: []identity.ID{clientID}}}, To: []Destination{{Ports: []uint16{clientDeniedPort}}}}}})
	node2 := startNode(t, n, bpffs, "node2", cfg2)
	node1 := startNode(t, n, bpffs, "node1", cfg1)
	wpTCP := func() float64 {
		return counter(t, wp.Registry(), "warren_waypoint_tcp_connections_opened_total", nil)
	}

	t.Run("VIP through the waypoint, the app sees the client pod", func(t *testing.T) {
		before := wpTCP()
		got, err := n.exchange("client", netip.AddrPortFrom(serviceVIP, 80))
		if err != nil {
			t.Fatal(err)
		}
		if got != "hello "+clientIP.String() {
			t.Errorf("greeting %q, want the client pod's address (Forwarded)", got)
		}
		if wpTCP() != before+1 {
			t.Errorf("the waypoint relayed %v connections, want 1", wpTCP()-before)
		}
		// The client's ztunnel counts it as going to the waypoint; the
		// server's as the client's (ALLOW client matched), via the waypoint.
		if !hasSeries(t, node1.reg, "warren_ztunnel_tcp_connections_opened_total", map[string]string{
			"direction": "outbound", "source_principal": clientID.String(), "destination_service": "demo/echo", "waypoint": wpRef}) {
			t.Error("node1: no outbound series to demo/echo through the waypoint")
		}
		waitFor(t, "node2's inbound series", func() bool {
			return hasSeries(t, node2.reg, "warren_ztunnel_tcp_connections_opened_total", map[string]string{
				"direction": "inbound", "source_principal": clientID.String(), "source_workload": "client", "destination_workload": "server", "waypoint": wpRef})
		})
	})
	t.Run("a DENY on the client's principal still denies behind the waypoint", func(t *testing.T) {
		before := refusals(node2.tun, "inbound", reasonPolicy)
		if got, err := n.exchange("client", netip.AddrPortFrom(serviceVIP, 81)); err == nil {
			t.Fatalf("denied port answered %q", got)
		}
		// The waypoint tries a TCP upstream twice: once or twice refused.
		waitFor(t, "the server's refusal", func() bool { return refusals(node2.tun, "inbound", reasonPolicy) > before })
	})
	t.Run("the pod IP goes to the waypoint too, not direct", func(t *testing.T) {
		// The waypoint fronts VIPs only for now: it answers 404, so the
		// connection fails; the server never sees a direct tunnel.
		refused := counter(t, wp.Registry(), "warren_waypoint_tunnels_refused_total", map[string]string{"reason": "unknown_service"})
		gate := refusals(node2.tun, "inbound", reasonWaypoint)
		if got, err := n.exchange("client", netip.AddrPortFrom(serverIP, appPort)); err == nil {
			t.Fatalf("pod IP answered %q around the waypoint", got)
		}
		waitFor(t, "the waypoint's refusal", func() bool {
			return counter(t, wp.Registry(), "warren_waypoint_tunnels_refused_total", map[string]string{"reason": "unknown_service"}) == refused+1
		})
		if refusals(node2.tun, "inbound", reasonWaypoint) != gate {
			t.Error("the client's ztunnel went to the server directly")
		}
	})
	// tunnel opens a tunnel to dst as the client (from the outsider's
	// netns) with hdr on the CONNECT, and reads the app's greeting.
	tunnel := func(dst netip.AddrPort, hdr http.Header) (string, error) {
		c, err := n.hboneDial(t, 5*time.Second, good.Issue(t, clientID), good.Roots(), clientID, serverID, dst, hdr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	forged := http.Header{hbone.HeaderCaller: {"spiffe://cluster.local/ns/demo/sa/admin"}, hbone.HeaderForwarded: {"for=10.78.9.9"}}
	t.Run("a direct tunnel to the bound pod is refused", func(t *testing.T) {
		refusedOnce(t, "the direct tunnel", node2.tun, reasonWaypoint, func() (string, error) {
			return tunnel(netip.AddrPortFrom(serverIP, appPort), nil)
		})
	})
	t.Run("forged caller headers to the bound pod change nothing", func(t *testing.T) {
		refusedOnce(t, "the forged tunnel", node2.tun, reasonWaypoint, func() (string, error) {
			return tunnel(netip.AddrPortFrom(serverIP, appPort), forged)
		})
	})
	t.Run("forged caller headers from a mesh client are ignored", func(t *testing.T) {
		// To the strict pod, not behind the waypoint: a DENY on the
		// client's principal still denies with another caller claimed,
		// and the app sees the real source, not the claimed one.
		refusedOnce(t, "the DENY with a forged caller", node2.tun, reasonPolicy, func() (string, error) {
			return tunnel(netip.AddrPortFrom(strictIP, clientDeniedPort), forged)
		})
		got, err := tunnel(netip.AddrPortFrom(strictIP, appPort), forged)
		if err != nil || got != "hello "+outsiderIP.String() {
			t.Errorf("greeting %q, %v: want the real source %v", got, err, outsiderIP)
		}
	})
	t.Run("plaintext to the bound pod is refused, PERMISSIVE or not", func(t *testing.T) {
		refusedOnce(t, "the plaintext", node2.tun, reasonWaypoint, func() (string, error) {
			return n.exchange("outsider", netip.AddrPortFrom(serverIP, appPort))
		})
	})
	t.Run("waypoint not ready: refused, never direct", func(t *testing.T) {
		m := Mesh{Workloads: cfg1.Workloads, Services: slices.Clone(cfg1.Services), Policies: cfg1.Policies}
		m.Services[len(m.Services)-1].Endpoints = []Endpoint{{IP: waypointIP}}
		if err := node1.tun.SetMesh(m); err != nil {
			t.Fatal(err)
		}
		before, wpBefore := refusals(node1.tun, "outbound", reasonRoute), wpTCP()
		gate := refusals(node2.tun, "inbound", reasonWaypoint)
		if got, err := n.exchange("client", netip.AddrPortFrom(serviceVIP, 80)); err == nil {
			t.Fatalf("answered %q without a ready waypoint", got)
		}
		countedOnce(t, "the route refusal", node1.tun, "outbound", reasonRoute, before)
		if wpTCP() != wpBefore || refusals(node2.tun, "inbound", reasonWaypoint) != gate {
			t.Error("the connection left the client's node")
		}
	})
	t.Run("waypoint gone: refused, never direct", func(t *testing.T) {
		m := Mesh{Workloads: cfg1.Workloads, Services: cfg1.Services, Policies: cfg1.Policies}
		if err := node1.tun.SetMesh(m); err != nil {
			t.Fatal(err)
		}
		stopWaypoint()
		before := refusals(node1.tun, "outbound", reasonHBONE)
		gate := refusals(node2.tun, "inbound", reasonWaypoint)
		if got, err := n.exchange("client", netip.AddrPortFrom(serviceVIP, 80)); err == nil {
			t.Fatalf("answered %q without the waypoint", got)
		}
		countedOnce(t, "the failed tunnel", node1.tun, "outbound", reasonHBONE, before)
		if refusals(node2.tun, "inbound", reasonWaypoint) != gate {
			t.Error("the client's ztunnel went to the server directly")
		}
	})
}
