package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/warrenmesh/warren/internal/eventually"
	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// recordingDataplane is a Dataplane that remembers what it was asked.
type recordingDataplane struct {
	mu    sync.Mutex
	pods  map[string]Pod
	calls []string
	fail  int // the next fail Enroll calls fail
	// enrollHook, if set, runs at the start of every Enroll, outside mu:
	// a test's way to make one pod's enrollment slow.
	enrollHook func(ctx context.Context, pod Pod)
}

func newRecordingDataplane(adopted ...Pod) *recordingDataplane {
	d := &recordingDataplane{pods: map[string]Pod{}}
	for _, p := range adopted {
		d.pods[p.UID] = p
	}
	return d
}

func (d *recordingDataplane) Enroll(ctx context.Context, pod Pod) error {
	if d.enrollHook != nil {
		d.enrollHook(ctx, pod)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail > 0 {
		d.fail--
		d.calls = append(d.calls, "enroll "+pod.UID+" failed")
		return errors.New("injected failure")
	}
	d.calls = append(d.calls, fmt.Sprintf("enroll %s %s %v %v", pod.UID, pod.Netns, pod.IPs, pod.NodeIPs))
	d.pods[pod.UID] = pod
	return nil
}

func (d *recordingDataplane) Unenroll(ctx context.Context, uid string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "unenroll "+uid)
	delete(d.pods, uid)
	return nil
}

func (d *recordingDataplane) Pods(ctx context.Context) ([]EnrolledPod, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []EnrolledPod
	for _, p := range d.pods {
		out = append(out, EnrolledPod{UID: p.UID, IPs: p.IPs, NodeIPs: p.NodeIPs})
	}
	return out, nil
}

func (d *recordingDataplane) Close() error { return nil }

func (d *recordingDataplane) enrolled() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var uids []string
	for uid := range d.pods {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	return uids
}

// takeCalls returns the calls so far and forgets them.
func (d *recordingDataplane) takeCalls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.calls
	d.calls = nil
	return c
}

type recordingTunnel struct {
	mu   sync.Mutex
	pods map[string]TunnelPod
}

func (t *recordingTunnel) AddPod(ctx context.Context, p TunnelPod) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pods[p.UID] = p
	return nil
}

func (t *recordingTunnel) DeletePod(ctx context.Context, uid string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pods, uid)
	return nil
}

func (t *recordingTunnel) uids() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var uids []string
	for uid := range t.pods {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	return uids
}

// fixedNetns finds the netns of every pod at /netns/<uid>, except those it is told about.
type fixedNetns struct{ missing map[string]bool }

func (f fixedNetns) PodNetns(uid string) (string, error) {
	if f.missing[uid] {
		return "", ErrNetnsNotFound
	}
	return "/netns/" + uid, nil
}

type recTest struct {
	t      *testing.T
	client kubernetes.Interface
	dp     *recordingDataplane
	tun    *recordingTunnel
	rec    *Reconciler
}

