package ztunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/identity/identitytest"
	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/netns/netnstest"
	"github.com/warrenmesh/warren/nodeagent"
	"github.com/warrenmesh/warren/ztunnel/ztunneltest"
)

// The tunnel switches network namespaces on other threads only.
func init() { runtime.LockOSThread() }

func requireKernel(tb testing.TB) {
	tb.Helper()
	netnstest.RequireKernel(tb, "attaches eBPF programs and creates network namespaces")
	if _, err := exec.LookPath("tcpdump"); err != nil {
		tb.Skip("tcpdump not installed (hack/deps.sh installs it)")
	}
}

// Addresses of the test's namespaces (10.78.0.0/16; nothing else routes there).
var (
	node1Link, node2Link = "10.78.0.1", "10.78.0.2"
	clientIP             = ip("10.78.1.2") // enrolled, node1
	serverIP             = ip("10.78.2.2") // enrolled, node2, PERMISSIVE
	strictIP             = ip("10.78.4.2") // enrolled, node2, STRICT
	outsiderIP           = ip("10.78.3.2") // not in the mesh, node1
	serviceVIP           = ip("10.96.78.1")
	clientServiceVIP     = ip("10.96.78.2") // its one endpoint is the client pod
	// IPv6 (fd78::/16): the client, the server and the outsider are dual-stack.
	clientIP6   = ip("fd78:1::2")
	serverIP6   = ip("fd78:2::2")
	outsiderIP6 = ip("fd78:3::2")
)

// ip6Of is a dual-stack pod's IPv6 address, by its IPv4 one.
var ip6Of = map[netip.Addr]netip.Addr{clientIP: clientIP6, serverIP: serverIP6, outsiderIP: outsiderIP6}

const (
	appPort    = 8080
	deniedPort = 9090 // a DENY policy covers it on the server
	marker     = "warren-plaintext-marker-7f3a"
)

type testNet struct {
	tb    testing.TB
	names map[string]string // role -> netns name
	files map[string]*os.File
}

func (n *testNet) path(role string) string { return filepath.Join(netns.RunDir, n.names[role]) }

