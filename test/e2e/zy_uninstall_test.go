//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/warrenmesh/warren/bpf/redirect"
	"github.com/warrenmesh/warren/internal/podroute"
)

// It runs after the other mesh tests (files run in name order), before the cluster goes down.
// TestMeshUninstall removes Warren with `kubectl delete -k manifests/` and checks that no node
// keeps a Warren pin, CNI entry or plugin binary, that the programs the agents had
// attached are gone from the kernel, and that the pods that were in the mesh keep none of
// the source-address routing the agents had set up in them.
func TestMeshUninstall(t *testing.T) {
	cluster.InstallMesh(t)
	ns := cluster.Namespace(t, "uninstall", map[string]string{"warren.dev/mesh": "enabled"})
	deployApps(t, ns)
	for _, node := range []string{"node1", "node2"} {
		cluster.Eventually(t, time.Minute, node+"'s enrolled pods have the source-address rule", func(ctx context.Context) error {
			if n := sourceRules(ctx, t, node); n == 0 {
				return fmt.Errorf("no pod netns on %s has it", node)
			}
			return nil
		})
	}
	var progs []ebpf.ProgramID
	for _, node := range []string{"node1", "node2"} {
		ids := pinnedPrograms(t, node)
		if len(ids) == 0 {
			t.Fatalf("%s: the agent pinned no link", node)
		}
		progs = append(progs, ids...)
	}
	cluster.UninstallMesh(t)
	for _, node := range []string{"node1", "node2"} {
		cluster.Eventually(t, time.Minute, node+" clean", func(ctx context.Context) error {
			if out, err := cluster.NodeExec(ctx, node, "sh", "-c", "ls -A /sys/fs/bpf/warren 2>/dev/null; grep -l warren-cni /etc/cni/net.d/* 2>/dev/null; ls /opt/cni/bin | grep warren; true"); err != nil || strings.TrimSpace(out) != "" {
				return fmt.Errorf("left on %s: %q %v", node, out, err)
			}
			return nil
		})
	}
	for _, node := range []string{"node1", "node2"} {
		if n := sourceRules(context.Background(), t, node); n != 0 {
			t.Errorf("%s: %d pod netns keep the source-address rule after uninstall", node, n)
		}
	}
	cluster.Eventually(t, 30*time.Second, "the agents' programs unloaded", func(context.Context) error {
		for _, id := range progs {
			if programLoaded(id) {
				return fmt.Errorf("program %d still loaded", id)
			}
		}
		return nil
	})
}

// sourceRules counts the network namespaces on a node (the pods', /var/run/netns) that hold
// the agent's source-address rule (internal/podroute: fwmark <source mark> lookup <table>).
func sourceRules(ctx context.Context, t *testing.T, node string) int {
	t.Helper()
	out, err := cluster.NodeExec(ctx, node, "sh", "-c",
		fmt.Sprintf(`for n in $(ls /var/run/netns 2>/dev/null); do ip -n "$n" rule show 2>/dev/null; ip -n "$n" -6 rule show 2>/dev/null; done | grep -c 'fwmark %#x lookup %d'; true`,
			podroute.SourceMark(redirect.DefaultTunnelMark), podroute.Table))
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("%s: rule count %q: %v", node, out, err)
	}
	return n
}
