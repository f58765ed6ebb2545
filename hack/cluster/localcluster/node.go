package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

const cniPluginsDir = "/usr/lib/cni" // Debian's containernetworking-plugins

func (c *Config) nodeSysCgroup(n node) string { return cgroupParent + "/" + n.Name() + "-system" }

// hostMountPoint is the folder of a per-node mount as the bind source: <state>/<node>/<path>.
func (c *Config) hostMountSource(n node, p string) string {
	return filepath.Join(c.nodeDir(n), "fs", strings.TrimPrefix(p, "/"))
}

// containerdSock is the node's containerd socket as seen from the host.
func (c *Config) containerdSock(n node) string {
	return filepath.Join(c.hostMountSource(n, "/run/containerd"), "containerd.sock")
}

var nodeScript = template.Must(template.New("node").Parse(`#!/bin/sh
# Supervisor of {{.Name}}: runs inside the node's network, mount and UTS namespaces.
set -e
mount --make-rshared /
hostname {{.Name}}
{{range .Mounts}}mount --bind {{.Src}} {{.Dst}}
{{end}}mount -t bpf bpf /sys/fs/bpf
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || echo "warning: br_netfilter is not loaded; same-node Service hairpin may fail"
set +e
containerd --config {{.Dir}}/containerd.toml >> {{.Logs}}/containerd.log 2>&1 &
echo $! > {{.Run}}/containerd.pid
i=0; while [ ! -S /run/containerd/containerd.sock ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
kubelet --config={{.Dir}}/kubelet.yaml --kubeconfig={{.PKI}}/{{.Name}}-kubelet.kubeconfig \
  --hostname-override={{.Name}} --node-ip={{.IP}} >> {{.Logs}}/kubelet.log 2>&1 &
echo $! > {{.Run}}/kubelet.pid
kube-proxy --config={{.Dir}}/kube-proxy.yaml >> {{.Logs}}/kube-proxy.log 2>&1 &
echo $! > {{.Run}}/kube-proxy.pid
wait
`))

var containerdConfig = template.Must(template.New("containerd").Parse(`version = 3
root = "{{.Dir}}/containerd-root"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "/run/containerd/runc"
        SystemdCgroup = false

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{{.Pause}}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"

# NRI's socket defaults to /var/run/nri, a host path every node would share: the second
# containerd to start found it taken and exited. Each node keeps it under its own /run/containerd.
[plugins.'io.containerd.nri.v1.nri']
  socket_path = "/run/containerd/nri/nri.sock"
`))

var kubeletConfig = template.Must(template.New("kubelet").Parse(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {{.IP}}
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: {{.PKI}}/ca.crt}
authorization:
  mode: Webhook
tlsCertFile: {{.PKI}}/{{.Name}}-kubelet-serving.crt
tlsPrivateKeyFile: {{.PKI}}/{{.Name}}-kubelet-serving.key
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: {{.CgroupRoot}}
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [{{.DNS}}]
resolvConf: {{.Dir}}/resolv.conf
registerNode: true
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
maxPods: 110
podPidsLimit: 4096
`))

var kubeProxyConfig = template.Must(template.New("kube-proxy").Parse(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {{.PKI}}/kube-proxy.kubeconfig
hostnameOverride: {{.Name}}
bindAddress: {{.IP}}
clusterCIDR: {{.ClusterCIDR}}
mode: iptables
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`))

var cniConfig = template.Must(template.New("cni").Parse(`{
  "cniVersion": "1.0.0",
  "name": "warren-local",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "{{.PodCIDR}}", "gateway": "{{.PodGW}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`))

type mount struct{ Src, Dst string }

type nodeVars struct {
	Name, IP, PodCIDR, PodGW, Dir, Logs, Run, PKI, CgroupRoot, DNS, ClusterCIDR, Pause string
	Mounts                                                                             []mount
}