func run(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newTestNet builds two nodes joined by a veth, with pods on veths to their
// node, routed without NAT as a cluster's pod network is.
func newTestNet(tb testing.TB) *testNet {
	n := &testNet{tb: tb, names: map[string]string{}, files: map[string]*os.File{}}
	for _, role := range []string{"node1", "node2", "client", "server", "strict", "outsider"} {
		n.addNetns(role)
	}
	run(tb, "ip", "link", "add", "to-node2", "netns", n.names["node1"], "type", "veth", "peer", "name", "to-node1", "netns", n.names["node2"])
	run(tb, "ip", "-n", n.names["node1"], "addr", "add", node1Link+"/30", "dev", "to-node2")
	run(tb, "ip", "-n", n.names["node2"], "addr", "add", node2Link+"/30", "dev", "to-node1")
	run(tb, "ip", "-n", n.names["node1"], "link", "set", "to-node2", "up")
	run(tb, "ip", "-n", n.names["node2"], "link", "set", "to-node1", "up")
	for _, p := range []struct {
		role, node string
		ip         netip.Addr
	}{{"client", "node1", clientIP}, {"outsider", "node1", outsiderIP}, {"server", "node2", serverIP}, {"strict", "node2", strictIP}} {
		n.wirePod(p.role, p.node, p.ip)
	}
	run(tb, "ip", "-n", n.names["node1"], "addr", "add", "fd79::1/64", "dev", "to-node2", "nodad")
	run(tb, "ip", "-n", n.names["node2"], "addr", "add", "fd79::2/64", "dev", "to-node1", "nodad")
	run(tb, "ip", "-n", n.names["node1"], "-6", "route", "add", "fd78:2::/64", "via", "fd79::2")
	run(tb, "ip", "-n", n.names["node2"], "-6", "route", "add", "fd78:1::/64", "via", "fd79::1")
	run(tb, "ip", "-n", n.names["node2"], "-6", "route", "add", "fd78:3::/64", "via", "fd79::1")
	run(tb, "ip", "-n", n.names["node1"], "route", "add", "10.78.2.0/24", "via", node2Link)
	run(tb, "ip", "-n", n.names["node1"], "route", "add", "10.78.4.0/24", "via", node2Link)
	run(tb, "ip", "-n", n.names["node2"], "route", "add", "10.78.1.0/24", "via", node1Link)
	run(tb, "ip", "-n", n.names["node2"], "route", "add", "10.78.3.0/24", "via", node1Link)
	for _, node := range []string{"node1", "node2"} {
		run(tb, "ip", "netns", "exec", n.names[node], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	}
	return n
}

// addNetns makes the network namespace of a role, removed at cleanup.
func (n *testNet) addNetns(role string) {
	tb := n.tb
	name := fmt.Sprintf("wzt-%d-%s", os.Getpid(), role)
	f, err := netns.Add(name)
	if err != nil {
		tb.Fatal(err)
	}
	n.names[role], n.files[role] = name, f
	tb.Cleanup(func() {
		f.Close()
		if err := netns.Delete(name); err != nil {
			tb.Error(err)
		}
	})
}

// wirePod joins a pod's netns to its node by a veth, in its own /24 (and
// /64 when dual-stack), the node's side as the pod's gateway.
func (n *testNet) wirePod(role, node string, ip netip.Addr) {
	tb := n.tb
	gw := ip.As4()
	gw[3] = 1
	gwIP := netip.AddrFrom4(gw).String()
	run(tb, "ip", "link", "add", role, "netns", n.names[node], "type", "veth", "peer", "name", "eth0", "netns", n.names[role])
	run(tb, "ip", "-n", n.names[node], "addr", "add", gwIP+"/24", "dev", role)
	run(tb, "ip", "-n", n.names[node], "link", "set", role, "up")
	run(tb, "ip", "-n", n.names[role], "addr", "add", ip.String()+"/24", "dev", "eth0")
	run(tb, "ip", "-n", n.names[role], "link", "set", "eth0", "up")
	run(tb, "ip", "-n", n.names[role], "route", "add", "default", "via", gwIP)
	if v6, ok := ip6Of[ip]; ok {
		gw6 := v6.As16()
		gw6[15] = 1
		gw6IP := netip.AddrFrom16(gw6).String()
		run(tb, "ip", "-n", n.names[node], "addr", "add", gw6IP+"/64", "dev", role, "nodad")
		run(tb, "ip", "-n", n.names[role], "addr", "add", v6.String()+"/64", "dev", "eth0", "nodad")
		run(tb, "ip", "-n", n.names[role], "-6", "route", "add", "default", "via", gw6IP)
	}
}

// echoServer answers every connection with "hello <client address>" and then
// echoes lines back.
func (n *testNet) echoServer(role string, port int) {
	n.tb.Helper()
	var ln net.Listener
	if err := netns.Do(n.files[role], func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		n.tb.Fatal(err)
	}
	n.tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "hello %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
				io.Copy(c, c)
			}()
		}
	}()
}

// dial connects from a pod's netns, as its app would (plain connect()).
func (n *testNet) dial(role string, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(n.files[role], func() (err error) {
		c, err = net.DialTimeout("tcp", dst.String(), 2*time.Second)
		return err
	})
	return c, err
}

// exchange dials dst from role, sends a line (the marker from mesh pods) and
// returns the greeting once the line came back.
func (n *testNet) exchange(role string, dst netip.AddrPort) (greeting string, err error) {
	payload := marker
	if role == "outsider" {
		payload = "from outside the mesh, plaintext by design"
	}
	c, err := n.dial(role, dst)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", payload); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	greeting, err = r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("greeting: %w", err)
	}
	echo, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("echo: %w", err)
	}
	if echo != payload+"\n" {
		return "", fmt.Errorf("echo %q", echo)
	}
	return strings.TrimSpace(greeting), nil
}

type testNode struct {
	kernel *nodeagent.Kernel
	tun    *Tunnel
	pinDir string
	reg    *prometheus.Registry
	stop   func()
}

