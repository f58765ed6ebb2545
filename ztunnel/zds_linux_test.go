package ztunnel

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/bpf/redirect/pins"
	"github.com/warrenmesh/warren/internal/eventually"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/identity/identitytest"
	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/zds"
	"github.com/warrenmesh/warren/nodeagent"
)

// runTunnel starts a ztunnel with pods from src and waits until it is
// ready; stop ends it (also at cleanup).
func runTunnel(t *testing.T, name string, cfg *Config, src PodSource) (tun *Tunnel, reg *prometheus.Registry, stop func()) {
	t.Helper()
	reg = prometheus.NewRegistry()
	tun, err := New(cfg, Options{Logger: testLogger(t, name), Registry: reg, Pods: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tun.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ztunnel %s: %v", name, err)
		}
	})
	t.Cleanup(stop)
	for deadline := time.Now().Add(10 * time.Second); !tun.ready.Load(); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("ztunnel %s: %v", name, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ztunnel %s not ready", name)
		}
	}
	return tun, reg, stop
}

// serveZDS runs the node agent's real zds server on path; stop closes it
// (also at cleanup).
func serveZDS(t *testing.T, path string) (srv *zds.Server, stop func()) {
	t.Helper()
	srv, err := zds.Listen(path, zds.ServerOptions{Logger: testLogger(t, "zds-server")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	stop = sync.OnceFunc(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("zds Serve: %v", err)
		}
	})
	t.Cleanup(stop)
	return srv, stop
}

// testBPFFS is a test's bpffs in dir (nodeagent.Open mounts it), unmounted
// at cleanup.
func testBPFFS(t *testing.T, dir string) string {
	bpffs := filepath.Join(dir, "bpffs")
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount %s: %v", bpffs, err)
		}
	})
	return bpffs
}

// openAgent opens a node's eBPF dataplane (its own pins in bpffs), as its
// agent would, and uninstalls it at cleanup.
func openAgent(t *testing.T, bpffs, node string) *nodeagent.Kernel {
	t.Helper()
	k, err := nodeagent.Open(context.Background(), nodeagent.Options{Node: node, BPFFS: bpffs, Logger: testLogger(t, node+"-agent")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Uninstall(context.Background()); err != nil {
			t.Errorf("uninstall %s: %v", node, err)
		}
	})
	return k
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventually.True(t, what, 5*time.Second, cond)
}

func (t *Tunnel) served(uid string) bool { return t.proxy(uid) != nil }

func (t *Tunnel) proxy(uid string) *podProxy {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active[uid]
}

