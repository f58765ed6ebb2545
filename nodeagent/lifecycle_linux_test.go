package nodeagent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/zds"
	"github.com/warrenmesh/warren/nodeagent/cni"
	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// mapNetns finds the test's pods' netns by UID (no process runs in them for a /proc scan to find).
type mapNetns struct {
	paths *atomic.Pointer[map[string]string]
}

func (m mapNetns) PodNetns(uid string) (string, error) {
	if p := (*m.paths.Load())[uid]; p != "" {
		return p, nil
	}
	return "", ErrNetnsNotFound
}

// agentConfig is an agent of node n1 on the test's bpffs, with its sockets,
// CNI folders (a bridge conflist to chain into) and metrics port in dir.
func agentConfig(t *testing.T, e *testEnv, kubeconfig, dir string) AgentConfig {
	t.Helper()
	cfg := AgentConfig{
		Node:          "n1",
		Kubeconfig:    kubeconfig,
		Kernel:        Options{BPFFS: e.bpffs},
		ZtunnelSocket: filepath.Join(dir, "ztunnel.sock"),
		CNISocket:     filepath.Join(dir, "cni.sock"),
		InstallCNI:    true,
		CNI: cni.Config{Binary: filepath.Join(dir, "warren-cni"), BinDir: filepath.Join(dir, "bin"),
			ConfDir: filepath.Join(dir, "net.d")},
		MetricsAddr: freeAddr(t),
	}
	must(t, os.MkdirAll(cfg.CNI.BinDir, 0o755))
	must(t, os.MkdirAll(cfg.CNI.ConfDir, 0o755))
	must(t, os.WriteFile(cfg.CNI.Binary, []byte("plugin"), 0o755))
	bridge, err := os.ReadFile(filepath.Join("cni", "testdata", "bridge.conflist"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(cfg.CNI.ConfDir, "10-bridge.conflist"), bridge, 0o644))
	return cfg
}

// startAgent runs RunAgent until the returned stop is called (or cleanup).
func startAgent(t *testing.T, cfg AgentConfig, name string) (stop func() error) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("agent", name)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunAgent(ctx, cfg, log) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// countingZtunnel is a fakeZtunnel that counts its connections to the agent.
func runZtunnel(t *testing.T, path string) (*fakeZtunnel, *atomic.Int32, func()) {
	zt := &fakeZtunnel{cookies: map[string]uint64{}}
	var connects atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&zds.Client{Path: path, Handler: zt, Backoff: 20 * time.Millisecond, OnConnect: func() { connects.Add(1) }}).Run(ctx)
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return zt, &connects, stop
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

func meshPod(t *testing.T, client kubernetes.Interface, name string, tp *topo) string {
	t.Helper()
	ctx := context.Background()
	ip := ""
	if tp != nil {
		ip = tp.pod4.String()
	}
	pod := kubePod("mesh", name, "", "n1", ip)
	created, err := client.CoreV1().Pods("mesh").Create(ctx, pod, metav1.CreateOptions{})
	must(t, err)
	if tp != nil {
		created.Status = pod.Status
		_, err = client.CoreV1().Pods("mesh").UpdateStatus(ctx, created, metav1.UpdateOptions{})
		must(t, err)
	}
	return string(created.UID)
}

func meshNamespace(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	_, err := client.CoreV1().Namespaces().Create(ctx, testNS("mesh", map[string]string{LabelMesh: MeshEnabled}), metav1.CreateOptions{})
	must(t, err)
	_, err = client.CoreV1().ServiceAccounts("mesh").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	must(t, err)
}

// tcpListeners counts the TCP sockets listening on addr (IPv4) in this netns.
func tcpListeners(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	must(t, err)
	b, err := os.ReadFile("/proc/net/tcp")
	must(t, err)
	a := ap.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			n++
		}
	}
	return n
}

