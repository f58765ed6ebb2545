package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/nodeagent"
	"github.com/warrenmesh/warren/ztunnel"
	"github.com/warrenmesh/warren/ztunnel/ztunneltest"
)

// The harness enters the nodes' and pods' network namespaces on other threads (nodeagent,
// internal/netns): the main thread must stay in the host's, or every command it forks
// afterwards would start in a pod.
func init() { runtime.LockOSThread() }

// Node-side ports of the ztunnels; each runs in its own node's netns, so both use the defaults.
const (
	ztunnelAdmin = 15000
	ztunnelReady = 15021
)

// warrenL4 is Warren's L4 data path as a cluster runs it, minus Kubernetes: the node agent's
// eBPF programs (one nodeagent.Kernel per node, pins in a bpffs of the scenario's own) enroll
// the client and the server pods, and one ztunnel process per node, started in the node's
// netns from a static configuration, carries the traffic over HBONE. The load generators run
// unchanged in the client pod and connect to the server pod's own address: the kernel
// redirects them. The ztunnels run one Go scheduler thread each (--max-procs 1): in a trial on
// these 2-CPU machines that cost less CPU per request, less memory and gave more throughput
// than Go's default of one per CPU, which spends CPU on waking threads and handing goroutines
// between them.
type warrenL4 struct {
	// podAddress: the agent without source-address routing (--source-address=false), so the
	// ztunnels deliver from the pod's own address; what keeping the client's address costs.
	podAddress bool
	bin        string // the ztunnel binary, built once per run
	bpffs      string
	kernels    []*nodeagent.Kernel
	procs      []*Proc
}

func (w *warrenL4) Name() string {
	if w.podAddress {
		return "warren-l4-pod-address"
	}
	return "warren-l4"
}
func (w *warrenL4) Description() string {
	if w.podAddress {
		return "as warren-l4, with the agent's --source-address=false: the server sees the pod's own address, not the client's (run only when named in -scenarios)"
	}
	return "client → eBPF redirect → ztunnel (node1) → HBONE, TLS 1.3 mTLS → ztunnel (node2) → server, which sees the client's address; each ztunnel with --max-procs 1 (GOMAXPROCS)"
}
func (w *warrenL4) Proxies() []*Proc { return w.procs }

func (w *warrenL4) Setup(ctx context.Context, env *Env) (Target, error) {
	dir := filepath.Join(env.Dir, "warren")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Target{}, err
	}
	if w.bin == "" {
		bin := filepath.Join(dir, "ztunnel")
		// Built as make build and the images build it (grpcnotrace: see Makefile), static
		// too: `go run ./test/bench` outside make, on a machine with a C compiler, would
		// otherwise link libc for cgo's resolver, whose pages add about 1.4 MiB to each
		// ztunnel's RSS.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", bin, "github.com/warrenmesh/warren/cmd/ztunnel")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return Target{}, fmt.Errorf("build ztunnel: %w: %s", err, out)
		}
		w.bin = bin
	}
	ca, err := ztunneltest.NewCA(dir)
	if err != nil {
		return Target{}, err
	}
	// A fresh bpffs per repetition (nodeagent.Open mounts it), removed at Teardown with
	// everything pinned in it.
	w.bpffs = filepath.Join(dir, fmt.Sprintf("bpffs-%d", time.Now().UnixNano()))
	client := ztunnel.Workload{Name: "client", Namespace: "bench", ServiceAccount: "client", IPs: []netip.Addr{netip.MustParseAddr(clientIP)}, Node: "node1", Enrolled: true}
	server := ztunnel.Workload{Name: "server", Namespace: "bench", ServiceAccount: "server", IPs: []netip.Addr{netip.MustParseAddr(serverIP)}, Node: "node2", Enrolled: true}
	nodes := []struct {
		name, ns, podNS string
		pod             ztunnel.Workload
		peer            ztunnel.Workload
	}{
		{"node2", env.Topo.Node2, env.Topo.Server, server, client},
		{"node1", env.Topo.Node1, env.Topo.Client, client, server},
	}
	for _, n := range nodes {
		k, err := nodeagent.Open(ctx, nodeagent.Options{Node: n.name, BPFFS: w.bpffs, NoSourceAddress: w.podAddress, Logger: env.Log.With("agent", n.name)})
		if err != nil {
			return Target{}, err
		}
		w.kernels = append(w.kernels, k)
		uid := "bench-" + n.pod.Name
		podNetns := filepath.Join(netns.RunDir, n.podNS)
		if err := k.Enroll(ctx, nodeagent.Pod{UID: uid, Netns: podNetns, IPs: n.pod.IPs}); err != nil {
			return Target{}, err
		}
		cert, key, err := ca.WriteSVID(identity.ID{TrustDomain: identity.DefaultTrustDomain, Namespace: n.pod.Namespace, ServiceAccount: n.pod.ServiceAccount})
		if err != nil {
			return Target{}, err
		}
		cfg := ztunnel.Config{
			Node:      n.name,
			PinDir:    filepath.Join(w.bpffs, "warren", n.name),
			CABundle:  ca.Bundle,
			Certs:     map[string]ztunnel.CertPair{n.pod.Namespace + "/" + n.pod.ServiceAccount: {Cert: cert, Key: key}},
			Pods:      []ztunnel.LocalPod{{UID: uid, Netns: podNetns, Workload: n.pod}},
			Workloads: []ztunnel.Workload{n.peer},
		}
		b, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return Target{}, err
		}
		path := filepath.Join(dir, n.name+".json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return Target{}, err
		}
		p, err := env.Topo.Start(n.ns, "ztunnel-"+n.name, w.bin, "--config", path, "--log-level", "warn", "--max-procs", "1", "--drain-grace", "0")
		if err != nil {
			return Target{}, err
		}
		w.procs = append(w.procs, p)
		if err := waitReady(ctx, p, n.ns); err != nil {
			return Target{}, err
		}
	}
	// node1 first in the report, as with HAProxy.
	w.procs[0], w.procs[1] = w.procs[1], w.procs[0]
	return Target{Host: serverIP, IperfPort: iperfPort, HTTPPort: httpPort}, nil
}

// waitReady polls the ztunnel's readiness endpoint, in its node's netns.
func waitReady(ctx context.Context, p *Proc, ns string) error {
	f, err := os.Open(filepath.Join(netns.RunDir, ns))
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v); see %s", p.Name, p.err, p.logPath)
		default:
		}
		var code int
		err := netns.Do(f, func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ztunnelReady), time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(c, "GET /healthz/ready HTTP/1.0\r\n\r\n")
			var proto string
			_, err = fmt.Fscan(c, &proto, &code)
			return err
		})
		if err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 10s (status %d, %v); see %s", p.Name, code, err, p.logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *warrenL4) Teardown() error {
	var errs []error
	for _, p := range w.procs {
		p.Stop()
		select {
		case <-p.done:
		default:
			errs = append(errs, fmt.Errorf("%s (pid %d) did not stop", p.Name, p.PID))
		}
	}
	w.procs = nil
	for _, k := range w.kernels {
		if err := k.Uninstall(context.Background()); err != nil {
			errs = append(errs, err)
		}
	}
	w.kernels = nil
	if w.bpffs != "" {
		if err := unix.Unmount(w.bpffs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", w.bpffs, err))
		}
		os.Remove(w.bpffs)
		w.bpffs = ""
	}
	return errors.Join(errs...)
}