// TestZDSHandOff runs a ztunnel as on a real node: the node agent's zds
// server hands it the client pod's netns as a descriptor (the
// configuration lists no pods), and the pod's redirected connections flow
// through it.
func TestZDSHandOff(t *testing.T) {
	requireKernel(t)
	top := t // servers and tunnels started in subtests live as long as the test
	ctx := context.Background()
	dir := t.TempDir()
	bpffs := testBPFFS(t, dir)
	n := newTestNet(t)
	ca, certs := meshCA(t, dir, "demo/client")
	n.echoServer("outsider", appPort)
	n.echoServer("client", appPort)

	// The agent's side: redirection for the pod, and its zds server.
	k := openAgent(t, bpffs, "node1")
	if err := k.Enroll(ctx, nodeagent.Pod{UID: "client-uid", Netns: n.path("client"), IPs: []netip.Addr{clientIP}}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ztunnel.sock")
	srv, stopSrv := serveZDS(t, sock)
	client := zds.Pod{UID: "client-uid", Namespace: "demo", Name: "client", ServiceAccount: "client", IPs: []netip.Addr{clientIP}, Labels: map[string]string{"app": "client"}}
	if err := srv.AddPod(ctx, client, n.path("client")); err != nil {
		t.Fatal(err)
	}

	cfg := &Config{Node: "node1", CABundle: ca.Bundle, Certs: certs, PinDir: filepath.Join(bpffs, "warren", "node1"),
		Workloads: []Workload{{Name: "outsider", Namespace: "demo", IPs: []netip.Addr{outsiderIP}, Node: "node1"}}}
	src := ZDSPods{Path: sock, Backoff: 20 * time.Millisecond, Logger: testLogger(t, "zds-client")}
	tun, reg, stopTun := runTunnel(t, "ztunnel", cfg, src)

	works := func(t *testing.T) {
		t.Helper()
		got, err := n.exchange("client", netip.AddrPortFrom(outsiderIP, appPort))
		if err != nil {
			t.Fatalf("outbound through the ztunnel: %v", err)
		}
		if got != "hello "+clientIP.String() {
			t.Errorf("greeting %q, want the client pod's address", got)
		}
	}
	// Redirected to a port where no ztunnel listens any more (the last
	// one's, or 15001): refused at once.
	failsClosed := func(t *testing.T) {
		t.Helper()
		if got, err := n.exchange("client", netip.AddrPortFrom(outsiderIP, appPort)); err == nil {
			t.Fatalf("reached the server without a ztunnel listener: %q", got)
		}
		var c net.Conn
		err := netns.Do(n.files["client"], func() (err error) {
			c, err = net.DialTimeout("tcp4", "127.0.0.1:15001", time.Second)
			return err
		})
		if err == nil {
			c.Close()
			t.Fatal("something still listens on 127.0.0.1:15001 in the pod")
		}
	}

	t.Run("redirected connection flows through the ztunnel", func(t *testing.T) {
		works(t)
		if !hasSeries(t, reg, "warren_ztunnel_tcp_connections_opened_total", map[string]string{
			"direction": "outbound", "source_workload": "client", "source_principal": "spiffe://cluster.local/ns/demo/sa/client"}) {
			t.Error("no outbound series with the identity zds gave")
		}
		// Inbound: the ztunnel's 15006 listener is registered for sk_lookup.
		got, err := n.exchange("outsider", netip.AddrPortFrom(clientIP, appPort))
		if err != nil {
			t.Fatalf("plaintext inbound through the ztunnel: %v", err)
		}
		// Delivered from the outsider's address (the agent set up the
		// pod's routing for it), and counted by the ztunnel.
		if got != "hello "+outsiderIP.String() {
			t.Errorf("inbound greeting %q: want the outsider's address", got)
		}
		if !hasSeries(t, reg, "warren_ztunnel_tcp_connections_opened_total", map[string]string{
			"direction": "inbound", "connection_security_policy": "none"}) {
			t.Error("no inbound plaintext series: the connection did not go through the ztunnel")
		}
	})
	t.Run("delete removes the listeners", func(t *testing.T) {
		if err := srv.DeletePod(ctx, client.UID); err != nil { // returns once acked
			t.Fatal(err)
		}
		if tun.served(client.UID) {
			t.Fatal("pod still served after its delete was acked")
		}
		failsClosed(t)
		if err := srv.AddPod(ctx, client, n.path("client")); err != nil {
			t.Fatal(err)
		}
		works(t)
	})
	t.Run("refusal carries the reason", func(t *testing.T) {
		bad := zds.Pod{UID: "bad-uid", Namespace: "demo", Name: "bad", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
		err := srv.AddPod(ctx, bad, n.path("outsider"))
		if !errors.Is(err, zds.ErrRejected) {
			t.Fatalf("AddPod of a pod with a loopback address: %v, want ErrRejected", err)
		}
		t.Logf("refused: %v", err)
		if err := srv.DeletePod(ctx, bad.UID); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reconnect replays", func(t *testing.T) {
		// A restarted agent: a new server on the same socket, which knows the pod.
		before := tun.proxy(client.UID)
		stopSrv()
		srv, stopSrv = serveZDS(top, sock)
		if err := srv.AddPod(ctx, client, n.path("client")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the ztunnel's snapshot ack", srv.Connected)
		if p := tun.proxy(client.UID); p == nil || p == before {
			t.Fatal("the replayed pod was not served anew")
		}
		works(t)
	})
	t.Run("snapshot drops pods the agent no longer has", func(t *testing.T) {
		stopSrv()
		srv, stopSrv = serveZDS(top, sock)
		waitFor(t, "the ztunnel's snapshot ack", srv.Connected)
		if tun.served(client.UID) {
			t.Fatal("pod still served after an empty snapshot")
		}
		failsClosed(t)
		if err := srv.AddPod(ctx, client, n.path("client")); err != nil {
			t.Fatal(err)
		}
		works(t)
	})
	t.Run("restarted ztunnel picks the pods up again", func(t *testing.T) {
		stopTun()
		failsClosed(t)
		tun, _, _ = runTunnel(top, "ztunnel-2", cfg, src)
		waitFor(t, "the new ztunnel's snapshot ack", srv.Connected)
		works(t)
	})
	t.Run("a second ztunnel supersedes the first, which does not come back", func(t *testing.T) {
		// A rollout's surge: the new ztunnel starts while the old one runs.
		ports, err := pins.OpenTunnelPorts(cfg.PinDir)
		if err != nil {
			t.Fatal(err)
		}
		defer ports.Close()
		cookie, err := netns.Cookie(n.files["client"])
		if err != nil {
			t.Fatal(err)
		}
		port := func() uint16 {
			p, _, err := pins.OutboundPorts(ports, cookie)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		before := port()
		tun3, reg3, _ := runTunnel(top, "ztunnel-3", cfg, src)
		waitFor(t, "the superseded ztunnel to let the pod go", func() bool { return !tun.served(client.UID) })
		after := port()
		if after == before {
			t.Fatalf("outbound port still %d, the superseded ztunnel's", before)
		}
		// Its reconnects (20 ms backoff) would have come by now.
		time.Sleep(300 * time.Millisecond)
		if tun.served(client.UID) || !tun3.served(client.UID) || port() != after {
			t.Fatalf("the superseded ztunnel took the pod back: it serves it: %v, the new one: %v, port %d (new %d)",
				tun.served(client.UID), tun3.served(client.UID), port(), after)
		}
		works(t)
		if counter(t, reg3, "warren_ztunnel_tcp_connections_opened_total", map[string]string{"direction": "outbound"}) == 0 {
			t.Error("the new ztunnel carried no connection")
		}
		// Deltas go to the new one.
		if err := srv.DeletePod(ctx, client.UID); err != nil {
			t.Fatal(err)
		}
		if tun3.served(client.UID) {
			t.Fatal("pod still served after its delete was acked")
		}
		failsClosed(t)
		if err := srv.AddPod(ctx, client, n.path("client")); err != nil {
			t.Fatal(err)
		}
		works(t)
	})
	t.Run("a stopping ztunnel serves until a successor takes over", func(t *testing.T) {
		waiting := src
		waiting.HandoverWait = 10 * time.Second
		tun4, _, stop4 := runTunnel(top, "ztunnel-4", cfg, waiting)
		waitFor(t, "ztunnel-4 to serve the pod", func() bool { return tun4.served(client.UID) })
		stopped := make(chan time.Duration, 1)
		start := time.Now()
		go func() { stop4(); stopped <- time.Since(start) }()
		time.Sleep(200 * time.Millisecond)
		if !tun4.served(client.UID) {
			t.Fatal("the stopping ztunnel let its pod go with no successor")
		}
		works(t)
		runTunnel(top, "ztunnel-5", cfg, src)
		select {
		case d := <-stopped:
			t.Logf("the stopping ztunnel returned %v after its context ended", d.Round(time.Millisecond))
		case <-time.After(5 * time.Second):
			t.Fatal("the stopping ztunnel still runs after its successor took over")
		}
		works(t)
	})
}

// slowCA signs CSRs with ca after delay, as a mesh CA that takes its time
// (the controller has not seen the pod yet, or is busy).
type slowCA struct {
	ca       *identitytest.CA
	delay    time.Duration
	answered atomic.Int32
}

func (s *slowCA) sign(ctx context.Context, csrPEM []byte) ([]byte, []byte, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	defer s.answered.Add(1)
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		return nil, nil, errors.New("no PEM CSR")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         csr.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca.Cert, csr.PublicKey, s.ca.Key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil, nil
}

// TestZDSSlowCA: a CA that answers in 8 s, longer than the agent's 5 s wait
// for each ack, does not break the zds snapshot: both pods (two identities,
// so two requests) are handed over and acked before the CA has answered,
// on the first connection, which stays up; handshakes wait for the
// certificates, and the pods serve mTLS once they came.
func TestZDSSlowCA(t *testing.T) {
	requireKernel(t)
	ctx := context.Background()
	dir := t.TempDir()
	bpffs := testBPFFS(t, dir)
	n := newTestNet(t)
	n.echoServer("server", appPort)
	k := openAgent(t, bpffs, "node1")
	srv, _ := serveZDS(t, filepath.Join(dir, "ztunnel.sock"))
	pods := []zds.Pod{
		{UID: "client-uid", Namespace: "demo", Name: "client", ServiceAccount: "client", IPs: []netip.Addr{clientIP}},
		{UID: "server-uid", Namespace: "demo", Name: "server", ServiceAccount: "server", IPs: []netip.Addr{serverIP}},
	}
	for _, p := range pods {
		if err := k.Enroll(ctx, nodeagent.Pod{UID: p.UID, Netns: n.path(p.Name), IPs: p.IPs}); err != nil {
			t.Fatal(err)
		}
		if err := srv.AddPod(ctx, p, n.path(p.Name)); err != nil {
			t.Fatal(err)
		}
	}
	ca := &slowCA{ca: identitytest.NewCA(t), delay: 8 * time.Second}
	bundle := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Node: "node1", CABundle: bundle, PinDir: filepath.Join(bpffs, "warren", "node1"),
		Workloads: []Workload{{Name: "outsider", Namespace: "demo", IPs: []netip.Addr{outsiderIP}, Node: "node1"}}}
	reg := prometheus.NewRegistry()
	tun, err := New(cfg, Options{Logger: testLogger(t, "ztunnel"), Registry: reg, Sign: ca.sign,
		Pods: ZDSPods{Path: srv.Addr(), Backoff: 20 * time.Millisecond, Logger: testLogger(t, "zds-client")}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tun.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ztunnel: %v", err)
		}
	})

	waitFor(t, "the snapshot to be acked", srv.Connected)
	if got := ca.answered.Load(); got != 0 {
		t.Fatalf("the CA had answered %d requests when the snapshot was acked: the test proves nothing (machine too slow?)", got)
	}
	if !tun.ready.Load() {
		t.Error("snapshot acked, ztunnel not ready")
	}
	proxies := map[string]*podProxy{}
	for _, p := range pods {
		if proxies[p.UID] = tun.proxy(p.UID); proxies[p.UID] == nil {
			t.Fatalf("pod %s acked but not served", p.Name)
		}
	}

	// A handshake that starts now waits for the server pod's certificate.
	clientID := identity.MustParse("spiffe://cluster.local/ns/demo/sa/client")
	serverID := identity.MustParse("spiffe://cluster.local/ns/demo/sa/server")
	c, err := n.hboneDial(t, 20*time.Second, ca.ca.Issue(t, clientID), ca.ca.Roots(), clientID, serverID, netip.AddrPortFrom(serverIP, appPort), nil)
	if err != nil {
		t.Fatalf("HBONE to the server pod once its certificate came: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "hello") {
		t.Fatalf("read %q, %v", line, err)
	}
	for deadline := time.Now().Add(20 * time.Second); counter(t, reg, "warren_ztunnel_certificate_requests_total", map[string]string{"result": "issued"}) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the CA's certificates were not taken")
		}
	}

	// The first connection stayed: no replay served the pods anew.
	if !srv.Connected() {
		t.Error("the agent lost its ztunnel")
	}
	for _, p := range pods {
		if got := tun.proxy(p.UID); got != proxies[p.UID] {
			t.Errorf("pod %s was served anew (%p, was %p): the zds connection was replaced", p.Name, got, proxies[p.UID])
		}
	}
}
