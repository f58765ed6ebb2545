//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/hack/cluster/localcluster"
	"github.com/warrenmesh/warren/test/e2e/framework"
)

// promQuery returns the number of series a PromQL query gives on the cluster's Prometheus.
func promQuery(ctx context.Context, query string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+localcluster.PrometheusHostAddr+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct{ Result []json.RawMessage }
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query %s: status %s", query, r.Status)
	}
	return len(r.Data.Result), nil
}

// TestObservability checks what an operator looks at: the mesh's traffic in a real Prometheus
// (Debian's) with workload labels, from the ztunnels and from the kernel; every metrics endpoint
// passing `promtool check metrics`; and `warrenctl observe` showing the flows live.
func TestObservability(t *testing.T) {
	ctx := context.Background()
	cluster.InstallMesh(t)
	ns := cluster.Namespace(t, "observe", map[string]string{"warren.dev/mesh": "enabled"})
	servers, clients := deployApps(t, ns)
	if err := cluster.Config.StartPrometheus(ctx); err != nil {
		t.Fatal(err)
	}
	traffic := func(ctx context.Context) error {
		_, err := get(ctx, ns, clients["node1"].Name, podURL(servers["node2"], "observe"))
		return err
	}
	cluster.Eventually(t, time.Minute, "traffic through the mesh", traffic)

	t.Run("Prometheus has the mesh's connections by workload, from the ztunnels and the kernel", func(t *testing.T) {
		for _, q := range []string{
			`warren_ztunnel_tcp_connections_opened_total{direction="outbound",connection_security_policy="mutual_tls",source_workload="` +
				clients["node1"].Name + `",destination_workload="` + servers["node2"].Name + `"}`,
			`warren_kernel_tcp_connections_total{source_namespace="` + ns + `",source_workload="client",destination_namespace="` + ns + `"}`,
			`warren_kernel_tcp_bytes_total{source_namespace="` + ns + `",source_workload="client"}`,
		} {
			cluster.Eventually(t, 90*time.Second, "Prometheus series "+q, func(ctx context.Context) error {
				_ = traffic(ctx)
				n, err := promQuery(ctx, q)
				if err == nil && n == 0 {
					err = fmt.Errorf("no series yet")
				}
				return err
			})
		}
	})

	t.Run("every metrics endpoint passes promtool check metrics", func(t *testing.T) {
		ctrl := cluster.PodsOn(t, framework.SystemNamespace, "app.kubernetes.io/name=warren-controller")
		urls := []string{}
		for _, node := range []string{"node1", "node2"} {
			urls = append(urls, node+" http://127.0.0.1:15020/metrics", node+" http://127.0.0.1:15024/metrics")
		}
		for _, p := range ctrl {
			urls = append(urls, "node1 http://"+p.Status.PodIP+":15014/metrics")
		}
		for _, u := range urls {
			node, target, _ := strings.Cut(u, " ")
			body, err := cluster.NodeGet(ctx, node, target)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.CommandContext(ctx, "promtool", "check", "metrics")
			cmd.Stdin = strings.NewReader(body)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("promtool check metrics on %s (%s): %v\n%s", target, node, err, out)
			}
		}
	})

	t.Run("warrenctl observe shows the flows live", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "warrenctl")
		if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/warrenctl").CombinedOutput(); err != nil {
			t.Fatalf("build warrenctl: %v\n%s", err, out)
		}
		octx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(octx, bin, "observe", "--kubeconfig", cluster.Config.KubeconfigPath(), "-n", ns, "-o", "json")
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		defer func() { cancel(); wg.Wait(); _ = cmd.Wait() }()
		wg.Go(func() {
			for octx.Err() == nil {
				_ = traffic(octx)
				time.Sleep(500 * time.Millisecond)
			}
		})
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e struct {
				Node        string
				Verdict     string
				Hop         string
				Source      struct{ Namespace, Pod, Identity string }
				Destination struct{ Namespace, Pod string }
			}
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("warrenctl observe -o json printed %q: %v", sc.Text(), err)
			}
			if e.Source.Pod == clients["node1"].Name && e.Destination.Pod == servers["node2"].Name &&
				e.Source.Identity == "spiffe://cluster.local/ns/"+ns+"/sa/default" {
				t.Logf("flow seen live: %s", sc.Text())
				return
			}
		}
		t.Fatalf("warrenctl observe never showed a flow from %s to %s (%v)", clients["node1"].Name, servers["node2"].Name, sc.Err())
	})
}
