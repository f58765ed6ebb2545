package localcluster

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"github.com/warrenmesh/warren/internal/kubebin"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig(), true},
		{"zero nodes", Config{Nodes: 0, CacheDir: "/tmp/x"}, false},
		{"too many nodes", Config{Nodes: maxNodes + 1, CacheDir: "/tmp/x"}, false},
		{"relative cache", Config{Nodes: 2, CacheDir: "cache"}, false},
		{"one node", Config{Nodes: 1, CacheDir: "/tmp/x"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestNodeAddressing(t *testing.T) {
	c := Config{Nodes: 3, CacheDir: "/c"}
	ns := c.nodes()
	if len(ns) != 3 {
		t.Fatalf("nodes() = %d, want 3", len(ns))
	}
	want := []struct{ name, netns, ip, cidr, gw string }{
		{"node1", "warren-node1", "10.250.0.11", "10.244.1.0/24", "10.244.1.1"},
		{"node2", "warren-node2", "10.250.0.12", "10.244.2.0/24", "10.244.2.1"},
		{"node3", "warren-node3", "10.250.0.13", "10.244.3.0/24", "10.244.3.1"},
	}
	for i, w := range want {
		n := ns[i]
		if n.Name() != w.name || n.Netns() != w.netns || n.IP() != w.ip || n.PodCIDR() != w.cidr || n.PodGW() != w.gw {
			t.Errorf("node %d = %s %s %s %s %s, want %+v", i+1, n.Name(), n.Netns(), n.IP(), n.PodCIDR(), n.PodGW(), w)
		}
	}
}

// The local cluster and the apiserver test harness share one cache: the
// Kubernetes build must stay stamped as internal/kubebin stamps it.
func TestKubernetesStampIsKubebins(t *testing.T) {
	for _, comp := range (&Config{}).components() {
		if comp.name == kubebin.Name && comp.stamp() != kubebin.Stamp() {
			t.Fatalf("stamp %q, kubebin's %q", comp.stamp(), kubebin.Stamp())
		}
		if comp.name == kubebin.Name {
			return
		}
	}
	t.Fatal("no Kubernetes component")
}

func TestPKISpecsCoverEveryNode(t *testing.T) {
	c := Config{Nodes: 2, CacheDir: "/c"}
	files := map[string]certSpec{}
	for _, s := range c.pkiSpecs() {
		files[s.file] = s
	}
	for _, f := range []string{"apiserver", "admin", "controller-manager", "scheduler", "kube-proxy", "node1-kubelet", "node2-kubelet-serving"} {
		if _, ok := files[f]; !ok {
			t.Errorf("no certificate %s", f)
		}
	}
	if s := files["node2-kubelet"]; s.cn != "system:node:node2" || s.orgs[0] != "system:nodes" {
		t.Errorf("node2 kubelet identity = %s %v, want system:node:node2 in system:nodes (the Node authorizer needs it)", s.cn, s.orgs)
	}
	api := files["apiserver"]
	for _, ip := range []string{cpIP, "127.0.0.1", kubernetesSvc} {
		if !strings.Contains(strings.Join(api.ips, ","), ip) {
			t.Errorf("apiserver certificate lacks IP %s (reached as %s)", ip, ip)
		}
	}
}

// TestNodeTemplates renders every per-node file and checks the settings this machine needs
// (see the package doc and ARCHITECTURE.md).
func TestNodeTemplates(t *testing.T) {
	c := Config{Nodes: 2, CacheDir: "/cache"}
	v := c.nodeVars(node{Index: 2}, "warren.local/pause:abc")
	render := func(tm *template.Template) string {
		var b strings.Builder
		if err := tm.Execute(&b, v); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	checks := map[string]struct {
		tm   *template.Template
		want []string
	}{
		"node.sh": {nodeScript, []string{
			"mount --make-rshared /", "hostname node2",
			"mount --bind /cache/cluster/node2/fs/etc/cni/net.d /etc/cni/net.d",
			"mount --bind /cache/cluster/node2/fs/run/netns /run/netns",
			"mount -t bpf bpf /sys/fs/bpf", "--node-ip=10.250.0.12"}},
		"containerd.toml": {containerdConfig, []string{"restrict_oom_score_adj = true", `sandbox = "warren.local/pause:abc"`, "SystemdCgroup = false", `socket_path = "/run/containerd/nri/nri.sock"`}},
		"kubelet.yaml":    {kubeletConfig, []string{"failCgroupV1: false", "cgroupDriver: cgroupfs", "cgroupRoot: /warren-cluster/node2", "address: 10.250.0.12"}},
		"kube-proxy.yaml": {kubeProxyConfig, []string{"hostnameOverride: node2", "clusterCIDR: 10.244.0.0/16", "maxPerCore: 0"}},
		"cni conflist":    {cniConfig, []string{`"subnet": "10.244.2.0/24"`, `"ipMasq": false`}},
	}
	for name, ck := range checks {
		out := render(ck.tm)
		for _, w := range ck.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s lacks %q:\n%s", name, w, out)
			}
		}
	}
}

func TestCoreDNSHasNoUpstream(t *testing.T) {
	m := renderCoreDNS("warren.local/coredns:x")
	if strings.Contains(m, "forward") {
		t.Fatal("CoreDNS must not forward: the local cluster sends nothing off the machine")
	}
	if !strings.Contains(m, "clusterIP: "+dnsSvc) || !strings.Contains(m, "image: warren.local/coredns:x") {
		t.Fatalf("CoreDNS manifest lacks its Service IP or image:\n%s", m)
	}
}

// TestEnsurePKI writes the cluster's PKI into a temporary cache and checks
// that the certificates chain to their CA with the names and usages the
// components need, and that a second run keeps them (a restarted cluster
// keeps its identity).
func TestEnsurePKI(t *testing.T) {
	c := Config{Nodes: 1, CacheDir: t.TempDir()}
	if err := c.ensurePKI(); err != nil {
		t.Fatal(err)
	}
	load := func(name string) *x509.Certificate {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(c.pkiDir(), name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: not PEM", name)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	roots := x509.NewCertPool()
	roots.AddCert(load("ca"))
	api := load("apiserver")
	if _, err := api.Verify(x509.VerifyOptions{Roots: roots, DNSName: "kubernetes.default.svc"}); err != nil {
		t.Errorf("apiserver certificate: %v", err)
	}
	if _, err := api.Verify(x509.VerifyOptions{Roots: roots, DNSName: cpIP}); err != nil {
		t.Errorf("apiserver certificate for %s: %v", cpIP, err)
	}
	kubelet := load("node1-kubelet")
	if _, err := kubelet.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("kubelet client certificate: %v", err)
	}
	if kubelet.Subject.CommonName != "system:node:node1" || len(kubelet.Subject.Organization) != 1 || kubelet.Subject.Organization[0] != "system:nodes" {
		t.Errorf("kubelet subject %v", kubelet.Subject)
	}
	if err := c.ensurePKI(); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if again := load("apiserver"); !again.Equal(api) {
		t.Error("a second run replaced the apiserver certificate")
	}
}