func getMetrics(addr string) (string, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// A DaemonSet's surge (kubectl rollout restart): a second agent starts
// while the first runs, on the same pins, sockets and metrics port. The
// second takes over the CNI and zds sockets and adopts the pins; the first
// keeps its connected ztunnel until it stops, and leaves the second's
// sockets, pins and redirection in place when it does.
func TestAgentSurge(t *testing.T) {
	e := newEnv(t)
	client, kubeconfig := startAPIServerKubeconfig(t)
	ctx := context.Background()
	cfg := agentConfig(t, e, kubeconfig, t.TempDir())
	meshNamespace(t, client)
	ta, tb := newTopo(t), newTopo(t)
	for _, tp := range []*topo{ta, tb} {
		serve(t, tp.peer, "tcp", ":8080", tag("peer"))
	}
	var paths atomic.Pointer[map[string]string]
	paths.Store(&map[string]string{})
	cfg.Netns = mapNetns{&paths}

	tc := newTopo(t)
	serve(t, tc.peer, "tcp", ":8080", tag("peer"))
	uidA := meshPod(t, client, "a", ta)
	uidC := meshPod(t, client, "c", tc) // deleted while both agents run
	paths.Store(&map[string]string{uidA: ta.Pod("").Netns, uidC: tc.Pod("").Netns})
	stopA := startAgent(t, cfg, "first")
	zt1, connects1, _ := runZtunnel(t, cfg.ZtunnelSocket)
	pinDir := filepath.Join(e.bpffs, "warren", "n1")
	waitFor(t, "the first agent's pins", func() bool {
		_, err := os.Stat(filepath.Join(pinDir, linksDir, "sockops"))
		return err == nil
	})
	table, err := OpenOrigDstTable(pinDir) // the ztunnel's own handle
	must(t, err)
	defer table.Close()
	tunnel(t, ta.pod, table.Conn)
	tunnel(t, tb.pod, table.Conn)
	tunnel(t, tc.pod, table.Conn)
	podA := mustOpen(t, ta.Pod("").Netns)
	wantA, err := netns.Cookie(podA)
	must(t, err)
	waitFor(t, "the first agent enrolled pods a and c and told its ztunnel", func() bool {
		c, ok := zt1.cookie(uidA)
		_, okC := zt1.cookie(uidC)
		return ok && okC && c == wantA
	})
	got, err := dial(ta.pod, "tcp4", ap(ta.peer4, 8080), 0)
	expectLine(t, "pod a, first agent", got, err, "tunnel "+ap(ta.peer4, 8080))
	cniA, zdsA := inode(t, cfg.CNISocket), inode(t, cfg.ZtunnelSocket)

	stopB := startAgent(t, cfg, "second")
	waitFor(t, "the second agent took both sockets over", func() bool {
		c, z := inode(t, cfg.CNISocket), inode(t, cfg.ZtunnelSocket)
		return c != 0 && z != 0 && c != cniA && z != zdsA
	})
	cniB, zdsB := inode(t, cfg.CNISocket), inode(t, cfg.ZtunnelSocket)
	waitFor(t, "both agents listen on the metrics port", func() bool { return tcpListeners(t, cfg.MetricsAddr) == 2 })
	if m, err := getMetrics(cfg.MetricsAddr); err != nil || !strings.Contains(m, "warren_agent_enrolled_pods 2") {
		t.Errorf("metrics with both agents: %v\n%.1000s", err, m)
	}

	// Pod b comes through the CNI socket, now the second agent's.
	uidB := meshPod(t, client, "b", nil)
	paths.Store(&map[string]string{uidA: ta.Pod("").Netns, uidB: tb.Pod("").Netns, uidC: tc.Pod("").Netns})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cniapi.NewClient(cfg.CNISocket).Add(cctx, cniapi.AddRequest{Namespace: "mesh", Name: "b", UID: uidB,
		ContainerID: "cb", Netns: tb.Pod("").Netns, IPs: tb.Pod("").IPs})
	if err != nil || !resp.Enrolled {
		t.Fatalf("CNI add of pod b: %+v, %v", resp, err)
	}
	got, err = dial(tb.pod, "tcp4", ap(tb.peer4, 8080), 0)
	expectLine(t, "pod b, second agent", got, err, "tunnel "+ap(tb.peer4, 8080))
	podB := mustOpen(t, tb.Pod("").Netns)
	wantB, err := netns.Cookie(podB)
	must(t, err)
	// A ztunnel connecting now reaches the second agent, which has both pods;
	// the first ztunnel was not dropped.
	zt2, _, stopZt2 := runZtunnel(t, cfg.ZtunnelSocket)
	waitFor(t, "a new ztunnel gets both pods from the second agent", func() bool {
		a, okA := zt2.cookie(uidA)
		b, okB := zt2.cookie(uidB)
		return okA && okB && a == wantA && b == wantB
	})
	stopZt2()
	// The first agent still serves its ztunnel: pod c deleted, it says so.
	must(t, client.CoreV1().Pods("mesh").Delete(ctx, "c", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
	waitFor(t, "the first agent told its ztunnel that pod c left", func() bool { _, ok := zt1.cookie(uidC); return !ok })
	got, err = dial(tc.pod, "tcp4", ap(tc.peer4, 8080), 0)
	expectLine(t, "pod c deleted", got, err, "peer "+ap(tc.peer4, 8080))
	if n := connects1.Load(); n != 1 {
		t.Errorf("the first agent's ztunnel connected %d times while both agents ran, want 1", n)
	}
	if _, ok := zt1.cookie(uidB); ok {
		t.Error("the first agent's ztunnel heard of pod b, which only the second enrolled")
	}

	if err := stopA(); err != nil {
		t.Fatalf("first agent: %v", err)
	}
	if c, z := inode(t, cfg.CNISocket), inode(t, cfg.ZtunnelSocket); c != cniB || z != zdsB {
		t.Fatalf("sockets after the first agent stopped: cni inode %d (second's %d), zds %d (second's %d)", c, cniB, z, zdsB)
	}
	for _, pin := range []string{"connect4", "connect6", "sockops", skLookupPrefix + uidA, skLookupPrefix + uidB} {
		if _, err := os.Stat(filepath.Join(e.bpffs, "warren", "n1", linksDir, pin)); err != nil {
			t.Errorf("pin after the first agent stopped: %v", err)
		}
	}
	got, err = dial(ta.pod, "tcp4", ap(ta.peer4, 8080), 0)
	expectLine(t, "pod a, after the first agent stopped", got, err, "tunnel "+ap(ta.peer4, 8080))
	got, err = dial(tb.pod, "tcp6", ap(tb.peer6, 8080), 0)
	expectLine(t, "pod b, after the first agent stopped", got, err, "tunnel "+ap(tb.peer6, 8080))
	waitFor(t, "the first ztunnel reconnected to the second agent and got both pods", func() bool {
		a, okA := zt1.cookie(uidA)
		b, okB := zt1.cookie(uidB)
		return connects1.Load() == 2 && okA && okB && a == wantA && b == wantB
	})
	if m, err := getMetrics(cfg.MetricsAddr); err != nil || !strings.Contains(m, "warren_agent_enrolled_pods 2") {
		t.Errorf("metrics from the second agent: %v\n%.1000s", err, m)
	}
	// The second agent serves the CNI socket: DEL takes pod b out.
	must(t, cniapi.NewClient(cfg.CNISocket).Del(cctx, cniapi.DelRequest{Namespace: "mesh", Name: "b", UID: uidB, ContainerID: "cb"}))
	got, err = dial(tb.pod, "tcp4", ap(tb.peer4, 8080), 0)
	expectLine(t, "pod b deleted through the second agent", got, err, "peer "+ap(tb.peer4, 8080))

	if err := stopB(); err != nil {
		t.Fatalf("second agent: %v", err)
	}
	for _, s := range []string{cfg.CNISocket, cfg.ZtunnelSocket} {
		if _, err := os.Lstat(s); !os.IsNotExist(err) {
			t.Errorf("the last agent left its socket %s: %v", s, err)
		}
	}
}

// warren-agent in its pod, stopped twice: while its DaemonSet lives (a
// restart: pins, redirection and the CNI entry stay) and once the DaemonSet
// is deleted (Warren removed: nothing stays).
func TestAgentUninstallsWhenRemoved(t *testing.T) {
	e := newEnv(t)
	client, kubeconfig := startAPIServerKubeconfig(t)
	ctx := context.Background()
	cfg := agentConfig(t, e, kubeconfig, t.TempDir())
	cfg.PodName, cfg.PodNamespace = "agent-owned", agentNS
	agentObjects(t, client, false)
	meshNamespace(t, client)
	tp := newTopo(t)
	uid := meshPod(t, client, "a", tp)
	var paths atomic.Pointer[map[string]string]
	paths.Store(&map[string]string{uid: tp.Pod("").Netns})
	cfg.Netns = mapNetns{&paths}
	pinDir := filepath.Join(e.bpffs, "warren", "n1")
	conflist := filepath.Join(cfg.CNI.ConfDir, "10-bridge.conflist")
	chained := func() bool {
		b, _ := os.ReadFile(conflist)
		return strings.Contains(string(b), `"warren-cni"`)
	}
	serve(t, tp.peer, "tcp", ":8080", tag("peer"))
	serve(t, tp.pod, "tcp4", "127.0.0.1:15001", tag("tunnel"))

	stop := startAgent(t, cfg, "first")
	waitFor(t, "pod a redirected", func() bool {
		got, _ := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
		return got == "tunnel 127.0.0.1:15001"
	})
	waitFor(t, "the plugin chained", chained)
	must(t, stop())
	got, err := dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "after a restart's stop", got, err, "tunnel 127.0.0.1:15001")
	if _, err := os.Stat(filepath.Join(pinDir, linksDir, skLookupPrefix+uid)); err != nil || !chained() {
		t.Errorf("after a restart's stop: pin %v, CNI chained %v", err, chained())
	}

	stop = startAgent(t, cfg, "second")
	waitFor(t, "the second agent's CNI socket", func() bool { _, err := os.Stat(cfg.CNISocket); return err == nil })
	must(t, client.AppsV1().DaemonSets(agentNS).Delete(ctx, agentDS, metav1.DeleteOptions{}))
	must(t, stop())
	got, err = dial(tp.pod, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "after Warren's removal", got, err, "peer "+ap(tp.peer4, 8080))
	if _, err := os.Stat(pinDir); !os.IsNotExist(err) {
		t.Errorf("pin dir after Warren's removal: %v", err)
	}
	if chained() {
		t.Error("CNI still chained after Warren's removal")
	}
	for _, s := range []string{cfg.CNISocket, cfg.ZtunnelSocket, filepath.Join(cfg.CNI.BinDir, "warren-cni")} {
		if _, err := os.Lstat(s); !os.IsNotExist(err) {
			t.Errorf("%s after Warren's removal: %v", s, err)
		}
	}
	if left := e.stillAttached(); len(left) != 0 {
		t.Errorf("programs still attached after Warren's removal: %v", left)
	}
}

// The metrics port held by a socket without SO_REUSEPORT (an agent from
// before it, during the upgrade): the agent serves it once it is free
// instead of failing; beside another SO_REUSEPORT listener it binds at once.
func TestMetricsPortHeld(t *testing.T) {
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := holder.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for range 2 {
		go func() {
			done <- serveMetrics(ctx, addr, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
		}()
	}
	time.Sleep(100 * time.Millisecond)
	holder.Close()
	waitFor(t, "metrics served once the port is free", func() bool {
		_, err := getMetrics(addr)
		return err == nil
	})
	cancel()
	for range 2 {
		must(t, <-done)
	}
}
