package localcluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/warrenmesh/warren/internal/kubebin"
)

// Versions of the components the cluster builds from the Go module proxy.
const (
	KubernetesVersion = kubebin.Version
	ContainerdVersion = "v2.4.2"
	CoreDNSVersion    = "v1.15.0"
)

// Fixed addresses of the local cluster. Nothing here routes off the machine.
const (
	cpNetns       = "warren-cp"
	cpBridge      = "wcbr0"
	cpIP          = "10.250.0.1"
	nodeSubnet    = "10.250.0.0/24"
	clusterCIDR   = "10.244.0.0/16"
	serviceCIDR   = "10.96.0.0/16"
	kubernetesSvc = "10.96.0.1"
	dnsSvc        = "10.96.0.10"
	apiPort       = 6443
	// HostAPIAddr is where the host's network namespace reaches the apiserver (a relay).
	HostAPIAddr  = "127.0.0.1:16443"
	cgroupParent = "warren-cluster"
	maxNodes     = 50
)

// Config says where the cluster keeps its binaries and state, and how many nodes it has.
type Config struct {
	// Nodes is the number of worker nodes (default 2).
	Nodes int
	// CacheDir holds built binaries and sources; it survives Down (default ~/.cache/warren).
	CacheDir string
	// RepoDir is the Warren checkout, used to build images from its Go packages.
	RepoDir string
	// Log receives progress lines (default os.Stderr).
	Log io.Writer
}

// DefaultConfig returns a Config for a 2-node cluster with the cache in ~/.cache/warren
// (or $WARREN_CACHE).
func DefaultConfig() Config {
	return Config{Nodes: 2, CacheDir: kubebin.DefaultCacheDir(), Log: os.Stderr}
}

// Validate checks the configuration before anything is touched.
func (c *Config) Validate() error {
	if c.Nodes < 1 || c.Nodes > maxNodes {
		return fmt.Errorf("nodes: %d is out of range 1..%d", c.Nodes, maxNodes)
	}
	if c.CacheDir == "" || !filepath.IsAbs(c.CacheDir) {
		return fmt.Errorf("cache dir %q: must be an absolute path", c.CacheDir)
	}
	if c.Log == nil {
		c.Log = os.Stderr
	}
	return nil
}

// ErrNotRoot is returned when the caller is not root: namespaces, mounts and cgroups need it.
var ErrNotRoot = errors.New("the local cluster needs root (network namespaces, mounts, cgroups)")

func (c *Config) binDir() string   { return kubebin.BinDir(c.CacheDir) }
func (c *Config) stateDir() string { return filepath.Join(c.CacheDir, "cluster") }
func (c *Config) imageDir() string { return filepath.Join(c.CacheDir, "images") }
func (c *Config) pkiDir() string   { return filepath.Join(c.stateDir(), "pki") }
func (c *Config) logDir() string   { return filepath.Join(c.stateDir(), "logs") }
func (c *Config) runDir() string   { return filepath.Join(c.stateDir(), "run") }
func (c *Config) bin(name string) string {
	return filepath.Join(c.binDir(), name)
}

// KubeconfigPath is the admin kubeconfig usable from the host's network namespace.
func (c *Config) KubeconfigPath() string { return filepath.Join(c.stateDir(), "kubeconfig") }

// node describes one worker node; index starts at 1.
type node struct {
	Index int
}

func (n node) Name() string    { return fmt.Sprintf("node%d", n.Index) }
func (n node) Netns() string   { return "warren-" + n.Name() }
func (n node) IP() string      { return fmt.Sprintf("10.250.0.%d", 10+n.Index) }
func (n node) PodCIDR() string { return fmt.Sprintf("10.244.%d.0/24", n.Index) }
func (n node) PodGW() string   { return fmt.Sprintf("10.244.%d.1", n.Index) }
func (n node) CPVeth() string  { return fmt.Sprintf("wcn%d", n.Index) }
func (n node) CgroupPods() string {
	return "/" + cgroupParent + "/" + n.Name()
}

func (c *Config) nodes() []node {
	ns := make([]node, c.Nodes)
	for i := range ns {
		ns[i] = node{Index: i + 1}
	}
	return ns
}

func (c *Config) nodeDir(n node) string { return filepath.Join(c.stateDir(), n.Name()) }

// perNodeMounts are the host paths each node sees as its own: the bind-mount source is a folder
// of the node's state dir. Order matters only for readability.
var perNodeMounts = []string{
	"/etc/cni/net.d",
	"/opt/cni/bin",
	"/var/lib/kubelet",
	"/var/lib/cni",
	"/var/log/pods",
	"/var/log/containers",
	"/run/containerd",
	"/run/netns",
	"/run/warren",
}
