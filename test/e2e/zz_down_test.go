//go:build e2e

package e2e

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestDownLeavesNothing runs last (files run in name order): when this run brought the cluster
// up, it takes it down and checks that no process, network namespace, mount, cgroup, state or
// created host folder is left. Set WARREN_E2E_KEEP=1 to keep the cluster for more runs.
func TestDownLeavesNothing(t *testing.T) {
	if !cluster.StartedHere || os.Getenv("WARREN_E2E_KEEP") != "" {
		t.Skip("the cluster was running before this test run (or WARREN_E2E_KEEP is set); leaving it up")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := cluster.Config.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	t.Logf("down took %s", time.Since(start).Round(100*time.Millisecond))
	if left := cluster.Config.Leftovers(); len(left) > 0 {
		t.Fatalf("down left behind: %v", left)
	}
	for _, p := range []string{"/run/netns/warren-cp", "/run/netns/warren-node1", "/run/netns/warren-node2"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s still exists", p)
		}
	}
}
