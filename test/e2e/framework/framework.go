// Package framework holds the helpers Warren's end-to-end tests share: bring the local cluster
// up (or reuse a running one), load locally built images, apply manifests, wait for rollouts,
// exec in pods, and capture packets on a node's interfaces.
package framework

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/warrenmesh/warren/hack/cluster/localcluster"
)

// Cluster is the local cluster as the tests see it.
type Cluster struct {
	Config *localcluster.Config
	Client *kubernetes.Clientset
	// StartedHere is true when this test run brought the cluster up (so it may take it down).
	StartedHere bool
	Images      map[string]string
}

// Setup brings the cluster up with the given number of nodes, or reuses a running one, and
// loads the project's images into every node. Call it from TestMain.
func Setup(ctx context.Context, nodes int) (*Cluster, error) {
	if os.Geteuid() != 0 {
		return nil, localcluster.ErrNotRoot
	}
	cfg := localcluster.DefaultConfig()
	cfg.Nodes = nodes
	repo, err := repoRoot()
	if err != nil {
		return nil, err
	}
	cfg.RepoDir = repo
	_, running := cfg.Running()
	if err := cfg.Up(ctx); err != nil {
		return nil, err
	}
	images, err := cfg.LoadImages(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := cfg.Clientset()
	if err != nil {
		return nil, err
	}
	return &Cluster{Config: &cfg, Client: cs, StartedHere: !running, Images: images}, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no go.mod above %s", dir)
}

// Image returns a loaded image's reference by short name ("echo"), failing the test if absent.
func (c *Cluster) Image(t testing.TB, name string) string {
	t.Helper()
	ref, ok := c.Images[name]
	if !ok {
		t.Fatalf("image %q was not built (have %v)", name, c.Images)
	}
	return ref
}

// Namespace creates a namespace with a random suffix and deletes it when the test ends.
func (c *Cluster) Namespace(t testing.TB, prefix string, labels map[string]string) string {
	t.Helper()
	ctx := context.Background()
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	// Pods need the namespace's default ServiceAccount, which a controller creates.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s: no default ServiceAccount after 30s", ns.Name)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return ns.Name
}

// Apply applies a YAML manifest (kubectl apply --server-side) in namespace ns.
func (c *Cluster) Apply(t testing.TB, ns, manifest string) {
	t.Helper()
	args := []string{"apply", "--server-side", "-f", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	if _, err := c.Config.Kubectl(context.Background(), strings.NewReader(manifest), args...); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// WaitDaemonSet waits until a DaemonSet has an up-to-date, ready pod on every node it wants.
func (c *Cluster) WaitDaemonSet(t testing.TB, ns, name string, timeout time.Duration) {
	t.Helper()
	c.poll(t, timeout, "DaemonSet "+ns+"/"+name+" rolled out", func(ctx context.Context) (bool, error) {
		ds, err := c.Client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s := ds.Status
		return ds.Generation == s.ObservedGeneration && s.DesiredNumberScheduled > 0 &&
			s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberReady == s.DesiredNumberScheduled, nil
	})
}

// WaitDeployment waits until a Deployment's replicas are all updated and available.
func (c *Cluster) WaitDeployment(t testing.TB, ns, name string, timeout time.Duration) {
	t.Helper()
	c.poll(t, timeout, "Deployment "+ns+"/"+name+" rolled out", func(ctx context.Context) (bool, error) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return deploymentDone(d), nil
	})
}

func deploymentDone(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return d.Generation == s.ObservedGeneration && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
}

func (c *Cluster) poll(t testing.TB, timeout time.Duration, what string, f func(context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lastErr error
	for {
		ok, err := f(ctx)
		if ok {
			return
		}
		lastErr = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// WaitEndpoints waits until a Service's EndpointSlices list n ready endpoints.
func (c *Cluster) WaitEndpoints(t testing.TB, ns, svc string, n int, timeout time.Duration) {
	t.Helper()
	c.poll(t, timeout, fmt.Sprintf("%d ready endpoints of Service %s/%s", n, ns, svc), func(ctx context.Context) (bool, error) {
		slices, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return false, err
		}
		ready := 0
		for _, sl := range slices.Items {
			for _, ep := range sl.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					ready++
				}
			}
		}
		return ready == n, nil
	})
}

// PodsOn returns the running pods matching a label selector, by node name.
func (c *Cluster) PodsOn(t testing.TB, ns, selector string) map[string]corev1.Pod {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = p
		}
	}
	return out
}

// Exec runs a command in a pod's first container and returns its standard output.
func (c *Cluster) Exec(ctx context.Context, ns, pod string, cmd ...string) (string, error) {
	out, err := c.Config.Kubectl(ctx, nil, append([]string{"exec", "-n", ns, pod, "--"}, cmd...)...)
	return out, err
}

// Capture is a packet capture running on one interface of a node's network namespace.
type Capture struct {
	file string
	cmd  *exec.Cmd
	errb syncBuffer
}

// syncBuffer is a bytes.Buffer safe to write from the command while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartCapture captures packets matching a tcpdump filter on iface inside node's network
// namespace ("eth0" is the node's link to the others) until Stop.
func (c *Cluster) StartCapture(t testing.TB, nodeName, iface, filter string) *Capture {
	t.Helper()
	file := filepath.Join(t.TempDir(), nodeName+"-"+iface+".pcap")
	cp := &Capture{file: file}
	args := []string{"--net=/run/netns/warren-" + nodeName, "--", "tcpdump", "--immediate-mode", "-i", iface, "-U", "-s", "0", "-w", file}
	args = append(args, strings.Fields(filter)...)
	cp.cmd = exec.Command("nsenter", args...)
	cp.cmd.Stderr = &cp.errb
	if err := cp.cmd.Start(); err != nil {
		t.Fatalf("start tcpdump: %v", err)
	}
	t.Cleanup(func() { _ = cp.stop() })
	// tcpdump says "listening on" once the capture is armed.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(cp.errb.String(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start: %s", cp.errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cp
}

func (cp *Capture) stop() error {
	if cp.cmd.ProcessState != nil {
		return nil
	}
	_ = cp.cmd.Process.Signal(syscall.SIGINT)
	return cp.cmd.Wait()
}

// Stop ends the capture and returns the packets as tcpdump prints them with payloads in ASCII
// (-A), and how many packets it holds.
func (cp *Capture) Stop(t testing.TB) (text string, packets int) {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // let the last packets reach the file
	_ = cp.stop()
	out, err := exec.Command("tcpdump", "-nn", "-A", "-r", cp.file).Output()
	if err != nil {
		t.Fatalf("read capture: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, " IP ") || strings.Contains(l, " IP6 ") {
			packets++
		}
	}
	return string(out), packets
}