// startNode opens the node's eBPF dataplane (its own pins), enrolls its pods
// and starts its ztunnel in this process.
func startNode(t *testing.T, n *testNet, bpffs, name string, cfg *Config) *testNode {
	t.Helper()
	k := openAgent(t, bpffs, name)
	for _, p := range cfg.Pods {
		if err := k.Enroll(context.Background(), nodeagent.Pod{UID: p.UID, Netns: p.Netns, IPs: p.IPs}); err != nil {
			t.Fatal(err)
		}
	}
	cfg.PinDir = filepath.Join(bpffs, "warren", name)
	reg := prometheus.NewRegistry()
	tun, err := New(cfg, Options{Logger: testLogger(t, name), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tun.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("ztunnel %s: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for !tun.ready.Load() {
		select {
		case err := <-done:
			t.Fatalf("ztunnel %s: %v", name, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ztunnel %s not ready", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &testNode{kernel: k, tun: tun, pinDir: cfg.PinDir, reg: reg, stop: stop}
}

func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("who", name)
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// mesh returns the two nodes' configurations over one CA.
func mesh(n *testNet, bundle string, certs map[string]CertPair) (node1, node2 *Config) {
	wl := func(name, sa string, ip netip.Addr, node string, enrolled bool) Workload {
		ips := []netip.Addr{ip}
		if v6, ok := ip6Of[ip]; ok {
			ips = append(ips, v6)
		}
		return Workload{Name: name, Namespace: "demo", ServiceAccount: sa, IPs: ips, Node: node, Enrolled: enrolled}
	}
	client := wl("client", "client", clientIP, "node1", true)
	server := wl("server", "server", serverIP, "node2", true)
	strictW := wl("strict", "server", strictIP, "node2", true)
	outsider := wl("outsider", "default", outsiderIP, "node1", false)
	services := []Service{{Name: "echo", Namespace: "demo", VIPs: []netip.Addr{serviceVIP}, Ports: []ServicePort{{Port: 80, TargetPort: appPort}},
		Endpoints: []Endpoint{{IP: serverIP, Ready: true}}},
		{Name: "client", Namespace: "demo", VIPs: []netip.Addr{clientServiceVIP}, Ports: []ServicePort{{Port: 80, TargetPort: appPort}},
			Endpoints: []Endpoint{{IP: clientIP, Ready: true}}}}
	base := func(node string) *Config {
		return &Config{Node: node, CABundle: bundle, Certs: certs, Services: services}
	}
	node1 = base("node1")
	node1.Pods = []LocalPod{{UID: "client-uid", Netns: n.path("client"), Workload: client}}
	node1.Workloads = []Workload{server, strictW, outsider}
	node2 = base("node2")
	node2.Pods = []LocalPod{
		{UID: "server-uid", Netns: n.path("server"), Workload: server},
		{UID: "strict-uid", Netns: n.path("strict"), Workload: strictW, Mode: ModeStrict},
	}
	node2.Workloads = []Workload{client, outsider}
	node2.Policies = []Policy{{Name: "deny-9090", Namespace: "demo", Action: ActionDeny, Rules: []Rule{{To: []Destination{{Ports: []uint16{deniedPort}}}}}}}
	return node1, node2
}

// TestTwoNodes runs the data path for real: eBPF redirection on two "nodes",
// one ztunnel each, apps in pod network namespaces.
func TestTwoNodes(t *testing.T) {
	requireKernel(t)
	dir := t.TempDir()
	bpffs := filepath.Join(dir, "bpffs") // nodeagent.Open mounts it
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount %s: %v", bpffs, err)
		}
	})
	n := newTestNet(t)
	ca, certs := meshCA(t, dir, "demo/client", "demo/server")
	for _, role := range []string{"client", "server", "strict", "outsider"} {
		n.echoServer(role, appPort)
	}
	n.echoServer("server", deniedPort)

	// Everything between the nodes is captured; no test payload may appear.
	pcap := filepath.Join(dir, "link.pcap")
	dump := exec.Command("ip", "netns", "exec", n.names["node1"], "tcpdump", "-i", "to-node2", "-U", "--immediate-mode", "-s", "0", "-w", pcap, "tcp")
	var dumpErr syncBuffer // tcpdump writes it while the test reads it
	dump.Stderr = &dumpErr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	stopDump := sync.OnceFunc(func() {
		time.Sleep(200 * time.Millisecond) // -U: let the last packets reach the file
		dump.Process.Signal(unix.SIGTERM)
		dump.Wait()
	})
	t.Cleanup(stopDump)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(dumpErr.String(), "listening on"); {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start: %s", dumpErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The plaintext that crosses the link by design (a client outside the
	// mesh, PERMISSIVE) shows that the capture sees payloads at all.
	captured := func() []byte {
		stopDump()
		b, err := os.ReadFile(pcap)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	cfg1, cfg2 := mesh(n, ca.Bundle, certs)
	node2 := startNode(t, n, bpffs, "node2", cfg2)
	node1 := startNode(t, n, bpffs, "node1", cfg1)

	t.Run("pod IP over HBONE, the app sees the client's address", func(t *testing.T) {
		got, err := n.exchange("client", netip.AddrPortFrom(serverIP, appPort))
		if err != nil {
			t.Fatal(err)
		}
		// The last hop is dialed from inside the server pod's netns, from
		// the client pod's address (the agent set up the pod's routing).
		if got != "hello "+clientIP.String() {
			t.Errorf("greeting %q, want the client pod's address", got)
		}
	})
	t.Run("IPv6: pod IP over HBONE, the app sees the client's address", func(t *testing.T) {
		got, err := n.exchange("client", netip.AddrPortFrom(serverIP6, appPort))
		if err != nil {
			t.Fatal(err)
		}
		if got != "hello "+clientIP6.String() {
			t.Errorf("greeting %q, want the client pod's IPv6 address", got)
		}
	})
	t.Run("IPv6: a non-mesh client is let in with its address", func(t *testing.T) {
		got, err := n.exchange("outsider", netip.AddrPortFrom(serverIP6, appPort))
		if err != nil {
			t.Fatal(err)
		}
		if got != "hello "+outsiderIP6.String() {
			t.Errorf("greeting %q, want the outsider's IPv6 address", got)
		}
	})
	t.Run("service VIP over HBONE", func(t *testing.T) {
		if _, err := n.exchange("client", netip.AddrPortFrom(serviceVIP, 80)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a pod reaching itself through a Service", func(t *testing.T) {
		got, err := n.exchange("client", netip.AddrPortFrom(clientServiceVIP, 80))
		if err != nil {
			t.Fatal(err)
		}
		if got != "hello "+clientIP.String() {
			t.Errorf("greeting %q, want the pod's own address", got)
		}
	})
	t.Run("DENY policy", func(t *testing.T) {
		in, out := refusals(node2.tun, "inbound", reasonPolicy), refusals(node1.tun, "outbound", reasonHBONE)
		opened := counter(t, node2.reg, "warren_ztunnel_tcp_connections_opened_total", map[string]string{"direction": "inbound"})
		if got, err := n.exchange("client", netip.AddrPortFrom(serverIP, deniedPort)); err == nil {
			t.Fatalf("denied port answered %q", got)
		}
		// Counted once on each side, and never as opened.
		countedOnce(t, "the server's refusal", node2.tun, "inbound", reasonPolicy, in)
		countedOnce(t, "the client's failed tunnel", node1.tun, "outbound", reasonHBONE, out)
		if got := counter(t, node2.reg, "warren_ztunnel_tcp_connections_opened_total", map[string]string{"direction": "inbound"}); got != opened {
			t.Errorf("a refused connection was counted as opened (%v, was %v)", got, opened)
		}
	})
	t.Run("closed port on a mesh pod fails fast", func(t *testing.T) {
		start := time.Now()
		if got, err := n.exchange("client", netip.AddrPortFrom(serverIP, 7)); err == nil {
			t.Fatalf("closed port answered %q", got)
		}
		// A refusal that did not travel back would hold the read for its 5 s deadline.
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v: the refusal should travel back at once", d)
		}
	})
	t.Run("passthrough keeps the pod's source address", func(t *testing.T) {
		got, err := n.exchange("client", netip.AddrPortFrom(outsiderIP, appPort))
		if err != nil {
			t.Fatal(err)
		}
		if got != "hello "+clientIP.String() {
			t.Errorf("greeting %q, want the client pod's address", got)
		}
	})
	t.Run("PERMISSIVE lets a non-mesh client in, with its address", func(t *testing.T) {
		got, err := n.exchange("outsider", netip.AddrPortFrom(serverIP, appPort))
		if err != nil {
			t.Fatal(err)
		}
		if got != "hello "+outsiderIP.String() {
			t.Errorf("greeting %q, want the outsider's address", got)
		}
	})
	t.Run("STRICT refuses a non-mesh client", func(t *testing.T) {
		refusedOnce(t, "STRICT's refusal", node2.tun, reasonPolicy, func() (string, error) {
			return n.exchange("outsider", netip.AddrPortFrom(strictIP, appPort))
		})
	})
	t.Run("STRICT pod reached over HBONE", func(t *testing.T) {
		if _, err := n.exchange("client", netip.AddrPortFrom(strictIP, appPort)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("peer identity checked", func(t *testing.T) {
		good := &identitytest.CA{Cert: ca.Cert, Key: ca.Key}
		foreign := identitytest.NewCA(t)
		clientID := identity.MustParse("spiffe://cluster.local/ns/demo/sa/client")
		serverID := identity.MustParse("spiffe://cluster.local/ns/demo/sa/server")
		for _, tc := range []struct {
			name   string
			cert   *tls.Certificate
			expect identity.ID
			ok     bool
			// refused: the reason the server counts its refusal under
			// (none when the client refuses the server).
			refused string
		}{
			{"right CA and identities", good.Issue(t, clientID), serverID, true, ""},
			{"foreign CA", foreign.Issue(t, clientID), serverID, false, reasonUntrusted},
			{"foreign trust domain", good.Issue(t, identity.MustParse("spiffe://evil.local/ns/demo/sa/client")), serverID, false, reasonIdentity},
			{"server is not who the client expects", good.Issue(t, clientID), identity.MustParse("spiffe://cluster.local/ns/demo/sa/other"), false, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var before float64
				if tc.refused != "" {
					before = refusals(node2.tun, "inbound", tc.refused)
					defer countedOnce(t, "the refused handshake", node2.tun, "inbound", tc.refused, before)
				}
				c, err := n.hboneDial(t, 5*time.Second, tc.cert, good.Roots(), clientID, tc.expect, netip.AddrPortFrom(serverIP, appPort), nil)
				if !tc.ok {
					if err == nil {
						c.Close()
						t.Fatal("tunnel opened")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "hello") {
					t.Fatalf("read %q, %v", line, err)
				}
			})
		}
	})
	t.Run("no client certificate: refused and counted", func(t *testing.T) {
		before := refusals(node2.tun, "inbound", reasonNoClientCert)
		raw, err := n.dial("outsider", netip.AddrPortFrom(serverIP, hbone.Port))
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		// TLS 1.3: the client's side of the handshake completes before the
		// server has looked at the (missing) certificate; its refusal comes
		// at the first read.
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{identity.ALPN}, MinVersion: tls.VersionTLS13}) //nolint:gosec // the test is the client without a certificate
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Read(make([]byte, 1))
		}
		if err == nil {
			t.Fatal("a client without a certificate was served")
		}
		countedOnce(t, "the refused handshake", node2.tun, "inbound", reasonNoClientCert, before)
	})
	t.Run("telemetry", func(t *testing.T) {
		want := map[string]string{
			"direction": "inbound", "source_workload": "client", "source_principal": "spiffe://cluster.local/ns/demo/sa/client",
			"destination_workload": "server", "connection_security_policy": "mutual_tls",
		}
		// source_workload comes from the HBONE connection's source address,
		// kept only when it matches the peer's identity: the client's
		// ztunnel dials from inside the client pod, with its address.
		if !hasSeries(t, node2.reg, "warren_ztunnel_tcp_connections_closed_total", want) {
			t.Errorf("no inbound mTLS series %v", want)
		}
		if !hasSeries(t, node1.reg, "warren_ztunnel_tcp_connections_opened_total", map[string]string{
			"direction": "outbound", "destination_service": "demo/echo", "connection_security_policy": "mutual_tls"}) {
			t.Error("no outbound series for the service")
		}
		if !hasSeries(t, node2.reg, "warren_ztunnel_tcp_connections_closed_total", map[string]string{
			"direction": "inbound", "source_workload": "outsider", "source_principal": "unknown", "connection_security_policy": "none"}) {
			t.Error("no inbound plaintext series")
		}
		// The identity the handshake proved is the principal even where the
		// source address is no workload of that identity ("peer identity
		// checked" came from the outsider's address with the client's
		// certificate).
		if !hasSeries(t, node2.reg, "warren_ztunnel_tcp_connections_closed_total", map[string]string{
			"direction": "inbound", "source_workload": "unknown", "source_principal": "spiffe://cluster.local/ns/demo/sa/client", "connection_security_policy": "mutual_tls"}) {
			t.Error("no inbound mTLS series with the handshake's principal for an unknown source address")
		}
		if hasSeries(t, node2.reg, "warren_ztunnel_tcp_connections_opened_total", map[string]string{
			"source_principal": "unknown", "connection_security_policy": "mutual_tls"}) {
			t.Error("an mTLS connection was counted without its principal")
		}
	})
	t.Run("a new DENY closes the connections it forbids, and only those", func(t *testing.T) {
		open := func(role string, dst netip.AddrPort) (net.Conn, *bufio.Reader) {
			t.Helper()
			c, err := n.dial(role, dst)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			if greeting, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(greeting, "hello") {
				t.Fatalf("%s: greeting %q, %v", role, greeting, err)
			}
			return c, r
		}
		echoes := func(c net.Conn, r *bufio.Reader) error {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintf(c, "ping\n"); err != nil {
				return err
			}
			line, err := r.ReadString('\n')
			if err == nil && line != "ping\n" {
				err = fmt.Errorf("echo %q", line)
			}
			return err
		}
		mtlsConn, mtlsR := open("client", netip.AddrPortFrom(serverIP, appPort))
		plainConn, plainR := open("outsider", netip.AddrPortFrom(serverIP, appPort))
		for _, c := range []struct {
			c net.Conn
			r *bufio.Reader
		}{{mtlsConn, mtlsR}, {plainConn, plainR}} {
			if err := echoes(c.c, c.r); err != nil {
				t.Fatalf("before the DENY: %v", err)
			}
		}
		mesh := Mesh{Workloads: cfg2.Workloads, Services: cfg2.Services, Policies: cfg2.Policies}
		denyClient := Policy{Name: "deny-client", Namespace: "demo", Action: ActionDeny, Rules: []Rule{{
			From: []Source{{Principals: []identity.ID{identity.MustParse("spiffe://cluster.local/ns/demo/sa/client")}}},
			To:   []Destination{{Ports: []uint16{appPort}}}}}}
		withDeny := mesh
		withDeny.Policies = append(slices.Clone(mesh.Policies), denyClient)
		if err := node2.tun.SetMesh(withDeny); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := node2.tun.SetMesh(mesh); err != nil {
				t.Error(err)
			}
		})
		// The client's connection ends within a second (the read deadline):
		// EOF or a reset, not a timeout.
		mtlsConn.SetReadDeadline(time.Now().Add(time.Second))
		b, err := io.ReadAll(mtlsR)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the denied connection is still open a second after the DENY (read %q)", b)
		}
		// The plaintext client is not the principal the DENY names.
		if err := echoes(plainConn, plainR); err != nil {
			t.Fatalf("a connection the DENY does not cover was broken: %v", err)
		}
		if got, err := n.exchange("client", netip.AddrPortFrom(serverIP, appPort)); err == nil {
			t.Fatalf("a new connection the DENY covers answered %q", got)
		}
	})
	t.Run("killed ztunnel fails closed", func(t *testing.T) {
		long, err := n.dial("client", netip.AddrPortFrom(serverIP, appPort))
		if err != nil {
			t.Fatal(err)
		}
		defer long.Close()
		node1.stop()
		node2.stop()
		long.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(long, "%s\n", marker)
		if b, err := io.ReadAll(long); err == nil && strings.Contains(string(b), marker) {
			t.Errorf("a connection outlived its ztunnel: %q", b)
		}
		if got, err := n.exchange("client", netip.AddrPortFrom(serverIP, appPort)); err == nil {
			t.Errorf("client reached the server without its ztunnel: %q", got)
		}
		if got, err := n.exchange("outsider", netip.AddrPortFrom(serverIP, appPort)); err == nil {
			t.Errorf("outsider reached the server without its ztunnel: %q", got)
		}
	})
	b := captured()
	if !bytes.Contains(b, []byte("from outside the mesh")) {
		t.Errorf("the capture (%d bytes) missed the plaintext a non-mesh client sent: it proves nothing", len(b))
	}
	if bytes.Contains(b, []byte(marker)) {
		t.Error("a mesh pod's payload crossed the link between the nodes in plaintext")
	}
}

func hasSeries(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return m.GetCounter().GetValue() > 0
		}
	}
	return false
}

