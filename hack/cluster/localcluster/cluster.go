package localcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// clusterInfo is what a running cluster records about itself.
type clusterInfo struct {
	Nodes   int       `json:"nodes"`
	Started time.Time `json:"started"`
}

func (c *Config) infoFile() string { return filepath.Join(c.stateDir(), "cluster.json") }

func (c *Config) readInfo() (clusterInfo, bool) {
	var ci clusterInfo
	b, err := os.ReadFile(c.infoFile())
	if err != nil || json.Unmarshal(b, &ci) != nil {
		return ci, false
	}
	return ci, true
}

// Running reports whether a cluster started by this configuration is up and its apiserver
// answers, and how many nodes it has.
func (c *Config) Running() (int, bool) {
	ci, ok := c.readInfo()
	if !ok || !c.alive("kube-apiserver") || c.apiReady() != nil {
		return 0, false
	}
	return ci.Nodes, true
}

// RestConfig is a client configuration for the cluster, usable from the host.
func (c *Config) RestConfig() (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = 50, 100
	return rc, nil
}

// Clientset returns a typed client for the cluster.
func (c *Config) Clientset() (*kubernetes.Clientset, error) {
	rc, err := c.RestConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

// Kubectl runs the cluster's own kubectl with the admin kubeconfig; stdin may be nil.
func (c *Config) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bin("kubectl"), append([]string{"--kubeconfig", c.KubeconfigPath()}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Up brings the cluster up, or reuses the running one. It builds what is missing first.
func (c *Config) Up(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	start := time.Now()
	if n, ok := c.Running(); ok {
		if n != c.Nodes {
			return fmt.Errorf("a cluster with %d node(s) is running; run `down` first to get %d", n, c.Nodes)
		}
		fmt.Fprintf(c.Log, "==> a cluster with %d node(s) is already running; reusing it\n", n)
		return nil
	}
	if c.leftoversExist() {
		fmt.Fprintln(c.Log, "==> a previous cluster is partly up or was not torn down; removing it first")
		if err := c.Down(ctx); err != nil {
			return stepErr("clean up the previous cluster", "", err)
		}
	}
	if ln, err := net.Listen("tcp", HostAPIAddr); err != nil {
		return stepErr("check the host port", "", fmt.Errorf("%s is taken by another program, and the apiserver relay needs it: %w", HostAPIAddr, err))
	} else {
		ln.Close()
	}
	if err := ensureDeps(ctx, c.Log); err != nil {
		return stepErr("install Debian packages", "", err)
	}
	if err := c.ensureBinaries(ctx); err != nil {
		return err
	}
	for _, d := range []string{c.stateDir(), c.logDir(), c.runDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := c.ensurePKI(); err != nil {
		return stepErr("create PKI", "", err)
	}
	var pause, coredns Image
	err := c.progress(ctx, "building the pause and CoreDNS images", func(ctx context.Context) error {
		imgs, err := c.buildGoImages(ctx, map[string]string{"pause": "./hack/cluster/pause"})
		if err != nil {
			return err
		}
		pause = imgs["pause"]
		coredns, err = c.imageFromBinary("coredns", c.bin("coredns"))
		return err
	})
	if err != nil {
		return stepErr("build images", "", err)
	}
	for _, n := range c.nodes() {
		if err := c.writeNodeFiles(n, pause.Ref); err != nil {
			return stepErr("write "+n.Name()+" files", "", err)
		}
	}
	if err := c.setupNetwork(ctx); err != nil {
		return stepErr("set up network namespaces", "", err)
	}
	h, err := detectHierarchies()
	if err != nil {
		return stepErr("find cgroup hierarchies", "", err)
	}
	err = c.progress(ctx, "starting the control plane (etcd, kube-apiserver, controller-manager, scheduler)", func(ctx context.Context) error {
		return c.startControlPlane(ctx, h)
	})
	if err != nil {
		return err
	}
	err = c.progress(ctx, fmt.Sprintf("starting %d node(s) (containerd, kubelet, kube-proxy)", c.Nodes), func(ctx context.Context) error {
		for _, n := range c.nodes() {
			if err := c.startNode(ctx, h, n); err != nil {
				return stepErr("start "+n.Name(), c.logFile(n.Name()+"/supervisor"), err)
			}
		}
		for _, n := range c.nodes() {
			if err := c.waitContainerd(ctx, n, 60*time.Second); err != nil {
				return err
			}
			for _, img := range []Image{pause, coredns} {
				if err := c.importImage(ctx, n, img); err != nil {
					return stepErr("import images into "+n.Name(), c.logFile(n.Name()+"/containerd"), err)
				}
			}
		}
		return c.waitNodes(ctx, 120*time.Second)
	})
	if err != nil {
		return err
	}
	err = c.progress(ctx, "installing CoreDNS", func(ctx context.Context) error {
		if _, err := c.Kubectl(ctx, strings.NewReader(renderCoreDNS(coredns.Ref)), "apply", "-f", "-"); err != nil {
			return err
		}
		if _, err := c.Kubectl(ctx, nil, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s"); err != nil {
			return err
		}
		return c.waitDefaultServiceAccount(ctx, 60*time.Second)
	})
	if err != nil {
		return stepErr("install CoreDNS", c.logFile("node1/kubelet"), err)
	}
	b, _ := json.Marshal(clusterInfo{Nodes: c.Nodes, Started: time.Now()})
	if err := os.WriteFile(c.infoFile(), b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(c.Log, "==> cluster up with %d node(s) in %s\n    export KUBECONFIG=%s\n", c.Nodes, time.Since(start).Round(100*time.Millisecond), c.KubeconfigPath())
	return nil
}

func (c *Config) waitContainerd(ctx context.Context, n node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := output(ctx, c.bin("ctr"), "--address", c.containerdSock(n), "version"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return stepErr("wait for containerd on "+n.Name(), c.logFile(n.Name()+"/containerd"), fmt.Errorf("not serving after %s", timeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitNodes waits for every node to register, gives it the pod CIDR its CNI config uses, and
// waits for it to be Ready.
func (c *Config) waitNodes(ctx context.Context, timeout time.Duration) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for _, n := range c.nodes() {
		for {
			k8sNode, err := cs.CoreV1().Nodes().Get(ctx, n.Name(), metav1.GetOptions{})
			if err == nil && k8sNode.Spec.PodCIDR == "" {
				patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, n.PodCIDR(), n.PodCIDR())
				_, err = cs.CoreV1().Nodes().Patch(ctx, n.Name(), types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
			}
			if err == nil && nodeReady(k8sNode) {
				break
			}
			if time.Now().After(deadline) {
				why := "not registered"
				if k8sNode != nil && k8sNode.Name != "" {
					why = "not Ready"
				}
				return stepErr("wait for "+n.Name(), c.logFile(n.Name()+"/kubelet"), fmt.Errorf("%s after %s (last error: %v)", why, timeout, err))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	if n == nil {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (c *Config) waitDefaultServiceAccount(ctx context.Context, timeout time.Duration) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("default ServiceAccount: %w", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// ensureHostDir creates a host folder used as a per-node mount point if it is missing, and
// records the topmost folder it created so Down removes exactly those.
func (c *Config) ensureHostDir(p string) error {
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	top := p
	for {
		parent := filepath.Dir(top)
		if _, err := os.Stat(parent); err == nil || parent == top {
			break
		}
		top = parent
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(c.createdDirsFile(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, top)
	return err
}

// The record of created host folders lives beside the state dir, so it survives a state dir
// removed by hand.
func (c *Config) createdDirsFile() string { return filepath.Join(c.CacheDir, "cluster-created-dirs") }

func (c *Config) removeCreatedDirs() error {
	b, err := os.ReadFile(c.createdDirsFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	mounts := hostMounts()
	var errs []string
	for _, top := range strings.Fields(string(b)) {
		// Remove only empty folders, deepest first, and never a mount point.
		var dirs []string
		_ = filepath.Walk(top, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if mounts[dirs[i]] {
				errs = append(errs, dirs[i]+" is a mount point")
				continue
			}
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("host folders: %s", strings.Join(errs, "; "))
	}
	return os.Remove(c.createdDirsFile())
}

// hostMounts returns the mount points of the calling process's mount namespace.
func hostMounts() map[string]bool {
	out := map[string]bool{}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 {
			out[fs[4]] = true
		}
	}
	return out
}

// Down stops everything Up started and removes its namespaces, cgroups, state and the host
// folders it created. It is safe to run on a cluster that is partly up or already down.
func (c *Config) Down(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	var errs []string
	c.stopPidFiles(3 * time.Second) // the apiserver drains watches for longer; it needs no grace here
	if h, err := detectHierarchies(); err == nil {
		if err := h.killAll(cgroupParent, 20*time.Second); err != nil {
			errs = append(errs, err.Error())
		}
		if err := h.remove(cgroupParent); err != nil {
			errs = append(errs, err.Error())
		}
	} else {
		errs = append(errs, err.Error())
	}
	if err := c.teardownNetwork(ctx); err != nil {
		errs = append(errs, err.Error())
	}
	// Nodes' mounts lived in their own mount namespaces, gone with their processes; anything
	// still mounted under the state dir here would be a bug, so unmount it rather than delete
	// through it.
	for mp := range hostMounts() {
		if strings.HasPrefix(mp, c.stateDir()+"/") {
			if err := run(ctx, "umount", "-l", mp); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if err := c.removeCreatedDirs(); err != nil {
		errs = append(errs, err.Error())
	}
	if err := os.RemoveAll(c.stateDir()); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("down: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Leftovers lists what a cluster would leave behind: processes in its cgroups, cgroups,
// network namespaces, mounts under its state dir, the state dir, host folders it created.
// After Down it is empty.
func (c *Config) Leftovers() []string {
	var out []string
	if h, err := detectHierarchies(); err == nil {
		if ps := h.pids(cgroupParent); len(ps) > 0 {
			out = append(out, fmt.Sprintf("processes %v", ps))
		}
		if h.exists(cgroupParent) {
			out = append(out, "cgroup /"+cgroupParent)
		}
	}
	for i := 0; i <= maxNodes; i++ {
		ns := cpNetns
		if i > 0 {
			ns = node{Index: i}.Netns()
		}
		if netnsExists(ns) {
			out = append(out, "netns "+ns)
		}
	}
	for mp := range hostMounts() {
		if strings.HasPrefix(mp, c.stateDir()) {
			out = append(out, "mount "+mp)
		}
	}
	if _, err := os.Stat(c.stateDir()); err == nil {
		out = append(out, "state dir "+c.stateDir())
	}
	if _, err := os.Stat(c.createdDirsFile()); err == nil {
		out = append(out, "host folders recorded in "+c.createdDirsFile())
	}
	sort.Strings(out)
	return out
}

func (c *Config) leftoversExist() bool { return len(c.Leftovers()) > 0 }

// Status writes what runs, whether the apiserver answers, and the nodes.
func (c *Config) Status(ctx context.Context, w io.Writer) error {
	ci, ok := c.readInfo()
	if !ok {
		if c.leftoversExist() {
			fmt.Fprintln(w, "cluster: not running, but leftovers exist (run down):")
			for _, l := range c.Leftovers() {
				fmt.Fprintln(w, "  "+l)
			}
			return fmt.Errorf("cluster is not running")
		}
		fmt.Fprintln(w, "cluster: not running")
		return fmt.Errorf("cluster is not running")
	}
	fmt.Fprintf(w, "cluster: %d node(s), up since %s\n", ci.Nodes, ci.Started.Format(time.RFC3339))
	names := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "relay-cp", "relay-host"}
	for _, n := range (&Config{Nodes: ci.Nodes}).nodes() {
		for _, d := range []string{"supervisor", "containerd", "kubelet", "kube-proxy"} {
			names = append(names, n.Name()+"/"+d)
		}
	}
	healthy := true
	for _, name := range names {
		state := "running"
		if !c.alive(name) {
			state, healthy = "NOT RUNNING", false
		}
		fmt.Fprintf(w, "  %-28s %-12s pid %d, log %s\n", name, state, c.readPid(name), c.logFile(name))
	}
	if err := c.apiReady(); err != nil {
		fmt.Fprintf(w, "apiserver: NOT READY: %v\n", err)
		return fmt.Errorf("apiserver not ready")
	}
	fmt.Fprintf(w, "apiserver: ready at https://%s (kubeconfig %s)\n", HostAPIAddr, c.KubeconfigPath())
	out, err := c.Kubectl(ctx, nil, "get", "nodes", "-o", "wide")
	fmt.Fprint(w, out)
	if err != nil || !healthy {
		return fmt.Errorf("cluster is degraded")
	}
	return nil
}

// Logs copies a component's log ("kube-apiserver", "node1/kubelet", ...) to w.
func (c *Config) Logs(component string, w io.Writer) error {
	if strings.Contains(component, "..") {
		return fmt.Errorf("component %q: invalid", component)
	}
	f, err := os.Open(c.logFile(component))
	if err != nil {
		var known []string
		_ = filepath.Walk(c.logDir(), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				known = append(known, strings.TrimSuffix(strings.TrimPrefix(p, c.logDir()+"/"), ".log"))
			}
			return nil
		})
		return fmt.Errorf("no log for %q; known: %s", component, strings.Join(known, ", "))
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
