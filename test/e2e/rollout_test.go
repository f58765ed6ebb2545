//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warrenmesh/warren/test/e2e/framework"
)

// fortioResult is the part of `fortio load -json -` the test reads.
type fortioResult struct {
	RetCodes          map[string]int64
	DurationHistogram struct{ Count int64 }
	SocketCount       int64
}

// parseFortio reads what `fortio load -json -` writes on its standard output.
func parseFortio(out string) (fortioResult, error) {
	var r fortioResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.DurationHistogram.Count == 0 {
		return r, fmt.Errorf("no fortio result (%v) in %.300q", err, out)
	}
	return r, nil
}

const loadManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: load}
spec:
  replicas: 1
  selector: {matchLabels: {app: load}}
  template:
    metadata: {labels: {app: load}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: fortio
        image: %s
        imagePullPolicy: Never
        args: ["server", "-http-port", "8080", "-grpc-port", "disabled", "-redirect-port", "disabled"]
`

// TestMeshRollout checks that the node DaemonSet can be restarted under load without a failed
// request, and that a node whose Warren pod is deleted fails closed until it is back.
func TestMeshRollout(t *testing.T) {
	ctx := context.Background()
	cluster.InstallMesh(t)
	ns := cluster.Namespace(t, "rollout", map[string]string{"warren.dev/mesh": "enabled"})
	servers, clients := deployApps(t, ns)
	cluster.Apply(t, ns, fmt.Sprintf(loadManifest, cluster.Image(t, "fortio")))
	cluster.WaitDeployment(t, ns, "load", 2*time.Minute)
	load := cluster.PodsOn(t, ns, "app=load")
	var loadPod string
	for _, p := range load {
		loadPod = p.Name
	}
	url := "http://echo." + ns + ".svc.cluster.local/"
	cluster.Eventually(t, time.Minute, "the Service answers through the mesh", func(ctx context.Context) error {
		_, err := get(ctx, ns, clients["node1"].Name, url)
		return err
	})

	t.Run("kubectl rollout restart of the node DaemonSet fails no request", func(t *testing.T) {
		const seconds = 60
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			// A new connection per request (no keep-alive): every request is a connection made
			// while the tunnels are replaced.
			out, err := cluster.ExecStdout(ctx, ns, loadPod, "/fortio", "load", "-quiet", "-qps", "40", "-c", "4",
				"-t", fmt.Sprintf("%ds", seconds), "-keepalive=false", "-timeout", "5s", "-json", "-", url)
			done <- result{out, err}
		}()
		time.Sleep(5 * time.Second)
		start := time.Now()
		if out, err := cluster.Config.Kubectl(ctx, nil, "-n", framework.SystemNamespace, "rollout", "restart", "daemonset/warren-node"); err != nil {
			t.Fatalf("rollout restart: %v\n%s", err, out)
		}
		if out, err := cluster.Config.Kubectl(ctx, nil, "-n", framework.SystemNamespace, "rollout", "status", "daemonset/warren-node", "--timeout=120s"); err != nil {
			t.Fatalf("rollout status: %v\n%s", err, out)
		}
		took := time.Since(start)
		r := <-done
		if r.err != nil {
			t.Fatalf("fortio: %v\n%s", r.err, r.out)
		}
		res, err := parseFortio(r.out)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("rollout took %s; fortio: %d requests on %d connections, codes %v", took.Round(time.Second), res.DurationHistogram.Count, res.SocketCount, res.RetCodes)
		if took > (seconds-10)*time.Second {
			t.Errorf("the rollout took %s, longer than the load ran around it", took)
		}
		if res.RetCodes["200"] != res.DurationHistogram.Count {
			t.Errorf("%d of %d requests failed during the rollout (codes %v)", res.DurationHistogram.Count-res.RetCodes["200"], res.DurationHistogram.Count, res.RetCodes)
		}
	})

	t.Run("a deleted node pod fails closed until it is back", func(t *testing.T) {
		pods, err := cluster.Client.CoreV1().Pods(framework.SystemNamespace).List(ctx, metav1.ListOptions{
			LabelSelector: "app.kubernetes.io/name=warren-node", FieldSelector: "spec.nodeName=node1"})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("warren-node pod on node1: %v (%d pods)", err, len(pods.Items))
		}
		marker := "closed-" + ns
		failed, ok := 0, 0
		text, _ := captureWhile(t, "node1", "tcp port 8080", func() {
			if err := cluster.Client.CoreV1().Pods(framework.SystemNamespace).Delete(ctx, pods.Items[0].Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(90 * time.Second)
			for time.Now().Before(deadline) {
				if _, err := get(ctx, ns, clients["node1"].Name, podURL(servers["node2"], marker)); err != nil {
					failed++
					ok = 0
				} else if ok++; ok >= 5 && podGone(ctx, pods.Items[0].Name) {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Errorf("requests did not come back within 90 s of deleting %s", pods.Items[0].Name)
		})
		t.Logf("%d requests failed while node1's Warren pod was replaced", failed)
		if strings.Contains(text, marker) {
			t.Errorf("a request left node1 in plaintext while its ztunnel was away:\n%s", text)
		}
		cluster.WaitDaemonSet(t, framework.SystemNamespace, "warren-node", 2*time.Minute)
	})
}

func podGone(ctx context.Context, name string) bool {
	_, err := cluster.Client.CoreV1().Pods(framework.SystemNamespace).Get(ctx, name, metav1.GetOptions{})
	return err != nil
}
