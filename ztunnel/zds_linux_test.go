package ztunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/bpf/redirect/pins"
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

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
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
	bpffs := filepath.Join(dir, "bpffs")
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount %s: %v", bpffs, err)
		}
	})
	n := newTestNet(t)
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := WriteCA(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	n.echoServer("outsider", appPort)
	n.echoServer("client", appPort)

	// The agent's side: redirection for the pod, and its zds server.
	k, err := nodeagent.Open(ctx, nodeagent.Options{Node: "node1", BPFFS: bpffs, Logger: testLogger(t, "agent")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Uninstall(context.Background()); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	if err := k.Enroll(ctx, nodeagent.Pod{UID: "client-uid", Netns: n.path("client"), IPs: []netip.Addr{clientIP}}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ztunnel.sock")
	srv, stopSrv := serveZDS(t, sock)
	client := zds.Pod{UID: "client-uid", Namespace: "demo", Name: "client", ServiceAccount: "client", IPs: []netip.Addr{clientIP}, Labels: map[string]string{"app": "client"}}
	if err := srv.AddPod(ctx, client, n.path("client")); err != nil {
		t.Fatal(err)
	}

	cfg := &Config{Node: "node1", CACert: caCert, CAKey: caKey, PinDir: filepath.Join(bpffs, "warren", "node1"),
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
