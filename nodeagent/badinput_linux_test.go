package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/nodeagent/cni"
	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// The child side of TestMissingPrivileges: the test binary run again, in a
// process without some capabilities, opens a dataplane and prints the error.
const childEnv = "WARREN_TEST_OPEN_CHILD"

func TestMissingPrivilegesChild(t *testing.T) {
	bpffs := os.Getenv(childEnv)
	if bpffs == "" {
		t.Skip("run by TestMissingPrivileges")
	}
	_, err := Open(context.Background(), Options{Node: "n1", BPFFS: bpffs})
	fmt.Printf("OPEN-ERROR: %v\n", err)
}

// runWithout runs TestMissingPrivilegesChild in a process whose bounding
// set lacks caps (root gets no more than its bounding set at exec): the
// bounding set is dropped on a locked thread, which forks the child and dies.
func runWithout(t *testing.T, bpffs string, caps ...uintptr) string {
	t.Helper()
	type result struct {
		out []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its reduced capabilities
		for _, c := range caps {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
				res <- result{nil, fmt.Errorf("drop capability %d: %w", c, err)}
				return
			}
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissingPrivilegesChild$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+bpffs)
		out, err := cmd.CombinedOutput()
		res <- result{out, err}
	}()
	r := <-res
	t.Logf("child without capabilities %v: %s", caps, r.out)
	if r.err != nil {
		t.Fatalf("child: %v\n%s", r.err, r.out)
	}
	for _, line := range strings.Split(string(r.out), "\n") {
		if s, ok := strings.CutPrefix(line, "OPEN-ERROR: "); ok {
			return s
		}
	}
	t.Fatalf("child said nothing:\n%s", r.out)
	return ""
}

