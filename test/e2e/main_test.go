//go:build e2e

// Package e2e holds Warren's end-to-end tests. They run on the local cluster (hack/cluster),
// which TestMain brings up, or reuses when one is running; run them with `make e2e`.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/warrenmesh/warren/test/e2e/framework"
)

var cluster *framework.Cluster

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	var err error
	start := time.Now()
	cluster, err = framework.Setup(ctx, 2)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cluster setup failed:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "e2e: cluster ready in %s (started here: %v)\n", time.Since(start).Round(100*time.Millisecond), cluster.StartedHere)
	os.Exit(m.Run())
}