// refusals is the tunnel's warren_ztunnel_connections_refused_total for
// direction and reason.
func refusals(tun *Tunnel, direction, reason string) float64 {
	return testutil.ToFloat64(tun.metrics.refused.WithLabelValues(direction, reason))
}

// countedOnce waits for one refusal more than before, then checks that there
// was exactly one.
func countedOnce(t *testing.T, what string, tun *Tunnel, direction, reason string, before float64) {
	t.Helper()
	waitFor(t, what+" to be counted", func() bool { return refusals(tun, direction, reason) > before })
	if got := refusals(tun, direction, reason) - before; got != 1 {
		t.Errorf("%s counted %v times under %s/%s, want once", what, got, direction, reason)
	}
}

// refusedOnce makes a connection with attempt, which must fail, and checks
// that tun counted it once as refused inbound for reason.
func refusedOnce(t *testing.T, what string, tun *Tunnel, reason string, attempt func() (string, error)) {
	t.Helper()
	before := refusals(tun, "inbound", reason)
	if got, err := attempt(); err == nil {
		t.Fatalf("%s: answered %q", what, got)
	}
	countedOnce(t, what, tun, "inbound", reason, before)
}

// hboneDial opens a tunnel to dst over HBONE from the outsider's netns, as
// src with cert, expecting the server to be expect, with hdr on the CONNECT:
// a ztunnel's client played by the test.
func (n *testNet) hboneDial(t *testing.T, timeout time.Duration, cert *tls.Certificate, roots *identity.Roots, src, expect identity.ID, dst netip.AddrPort, hdr http.Header) (net.Conn, error) {
	t.Helper()
	pool, err := hbone.NewPool(hbone.PoolOptions{
		TLSConfig: func(k hbone.Key) (*tls.Config, error) {
			return identity.ClientConfig(identity.TLSOptions{Certs: identity.NewCertSource(cert), Roots: roots, Authorize: identity.ExpectID(k.Dst)})
		},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return n.dial("outsider", netip.MustParseAddrPort(addr))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	key := hbone.Key{Src: src, Dst: expect, Addr: netip.AddrPortFrom(dst.Addr(), hbone.Port)}
	return pool.Dial(ctx, key, dst.String(), hdr)
}

// meshCA makes a test's mesh CA in dir and an SVID for each service account
// ("namespace/name"): the configuration's caBundle and certs.
func meshCA(t *testing.T, dir string, accounts ...string) (*ztunneltest.CA, map[string]CertPair) {
	t.Helper()
	ca, err := ztunneltest.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	certs := map[string]CertPair{}
	for _, a := range accounts {
		ns, sa, _ := strings.Cut(a, "/")
		cert, key, err := ca.WriteSVID(identity.ID{TrustDomain: identity.DefaultTrustDomain, Namespace: ns, ServiceAccount: sa})
		if err != nil {
			t.Fatal(err)
		}
		certs[a] = CertPair{Cert: cert, Key: key}
	}
	return ca, certs
}
