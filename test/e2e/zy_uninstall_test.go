//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// It runs after the other mesh tests (files run in name order), before the cluster goes down.
// TestMeshUninstall removes Warren with `kubectl delete -k manifests/` and checks that no node
// keeps a Warren pin, CNI entry or plugin binary, and that the programs the agents had
// attached are gone from the kernel.
func TestMeshUninstall(t *testing.T) {
	cluster.InstallMesh(t)
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
	cluster.Eventually(t, 30*time.Second, "the agents' programs unloaded", func(context.Context) error {
		for _, id := range progs {
			if programLoaded(id) {
				return fmt.Errorf("program %d still loaded", id)
			}
		}
		return nil
	})
}
