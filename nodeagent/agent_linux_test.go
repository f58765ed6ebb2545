package nodeagent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flowv1 "github.com/warrenmesh/warren/api/proto/flow/v1"
	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/zds"
	"github.com/warrenmesh/warren/nodeagent/cni"
	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// fakeZtunnel records what the agent hands over, with each netns's cookie.
type fakeZtunnel struct {
	mu      sync.Mutex
	cookies map[string]uint64
}

func (z *fakeZtunnel) AddPod(ctx context.Context, pod zds.Pod, ns *os.File) error {
	defer ns.Close()
	c, err := netns.Cookie(ns)
	if err != nil {
		return err
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	z.cookies[pod.UID] = c
	return nil
}

func (z *fakeZtunnel) DeletePod(ctx context.Context, uid string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.cookies, uid)
	return nil
}

func (z *fakeZtunnel) SnapshotSent(ctx context.Context) error { return nil }

func (z *fakeZtunnel) cookie(uid string) (uint64, bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	c, ok := z.cookies[uid]
	return c, ok
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The whole agent, as warren-agent runs it, against a real apiserver and
// the kernel: CNI install, a pod enrolled through the CNI socket and handed
// to the ztunnel, redirected for real, back on the direct path when its
// namespace leaves the mesh, and an uninstall that leaves nothing.
func TestAgentEndToEnd(t *testing.T) {
	e := newEnv(t)
	client, kubeconfig := startAPIServerKubeconfig(t)
	ctx := context.Background()
	dir := t.TempDir()
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
		FlowAddr:    freeAddr(t),
	}
	must(t, os.MkdirAll(cfg.CNI.BinDir, 0o755))
	must(t, os.MkdirAll(cfg.CNI.ConfDir, 0o755))
	must(t, os.WriteFile(cfg.CNI.Binary, []byte("plugin"), 0o755))
	bridge, err := os.ReadFile(filepath.Join("cni", "testdata", "bridge.conflist"))
	must(t, err)
	conflist := filepath.Join(cfg.CNI.ConfDir, "10-bridge.conflist")
	must(t, os.WriteFile(conflist, bridge, 0o644))

	_, err = client.CoreV1().Namespaces().Create(ctx, testNS("mesh", map[string]string{LabelMesh: MeshEnabled}), metav1.CreateOptions{})
	must(t, err)
	_, err = client.CoreV1().ServiceAccounts("mesh").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	must(t, err)
	pod, err := client.CoreV1().Pods("mesh").Create(ctx, kubePod("mesh", "a", "", "n1", ""), metav1.CreateOptions{})
	must(t, err)
	uid := string(pod.UID)

	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- RunAgent(actx, cfg, log) }()
	stopped := false
	stopAgent := func() {
		if !stopped {
			stopped = true
			stop()
			if err := <-done; err != nil {
				t.Errorf("RunAgent: %v", err)
			}
		}
	}
	defer stopAgent()

	zt := &fakeZtunnel{cookies: map[string]uint64{}}
	zctx, zstop := context.WithCancel(ctx)
	zdone := make(chan struct{})
	go func() {
		defer close(zdone)
		(&zds.Client{Path: cfg.ZtunnelSocket, Handler: zt, Backoff: 20 * time.Millisecond}).Run(zctx)
	}()
	defer func() { zstop(); <-zdone }()

	waitFor(t, "the plugin chained", func() bool {
		b, _ := os.ReadFile(conflist)
		return strings.Contains(string(b), `"warren-cni"`)
	})

	tp := newTopo(t)
	tp.pod.Close()
	serve(t, mustOpen(t, filepath.Join(netns.RunDir, tp.podName)), "tcp4", "127.0.0.1:15001", tag("tunnel"))
	serve(t, tp.peer, "tcp", ":8080", tag("peer"))
	var resp cniapi.AddResponse
	waitFor(t, "the CNI socket", func() bool {
		_, err := os.Stat(cfg.CNISocket)
		return err == nil
	})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err = cniapi.NewClient(cfg.CNISocket).Add(cctx, cniapi.AddRequest{Namespace: "mesh", Name: "a", UID: uid,
		ContainerID: "c1", Netns: filepath.Join(netns.RunDir, tp.podName), IPs: tp.Pod("").IPs})
	if err != nil || !resp.Enrolled {
		t.Fatalf("CNI add: %+v, %v", resp, err)
	}
	podNS := mustOpen(t, filepath.Join(netns.RunDir, tp.podName))
	flows := observeFlows(t, cfg.FlowAddr, &flowv1.Filter{To: tp.peer4.String()})
	got, err := dial(podNS, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "enrolled through CNI", got, err, "tunnel 127.0.0.1:15001")
	for _, want := range []flowv1.Verdict{flowv1.Verdict_ESTABLISHED, flowv1.Verdict_CLOSED} {
		ev, err := flows.Recv()
		if err != nil {
			t.Fatalf("flow stream: %v", err)
		}
		if ev.Verdict != want || ev.Hop != HopApp || ev.Node != "n1" || ev.Destination.Ip != tp.peer4.String() ||
			ev.Destination.Port != 8080 || ev.Via != "127.0.0.1:15001" || ev.Source.Ip != tp.pod4.String() {
			t.Errorf("flow event: %v, want %v of the app's connection to %v", ev, want, ap(tp.peer4, 8080))
		}
	}
	want, err := netns.Cookie(podNS)
	must(t, err)
	waitFor(t, "the ztunnel got the pod's netns", func() bool { c, ok := zt.cookie(uid); return ok && c == want })

	resp2, err := http.Get("http://" + cfg.MetricsAddr + "/metrics")
	must(t, err)
	body, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if !strings.Contains(string(body), "warren_agent_enrolled_pods 1") {
		t.Errorf("metrics without warren_agent_enrolled_pods 1:\n%.2000s", body)
	}

	// The namespace leaves the mesh: direct path again, no restart.
	ns, err := client.CoreV1().Namespaces().Get(ctx, "mesh", metav1.GetOptions{})
	must(t, err)
	delete(ns.Labels, LabelMesh)
	_, err = client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
	must(t, err)
	waitFor(t, "the ztunnel told the pod left", func() bool { _, ok := zt.cookie(uid); return !ok })
	got, err = dial(podNS, "tcp4", ap(tp.peer4, 8080), 0)
	expectLine(t, "unenrolled", got, err, "peer "+ap(tp.peer4, 8080))

	stopAgent()
	must(t, UninstallAgent(cfg, log))
	if b, _ := os.ReadFile(conflist); strings.Contains(string(b), "warren-cni") {
		t.Errorf("conflist still chained after uninstall:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(e.bpffs, "warren", "n1")); !os.IsNotExist(err) {
		t.Errorf("pins left after uninstall: %v", err)
	}
}

// observeFlows opens a flow stream on the agent's flow server, once it listens.
func observeFlows(t *testing.T, addr string, f *flowv1.Filter) grpc.ServerStreamingClient[flowv1.FlowEvent] {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	var stream grpc.ServerStreamingClient[flowv1.FlowEvent]
	waitFor(t, "the flow stream", func() bool {
		stream, err = flowv1.NewFlowsClient(conn).Observe(ctx, &flowv1.ObserveRequest{Filter: f}, grpc.WaitForReady(true))
		if err != nil {
			return false
		}
		_, err = stream.Header() // the server has the stream
		return err == nil
	})
	return stream
}
