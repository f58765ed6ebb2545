package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/test/bench/iperfjson"
)

// TestTopology builds the benchmark's namespaces, pushes a second of iperf3 from the client pod
// to the server pod across both nodes, and checks that Close leaves nothing behind.
func TestTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("creates network namespaces and runs iperf3: not under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("creates network namespaces: needs root")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	topo, err := NewTopology(ctx, log, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()

	srv, err := topo.Start(topo.Server, "iperf3", "iperf3", "-s", "-B", serverIP, "-p", "5201")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitListening(ctx, iperfPort); err != nil {
		t.Fatal(err)
	}
	env := &Env{Topo: topo, Dir: t.TempDir(), Log: log}
	out, err := client(ctx, env, "iperf3", "-c", serverIP, "-p", "5201", "-t", "1", "-J")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := iperfjson.Parse(out); err != nil || r.Bytes == 0 {
		t.Fatalf("iperf3 across the nodes: %+v, %v", r, err)
	}

	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", srv.PID)); err == nil {
		t.Errorf("iperf3 (pid %d) still runs after Close", srv.PID)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("%s%d-", nsPrefix, os.Getpid())) {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
}