func (c *Config) nodeVars(n node, pauseRef string) nodeVars {
	v := nodeVars{
		Name: n.Name(), IP: n.IP(), PodCIDR: n.PodCIDR(), PodGW: n.PodGW(),
		Dir: c.nodeDir(n), Logs: filepath.Join(c.logDir(), n.Name()), Run: filepath.Join(c.runDir(), n.Name()),
		PKI: c.pkiDir(), CgroupRoot: n.CgroupPods(), DNS: dnsSvc, ClusterCIDR: clusterCIDR, Pause: pauseRef,
	}
	for _, p := range perNodeMounts {
		v.Mounts = append(v.Mounts, mount{Src: c.hostMountSource(n, p), Dst: p})
	}
	return v
}

// writeNodeFiles writes a node's supervisor script, configs and per-node folders, and creates
// the host mount points it needs (recorded, so Down removes only those it created).
func (c *Config) writeNodeFiles(n node, pauseRef string) error {
	v := c.nodeVars(n, pauseRef)
	for _, d := range []string{v.Dir, v.Logs, v.Run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, m := range v.Mounts {
		if err := os.MkdirAll(m.Src, 0o755); err != nil {
			return err
		}
		if err := c.ensureHostDir(m.Dst); err != nil {
			return err
		}
	}
	files := []struct {
		name string
		t    *template.Template
		mode os.FileMode
	}{
		{"node.sh", nodeScript, 0o755},
		{"containerd.toml", containerdConfig, 0o644},
		{"kubelet.yaml", kubeletConfig, 0o644},
		{"kube-proxy.yaml", kubeProxyConfig, 0o644},
	}
	for _, f := range files {
		if err := writeTemplate(filepath.Join(v.Dir, f.name), f.t, v, f.mode); err != nil {
			return err
		}
	}
	if err := writeTemplate(filepath.Join(c.hostMountSource(n, "/etc/cni/net.d"), "10-warren-local.conflist"), cniConfig, v, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(v.Dir, "resolv.conf"), []byte("# the local cluster has no upstream DNS\nnameserver "+dnsSvc+"\n"), 0o644); err != nil {
		return err
	}
	// The node's /opt/cni/bin starts with Debian's plugins, as a node image would ship them.
	entries, err := os.ReadDir(cniPluginsDir)
	if err != nil {
		return fmt.Errorf("CNI plugins: %w (is containernetworking-plugins installed?)", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(cniPluginsDir, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.hostMountSource(n, "/opt/cni/bin"), e.Name()), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func writeTemplate(path string, t *template.Template, v any, mode os.FileMode) error {
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(b.String()), mode)
}

// startNode starts a node's supervisor: nsenter into its netns, unshare a mount and UTS
// namespace with private propagation, then the script.
func (c *Config) startNode(ctx context.Context, h *hierarchies, n node) error {
	if err := h.ensure(c.nodeSysCgroup(n)); err != nil {
		return err
	}
	if err := h.ensure(n.CgroupPods()); err != nil {
		return err
	}
	d := daemon{
		Name:   n.Name() + "/supervisor",
		Cgroup: c.nodeSysCgroup(n),
		Netns:  netnsPath(n.Netns()),
		Argv:   []string{"unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", filepath.Join(c.nodeDir(n), "node.sh")},
	}
	return c.start(d, h)
}

// NodeExec runs a command inside a node's mount and network namespaces (as
// the node's own processes see its files, bpffs and links) and returns its
// combined output.
func (c *Config) NodeExec(ctx context.Context, nodeName string, args ...string) (string, error) {
	pid := c.readPid(nodeName + "/supervisor")
	if pid == 0 || !c.alive(nodeName+"/supervisor") {
		return "", fmt.Errorf("node %s is not running", nodeName)
	}
	argv := append([]string{"-t", strconv.Itoa(pid), "-m", "-n", "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", strings.Join(args, " "), nodeName, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// NodeRoot is a path on the host to a node's root as its processes see it
// (/proc/<supervisor pid>/root): files in the node's private mounts, such as
// its bpffs, are readable below it.
func (c *Config) NodeRoot(nodeName string) (string, error) {
	if !c.alive(nodeName + "/supervisor") {
		return "", fmt.Errorf("node %s is not running", nodeName)
	}
	return fmt.Sprintf("/proc/%d/root", c.readPid(nodeName+"/supervisor")), nil
}