func startReconciler(t *testing.T, client kubernetes.Interface, dp *recordingDataplane, finder NetnsFinder) *recTest {
	t.Helper()
	tun := &recordingTunnel{pods: map[string]TunnelPod{}}
	rec, err := NewReconciler(ReconcilerConfig{
		Node: "node1", Client: client, Dataplane: dp, Tunnel: tun, Netns: finder,
		Logger: slog.New(slog.NewTextHandler(testLogWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &recTest{t: t, client: client, dp: dp, tun: tun, rec: rec}
}

type testLogWriter struct{ tb testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// eventually waits until the dataplane and the tunnel both have exactly uids.
func (r *recTest) eventually(what string, uids ...string) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, tun := r.dp.enrolled(), r.tun.uids()
		if slices.Equal(got, uids) && slices.Equal(tun, uids) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: enrolled %v, tunnel has %v, want %v", what, got, tun, uids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *recTest) updatePod(ns, name string, f func(*corev1.Pod)) {
	r.t.Helper()
	p, err := r.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	f(p)
	if _, err := r.client.CoreV1().Pods(ns).Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *recTest) setNSLabel(name, value string) {
	r.t.Helper()
	ns, err := r.client.CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	if value == "" {
		delete(ns.Labels, LabelMesh)
	} else {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[LabelMesh] = value
	}
	if _, err := r.client.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

func kubePod(ns, name, uid, node, ip string, mut ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			HostIP: "10.250.0.11", HostIPs: []corev1.HostIP{{IP: "10.250.0.11"}}},
	}
	for _, f := range mut {
		f(p)
	}
	return p
}

func TestReconcilerFollowsLabels(t *testing.T) {
	client := fake.NewClientset(
		testNS("mesh", map[string]string{LabelMesh: MeshEnabled}),
		testNS("plain", nil),
		kubePod("mesh", "a", "uid-a", "node1", "10.244.1.2"),
		kubePod("mesh", "b", "uid-b", "node1", "10.244.1.3", podLabel(MeshDisabled)),
		kubePod("mesh", "c", "uid-c", "node2", "10.244.2.2"),
		kubePod("mesh", "h", "uid-h", "node1", "10.250.0.11", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		kubePod("mesh", "bad", "uid-bad", "node1", "10.244.1.9", podLabel("off")),
		kubePod("plain", "d", "uid-d", "node1", "10.244.1.4"),
	)
	r := startReconciler(t, client, newRecordingDataplane(), fixedNetns{})
	r.eventually("start", "uid-a")
	if calls := r.dp.takeCalls(); !slices.Equal(calls, []string{"enroll uid-a /netns/uid-a [10.244.1.2] [10.250.0.11]"}) {
		t.Errorf("calls at start: %q", calls)
	}
	r.tun.mu.Lock()
	p := r.tun.pods["uid-a"]
	r.tun.mu.Unlock()
	if p.Namespace != "mesh" || p.Name != "a" || p.Netns != "/netns/uid-a" {
		t.Errorf("tunnel told %+v", p)
	}

	// Opting out and back in, without a restart.
	r.updatePod("mesh", "a", podLabel(MeshDisabled))
	r.eventually("pod opted out")
	r.updatePod("mesh", "a", func(p *corev1.Pod) { delete(p.Labels, LabelMesh) })
	r.eventually("pod back in", "uid-a")
	r.updatePod("mesh", "b", podLabel(MeshEnabled))
	r.eventually("pod b in", "uid-a", "uid-b")

	// The namespace label decides for all its pods.
	r.setNSLabel("mesh", "")
	r.eventually("namespace label removed")
	r.setNSLabel("plain", MeshEnabled)
	r.eventually("other namespace enrolled", "uid-d")
	r.setNSLabel("mesh", "yes please")
	r.eventually("malformed namespace label", "uid-d")
	r.setNSLabel("mesh", MeshEnabled)
	r.eventually("namespace label back", "uid-a", "uid-b", "uid-d")

	// A new address is an update; deleting the pod unenrolls it.
	r.dp.takeCalls()
	r.updatePod("mesh", "a", func(p *corev1.Pod) { p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::2"}) })
	waitUntil(t, "new address", func() bool {
		return slices.Contains(r.dp.takeCalls(), "enroll uid-a /netns/uid-a [10.244.1.2 fd00::2] [10.250.0.11]")
	})
	if err := client.CoreV1().Pods("mesh").Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.eventually("pod deleted", "uid-b", "uid-d")

	// A pod replaced under the same name: the old one goes, the new one comes.
	if err := client.CoreV1().Pods("mesh").Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("mesh").Create(context.Background(), kubePod("mesh", "b", "uid-b2", "node1", "10.244.1.7"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.eventually("pod replaced", "uid-b2", "uid-d")

	// A finished pod leaves the mesh.
	r.updatePod("plain", "d", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	r.eventually("pod finished", "uid-b2")
}

func TestReconcilerRetriesAndWaits(t *testing.T) {
	client := fake.NewClientset(
		testNS("mesh", map[string]string{LabelMesh: MeshEnabled}),
		kubePod("mesh", "a", "uid-a", "node1", "10.244.1.2"),
		kubePod("mesh", "noip", "uid-noip", "node1", "", func(p *corev1.Pod) {
			p.Status = corev1.PodStatus{Phase: corev1.PodPending}
		}),
		kubePod("mesh", "nons", "uid-nons", "node1", "10.244.1.5"),
	)
	dp := newRecordingDataplane()
	dp.fail = 2
	r := startReconciler(t, client, dp, fixedNetns{missing: map[string]bool{"uid-nons": true}})
	r.eventually("after two failures", "uid-a")
	if calls := dp.takeCalls(); len(calls) != 3 || calls[0] != "enroll uid-a failed" || calls[1] != "enroll uid-a failed" {
		t.Errorf("calls: %q", calls)
	}
	// The pod without an IP is enrolled once it has one.
	r.updatePod("mesh", "noip", func(p *corev1.Pod) {
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.1.3"}}}
	})
	r.eventually("pod got an IP", "uid-a", "uid-noip")
}

// An agent restarted with pods still enrolled in the kernel: those still on
// the node are enrolled again (with their netns, so the tunnel hears of them),
// those gone are unenrolled.
func TestReconcilerAdopts(t *testing.T) {
	client := fake.NewClientset(
		testNS("mesh", map[string]string{LabelMesh: MeshEnabled}),
		kubePod("mesh", "a", "uid-a", "node1", "10.244.1.2"),
	)
	dp := newRecordingDataplane(
		Pod{UID: "uid-a", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.2")}},
		Pod{UID: "uid-gone", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.9")}},
	)
	r := startReconciler(t, client, dp, fixedNetns{})
	r.eventually("adopted", "uid-a")
	calls := dp.takeCalls()
	slices.Sort(calls)
	if want := []string{"enroll uid-a /netns/uid-a [10.244.1.2] [10.250.0.11]", "unenroll uid-gone"}; !slices.Equal(calls, want) {
		t.Errorf("calls %q, want %q", calls, want)
	}
}

func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	eventually.True(tb, what, 10*time.Second, cond)
}

func TestProcNetnsFinder(t *testing.T) {
	proc := t.TempDir()
	self := "net:[4026531840]"
	mk := func(pid, cgroup, netns string) {
		dir := filepath.Join(proc, pid)
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(netns, filepath.Join(dir, "ns", "net")); err != nil {
			t.Fatal(err)
		}
	}
	mk("self", "0::/\n", self)
	mk("1", "0::/init.scope\n", self)
	// cgroupfs driver, hybrid hierarchy (the local cluster's nodes)
	mk("100", "12:memory:/warren-cluster/node1/kubepods/besteffort/pod1111-aa/abc\n0::/\n", "net:[1]")
	// systemd driver, pure cgroup2
	mk("200", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2222_bb.slice/cri-containerd-x.scope\n", "net:[2]")
	// a host-network pod's process
	mk("300", "0::/kubepods/pod3333/x\n", self)
	// another pod whose UID has this one's as a prefix
	mk("400", "0::/kubepods/pod1111-aaa/x\n", "net:[4]")
	f := ProcNetnsFinder{Proc: proc}
	for uid, want := range map[string]string{
		"1111-aa":  filepath.Join(proc, "100", "ns", "net"),
		"2222-bb":  filepath.Join(proc, "200", "ns", "net"),
		"1111-aaa": filepath.Join(proc, "400", "ns", "net"),
		"3333":     "",
		"4444":     "",
		"":         "",
	} {
		got, err := f.PodNetns(uid)
		if want == "" {
			if !errors.Is(err, ErrNetnsNotFound) {
				t.Errorf("PodNetns(%q) = %q, %v; want ErrNetnsNotFound", uid, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("PodNetns(%q) = %q, %v; want %q", uid, got, err, want)
		}
	}
}

// Pods are enrolled in parallel: the workqueue keeps one pod's syncs apart,
// and nothing else serialises them. Each Enroll waits (up to a deadline)
// until another one is in flight; a reconciler that enrolls one pod at a
// time gets there with a concurrency of 1.
func TestReconcilerEnrollsConcurrently(t *testing.T) {
	const n = 20
	objs := []runtime.Object{testNS("mesh", map[string]string{LabelMesh: MeshEnabled})}
	var uids []string
	for i := range n {
		uid := fmt.Sprintf("uid-%02d", i)
		uids = append(uids, uid)
		objs = append(objs, kubePod("mesh", fmt.Sprintf("p%02d", i), uid, "node1", fmt.Sprintf("10.244.1.%d", 10+i)))
	}
	slices.Sort(uids)
	dp := newRecordingDataplane()
	var (
		mu                sync.Mutex
		inFlight, maxSeen int
		overlapped        = make(chan struct{})
	)
	// The deadline only bounds a failing run: a serial reconciler waits it
	// out once, on its first pod, and the rest pass.
	deadline, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dp.enrollHook = func(ctx context.Context, _ Pod) {
		mu.Lock()
		inFlight++
		if inFlight > maxSeen {
			maxSeen = inFlight
			if maxSeen == 2 {
				close(overlapped)
			}
		}
		mu.Unlock()
		select {
		case <-overlapped:
		case <-deadline.Done():
		case <-ctx.Done():
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
	}
	r := startReconciler(t, fake.NewClientset(objs...), dp, fixedNetns{})
	r.eventually("all pods enrolled", uids...)
	mu.Lock()
	defer mu.Unlock()
	if maxSeen < 2 {
		t.Errorf("at most %d enrollment in flight at once, want 2 (the reconciler's workers)", maxSeen)
	}
}

// A CNI ADD answers while another pod's enrollment hangs: the runtime
// creating one pod does not wait for the agent's work on another.
func TestCNIAddNotBlockedBySlowPod(t *testing.T) {
	client := fake.NewClientset(
		testNS("mesh", map[string]string{LabelMesh: MeshEnabled}),
		kubePod("mesh", "slow", "uid-slow", "node1", "10.244.1.2"),
		kubePod("mesh", "fast", "uid-fast", "node1", "10.244.1.3"),
	)
	dp := newRecordingDataplane()
	slowStarted, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	dp.enrollHook = func(ctx context.Context, pod Pod) {
		if pod.UID != "uid-slow" {
			return
		}
		once.Do(func() { close(slowStarted) })
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	r := startReconciler(t, client, dp, fixedNetns{})
	t.Cleanup(unblock) // before the reconciler stops: cleanups run last-in first-out
	select {
	case <-slowStarted:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow pod's enrollment never started")
	}

	type result struct {
		resp cniapi.AddResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := r.rec.CNIAdd(context.Background(), cniapi.AddRequest{
			Namespace: "mesh", Name: "fast", UID: "uid-fast", ContainerID: "c-fast",
			Netns: "/run/netns/fast", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.3")},
		})
		done <- result{resp, err}
	}()
	select {
	case res := <-done:
		if res.err != nil || !res.resp.Enrolled {
			t.Fatalf("CNI ADD: %+v, %v", res.resp, res.err)
		}
	case <-time.After(10 * time.Second):
		unblock()
		t.Fatal("CNI ADD for one pod waited for another pod's enrollment")
	}
	dp.mu.Lock()
	got, slowIn := dp.pods["uid-fast"], dp.pods["uid-slow"]
	dp.mu.Unlock()
	if got.Netns != "/run/netns/fast" {
		t.Errorf("fast pod enrolled with netns %q, want the runtime's", got.Netns)
	}
	if slowIn.UID != "" {
		t.Error("the slow pod was enrolled before it was released")
	}
	unblock()
	r.eventually("both pods enrolled", "uid-fast", "uid-slow")
}
