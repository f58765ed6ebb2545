package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/warrenmesh/warren/nodeagent"
	"github.com/warrenmesh/warren/nodeagent/cni"
)

var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warren-cni-test")
	if err != nil {
		panic(err)
	}
	pluginBin = filepath.Join(dir, "warren-cni")
	if out, err := exec.Command("go", "build", "-o", pluginBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build warren-cni: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// dataplane records enrollments; it fails for pods named in fail.
type dataplane struct {
	mu    sync.Mutex
	pods  map[string]nodeagent.Pod
	calls []string
	fail  map[string]bool
}

func (d *dataplane) Enroll(ctx context.Context, p nodeagent.Pod) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail[p.UID] {
		return errors.New("netns gone")
	}
	d.pods[p.UID] = p
	d.calls = append(d.calls, fmt.Sprintf("enroll %s %s %v", p.UID, p.Netns, p.IPs))
	return nil
}

func (d *dataplane) Unenroll(ctx context.Context, uid string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.pods[uid]; ok {
		d.calls = append(d.calls, "unenroll "+uid)
	}
	delete(d.pods, uid)
	return nil
}

func (d *dataplane) Pods(ctx context.Context) ([]nodeagent.EnrolledPod, error) { return nil, nil }
func (d *dataplane) Close() error                                              { return nil }

func (d *dataplane) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.calls
	d.calls = nil
	return c
}

type noNetns struct{}

func (noNetns) PodNetns(uid string) (string, error) { return "", nodeagent.ErrNetnsNotFound }

func pod(ns, name, uid string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + uid), Labels: labels},
		Spec:       corev1.PodSpec{NodeName: "node1"},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
}

// startAgent runs the agent's reconciler and CNI server on a socket in a temp dir.
func startAgent(t *testing.T, dp *dataplane) string {
	t.Helper()
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh", Labels: map[string]string{nodeagent.LabelMesh: nodeagent.MeshEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
		pod("mesh", "a", "a", nil),
		pod("mesh", "out", "out", map[string]string{nodeagent.LabelMesh: nodeagent.MeshDisabled}),
		pod("mesh", "broken", "broken", nil),
		pod("plain", "d", "d", nil),
	)
	other := pod("mesh", "elsewhere", "elsewhere", nil)
	other.Spec.NodeName = "node2"
	if _, err := client.CoreV1().Pods("mesh").Create(context.Background(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rec, err := nodeagent.NewReconciler(nodeagent.ReconcilerConfig{Node: "node1", Client: client, Dataplane: dp, Netns: noNetns{}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(t.TempDir(), "cni.sock")
	srv, err := cni.Listen(socket, rec, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := rec.Run(ctx); err != nil {
			t.Errorf("reconciler: %v", err)
		}
	})
	wg.Go(func() {
		if err := srv.Serve(ctx); err != nil {
			t.Errorf("cni server: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return socket
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"02:00:00:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/netns/cni-1"}],` +
	`"ips":[{"interface":1,"address":"10.244.1.7/24","gateway":"10.244.1.1"},{"interface":1,"address":"fd00::7/64"},{"interface":0,"address":"10.244.1.1/24"}],` +
	`"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}]}`

// run runs the plugin binary as a runtime would.
func run(t *testing.T, command, socket, args, netns string) (string, error) {
	t.Helper()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"warren-pods","type":"warren-cni","agentSocket":%q,"timeout":"5s","prevResult":%s}`, socket, prevResult)
	cmd := exec.Command(pluginBin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=ctr-1", "CNI_NETNS=" + netns, "CNI_IFNAME=eth0",
		"CNI_PATH=/opt/cni/bin", "CNI_ARGS=" + args}
	cmd.Stdin = strings.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%w: %s %s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func k8sArgs(ns, name string) string {
	return fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=ctr-1;K8S_POD_UID=uid-%s", ns, name, name)
}

func sameJSON(t *testing.T, what, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("%s: output %q: %v", what, got, err)
	}
	_ = json.Unmarshal([]byte(want), &w)
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("%s: output\n%s\nwant the previous result\n%s", what, gb, wb)
	}
}

func TestPluginAgainstAgent(t *testing.T) {
	dp := &dataplane{pods: map[string]nodeagent.Pod{}, fail: map[string]bool{"uid-broken": true}}
	socket := startAgent(t, dp)

	out, err := run(t, "ADD", socket, k8sArgs("mesh", "a"), "/run/netns/cni-1")
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	sameJSON(t, "ADD enrolled", out, prevResult)
	// The pod's own addresses only, not the bridge's.
	if calls := dp.take(); !slices.Equal(calls, []string{"enroll uid-a /run/netns/cni-1 [10.244.1.7 fd00::7]"}) {
		t.Errorf("dataplane calls %q", calls)
	}

	// Not to be enrolled: passes through.
	for _, p := range [][2]string{{"plain", "d"}, {"mesh", "out"}} {
		out, err = run(t, "ADD", socket, k8sArgs(p[0], p[1]), "/run/netns/cni-2")
		if err != nil {
			t.Fatalf("ADD %s: %v", p, err)
		}
		sameJSON(t, "ADD "+p[1], out, prevResult)
	}
	out, err = run(t, "ADD", socket, "IgnoreUnknown=1", "/run/netns/cni-3")
	if err != nil {
		t.Fatalf("ADD outside Kubernetes: %v", err)
	}
	sameJSON(t, "ADD outside Kubernetes", out, prevResult)
	if calls := dp.take(); len(calls) != 0 {
		t.Errorf("dataplane calls for pods outside the mesh: %q", calls)
	}

	// Must be enrolled and cannot be, unknown pods, another node's: the pod
	// is not created.
	for _, tc := range []struct{ args, want string }{
		{k8sArgs("mesh", "broken"), "must be enrolled in the mesh and could not be"},
		{k8sArgs("mesh", "ghost"), "unknown pod"},
		{k8sArgs("mesh", "elsewhere"), "is on node"},
		{strings.Replace(k8sArgs("mesh", "a"), "K8S_POD_UID=uid-a", "K8S_POD_UID=uid-old", 1), "unknown pod"},
	} {
		_, err := run(t, "ADD", socket, tc.args, "/run/netns/cni-4")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ADD %s: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	if _, err := run(t, "ADD", filepath.Join(t.TempDir(), "none.sock"), k8sArgs("mesh", "a"), "/run/netns/cni-1"); err == nil ||
		!strings.Contains(err.Error(), "cannot reach the warren agent") {
		t.Errorf("ADD without an agent: %v", err)
	}

	// DEL unenrolls; it comes again later with no netns, and when the agent
	// is away it still succeeds.
	for i := range 2 {
		if _, err := run(t, "DEL", socket, k8sArgs("mesh", "a"), ""); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	if calls := dp.take(); !slices.Equal(calls, []string{"unenroll uid-a"}) {
		t.Errorf("dataplane calls at DEL: %q", calls)
	}
	if _, err := run(t, "DEL", filepath.Join(t.TempDir(), "none.sock"), k8sArgs("mesh", "a"), ""); err != nil {
		t.Errorf("DEL without an agent: %v", err)
	}
}