// An agent without CAP_BPF (nor CAP_SYS_ADMIN, which also allows bpf()),
// and one without a bpffs that it may not mount: each says what is missing,
// and neither leaves a pin (so no link) behind.
func TestMissingPrivileges(t *testing.T) {
	e := newEnv(t)
	must(t, ensureBPFFS(e.bpffs))
	msg := runWithout(t, e.bpffs, unix.CAP_BPF, unix.CAP_SYS_ADMIN)
	for _, want := range []string{"operation not permitted", "the agent lacks CAP_BPF, CAP_SYS_ADMIN"} {
		if !strings.Contains(msg, want) {
			t.Errorf("without CAP_BPF: %q, want it to say %q", msg, want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.bpffs, "warren")); !os.IsNotExist(err) {
		t.Errorf("pins after a refused Open: %v", err)
	}

	plain := t.TempDir() // a bpffs nobody mounted
	msg = runWithout(t, plain, unix.CAP_SYS_ADMIN)
	for _, want := range []string{plain + " is not a bpffs", "operation not permitted"} {
		if !strings.Contains(msg, want) {
			t.Errorf("without a bpffs: %q, want it to say %q", msg, want)
		}
	}
	if entries, err := os.ReadDir(plain); err != nil || len(entries) != 0 {
		t.Errorf("folder after a refused Open: %v, %v", entries, err)
	}
	if left := e.stillAttached(); len(left) != 0 {
		t.Errorf("programs attached: %v", left)
	}
}

// A pod whose network namespace vanished, while the agent was away (a
// restarted agent drops it as it adopts the pins) or under the running agent
// (before the CNI DEL): its sk_lookup link is severed with the netns,
// unenrolling it works, and the maps and pins are back to what they were.
func TestVanishedNetns(t *testing.T) {
	e := newEnv(t)
	opts := e.options("n1")
	k := e.open(opts)
	vanish := func(k *Kernel, uid string, n int) {
		t.Helper()
		name := fmt.Sprintf("wtest-%d-vanish%d", os.Getpid(), n)
		ns := addNetns(t, name)
		ip4 := netip.MustParseAddr(fmt.Sprintf("10.78.0.%d", n))
		enroll(t, k, Pod{UID: uid, Netns: filepath.Join(netns.RunDir, name), IPs: []netip.Addr{ip4}})
		waitEntries(t, k, map[string]int{"enrolled": 1, "pod_ips": 1})
		ns.Close()
		must(t, netns.Delete(name))
		// The kernel tears a netns down later, in its own time; its links then read netns 0.
		pin := filepath.Join(k.opts.PinDir, linksDir, skLookupPrefix+uid)
		waitFor(t, "the netns gone, its sk_lookup link severed", func() bool {
			l, err := link.LoadPinnedLink(pin, nil)
			if err != nil {
				return false
			}
			defer l.Close()
			info, err := l.Info()
			return err == nil && info.NetNs() != nil && info.NetNs().NetnsInode == 0
		})
		if err := k.Enroll(ctx, Pod{UID: uid, Netns: filepath.Join(netns.RunDir, name), IPs: []netip.Addr{ip4}}); err == nil ||
			!strings.Contains(err.Error(), "no such file") {
			t.Errorf("enroll in the vanished netns: %v", err)
		}
	}
	baseline := map[string]int{"enrolled": 0, "pod_ips": 0, "node_ips": 0, "sockets": 0}
	checkPins := func(k *Kernel) {
		t.Helper()
		entries, _ := os.ReadDir(filepath.Join(k.opts.PinDir, linksDir))
		if len(entries) != 3 {
			t.Errorf("pins after the vanished pod left: %v", entries)
		}
	}

	vanish(k, "away", 1)
	must(t, k.Close())
	k2 := e.open(opts)
	if pods, _ := k2.Pods(ctx); len(pods) != 0 {
		t.Errorf("adopted a pod whose netns vanished: %v", pods)
	}
	waitEntries(t, k2, baseline)
	checkPins(k2)

	vanish(k2, "under", 2)
	must(t, k2.Unenroll(ctx, "under"))
	waitEntries(t, k2, baseline)
	checkPins(k2)
}

// What the CNI plugin may send that the agent must refuse or pass through,
// over the socket and against a real apiserver: an unknown pod, a pod of
// another node or with another UID, a request without netns, and malformed
// mesh labels (the pod runs outside the mesh, and the reason says why).
func TestCNIBadInput(t *testing.T) {
	client := startAPIServer(t)
	ctx := context.Background()
	meshNamespace(t, client)
	_, err := client.CoreV1().Namespaces().Create(ctx, testNS("odd", map[string]string{LabelMesh: "on"}), metav1.CreateOptions{})
	must(t, err)
	_, err = client.CoreV1().ServiceAccounts("odd").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	must(t, err)
	for _, p := range []struct{ ns, name, node, label string }{
		{"mesh", "ok", "node1", ""}, {"mesh", "elsewhere", "node2", ""}, {"mesh", "yes", "node1", "yes"}, {"odd", "plain", "node1", ""},
	} {
		pod := kubePod(p.ns, p.name, "", p.node, "")
		if p.label != "" {
			podLabel(p.label)(pod)
		}
		_, err := client.CoreV1().Pods(p.ns).Create(ctx, pod, metav1.CreateOptions{})
		must(t, err)
	}
	dp := newRecordingDataplane()
	r := startReconciler(t, client, dp, fixedNetns{})
	sock := filepath.Join(t.TempDir(), "cni.sock")
	srv, err := cni.Listen(sock, r.rec, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	must(t, err)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	defer func() { cancel(); must(t, <-done) }()
	cli := cniapi.NewClient(sock)
	ips := []netip.Addr{netip.MustParseAddr("10.244.1.9")}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()

	for _, tc := range []struct {
		what string
		req  cniapi.AddRequest
		want string
	}{
		{"unknown pod", cniapi.AddRequest{Namespace: "mesh", Name: "nope", Netns: "/proc/self/ns/net", IPs: ips}, "pod mesh/nope: unknown pod"},
		{"unknown namespace", cniapi.AddRequest{Namespace: "nowhere", Name: "ok", Netns: "/proc/self/ns/net", IPs: ips}, "unknown pod"},
		{"another node's pod", cniapi.AddRequest{Namespace: "mesh", Name: "elsewhere", Netns: "/proc/self/ns/net", IPs: ips}, `is on node "node2"`},
		{"another uid", cniapi.AddRequest{Namespace: "mesh", Name: "ok", UID: "not-its-uid", Netns: "/proc/self/ns/net", IPs: ips}, "the runtime says not-its-uid"},
		{"no netns", cniapi.AddRequest{Namespace: "mesh", Name: "ok", IPs: ips}, "invalid pod"},
	} {
		resp, err := cli.Add(cctx, tc.req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %+v, %v; want an error saying %q", tc.what, resp, err, tc.want)
		}
	}
	for _, tc := range []struct {
		what, ns, name, want string
	}{
		{"malformed pod label", "mesh", "yes", `label warren.dev/mesh="yes": want "enabled" or "disabled"`},
		{"malformed namespace label", "odd", "plain", `namespace odd: label warren.dev/mesh="on"`},
	} {
		resp, err := cli.Add(cctx, cniapi.AddRequest{Namespace: tc.ns, Name: tc.name, Netns: "/proc/self/ns/net", IPs: ips})
		if err != nil || resp.Enrolled || !strings.Contains(resp.Reason, tc.want) {
			t.Errorf("%s: %+v, %v; want not enrolled because %q", tc.what, resp, err, tc.want)
		}
	}
	if calls := dp.takeCalls(); len(calls) != 0 {
		t.Errorf("the dataplane was called: %v", calls)
	}
	// And a DEL for a pod never enrolled is no error.
	if err := cli.Del(cctx, cniapi.DelRequest{Namespace: "mesh", Name: "nope", ContainerID: "c"}); err != nil {
		t.Errorf("DEL of an unknown pod: %v", err)
	}
}
