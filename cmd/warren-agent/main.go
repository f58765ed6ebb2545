// Command warren-agent is Warren's node agent (a DaemonSet): it enrolls its
// node's mesh pods in the eBPF redirection, hands their network namespaces to
// the node's ztunnel, serves and installs the warren-cni plugin, and exports
// metrics. It removes its links, pins and CNI entry when it stops because
// Warren is being removed (its DaemonSet or namespace deleted), and leaves
// them for the next agent otherwise; --uninstall removes them at once. Every
// flag can also be set as an environment variable WARREN_<FLAG> with dashes
// as underscores (WARREN_NODE_NAME, ...).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/internal/flagenv"
	"github.com/warrenmesh/warren/internal/zds"
	"github.com/warrenmesh/warren/nodeagent"
	"github.com/warrenmesh/warren/nodeagent/cni"
	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// The agent switches network namespaces on other threads: the main thread
// must stay in the node's netns.
func init() { runtime.LockOSThread() }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "warren-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	self, _ := os.Executable()
	fs := pflag.NewFlagSet("warren-agent", pflag.ContinueOnError)
	fs.String("node-name", "", "this node's name (spec.nodeName, from the downward API)")
	fs.String("kubeconfig", "", "kubeconfig path; in-cluster configuration if empty")
	fs.String("bpffs", nodeagent.DefaultBPFFS, "bpffs mount point (mounted if it is not one)")
	fs.String("pin-dir", "", "pin directory; <bpffs>/warren/<node-name> if empty")
	fs.String("cgroup", "", "cgroup2 directory to attach to, or a directory holding it at unified/ (a hybrid host's /sys/fs/cgroup); the cgroup2 root if empty")
	fs.Uint32("tunnel-mark", redirect.DefaultTunnelMark, fmt.Sprintf("SO_MARK of the ztunnel's own sockets (bit %#x reserved)", redirect.SourceMarkBit))
	fs.String("proc-sys", "/proc/sys", "a writable proc/sys (a container's own is read-only: mount the host's) for the pods' source-address sysctls")
	fs.Bool("source-address", true, "set up enrolled pods' routing so that apps see the client's address, not the pod's own, on connections the ztunnel delivers")
	fs.String("ztunnel-socket", zds.DefaultPath, "Unix socket the ztunnel connects to")
	fs.String("cni-socket", cniapi.DefaultSocket, "Unix socket the warren-cni plugin calls")
	fs.Bool("install-cni", true, "chain warren-cni into the node's CNI configuration")
	fs.String("cni-binary", filepath.Join(filepath.Dir(self), "warren-cni"), "warren-cni binary to install")
	fs.String("cni-bin-dir", "/opt/cni/bin", "the node's CNI binary folder")
	fs.String("cni-conf-dir", "/etc/cni/net.d", "the node's CNI configuration folder")
	fs.Duration("cni-timeout", 0, "how long the plugin waits for the agent at ADD; 30s if zero")
	fs.String("metrics-addr", nodeagent.DefaultMetricsAddr, `metrics and health address; "-" for none`)
	fs.String("pod-name", "", "this agent's pod (downward API): at exit it uninstalls if the pod's DaemonSet or namespace is being deleted; never if empty")
	fs.String("pod-namespace", "", "this agent's pod's namespace (downward API)")
	fs.String("flow-addr", nodeagent.DefaultFlowAddr, `flow stream (gRPC, warrenctl observe) address; "-" for none`)
	fs.Bool("uninstall", false, "remove every link, pin and the CNI plugin of this node's agent, and exit")
	v, log, err := flagenv.Parse(fs, os.Args[1:], "WARREN")
	if err != nil {
		return err
	}
	klog.SetSlogLogger(log.With("component", "client-go"))

	cfg := nodeagent.AgentConfig{
		Node:       v.GetString("node-name"),
		Kubeconfig: v.GetString("kubeconfig"),
		Kernel: nodeagent.Options{
			BPFFS:           v.GetString("bpffs"),
			PinDir:          v.GetString("pin-dir"),
			Cgroup:          v.GetString("cgroup"),
			TunnelMark:      v.GetUint32("tunnel-mark"),
			NoSourceAddress: !v.GetBool("source-address"),
			ProcSys:         v.GetString("proc-sys"),
		},
		ZtunnelSocket: v.GetString("ztunnel-socket"),
		CNISocket:     v.GetString("cni-socket"),
		InstallCNI:    v.GetBool("install-cni"),
		CNI: cni.Config{
			Binary:  v.GetString("cni-binary"),
			BinDir:  v.GetString("cni-bin-dir"),
			ConfDir: v.GetString("cni-conf-dir"),
			Timeout: v.GetDuration("cni-timeout"),
		},
		MetricsAddr:  v.GetString("metrics-addr"),
		PodName:      v.GetString("pod-name"),
		PodNamespace: v.GetString("pod-namespace"),
		FlowAddr:     v.GetString("flow-addr"),
	}
	if v.GetBool("uninstall") {
		return nodeagent.UninstallAgent(cfg, log)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return nodeagent.RunAgent(ctx, cfg, log)
}
