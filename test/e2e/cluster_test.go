//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// echoManifest runs the echo app on every node (a DaemonSet) behind a ClusterIP Service.
func echoManifest(image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata: {name: echo}
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: %s
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 2
        volumeMounts:
        - {name: cni, mountPath: /host/cni, readOnly: true}
        - {name: bpf, mountPath: /host/bpf}
      volumes:
      - {name: cni, hostPath: {path: /etc/cni/net.d, type: Directory}}
      - {name: bpf, hostPath: {path: /sys/fs/bpf, type: Directory}}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
`, image)
}

type echoReply struct {
	Pod        string `json:"pod"`
	Node       string `json:"node"`
	PodIP      string `json:"podIP"`
	Path       string `json:"path"`
	RemoteAddr string `json:"remoteAddr"`
}

func parseReplies(t *testing.T, out string) []echoReply {
	t.Helper()
	var rs []echoReply
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r echoReply
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("decode reply %q: %v", out, err)
		}
		rs = append(rs, r)
	}
	return rs
}

// TestCluster checks the local cluster itself: two Ready nodes run pods from local images;
// pods reach each other across nodes with their own IPs (no NAT); a ClusterIP Service, by
// name through CoreDNS, spreads over both nodes; each node's hostPaths and bpffs are its own;
// and a capture on a node's link sees the plaintext that the mesh will later hide.
func TestCluster(t *testing.T) {
	ns := cluster.Namespace(t, "e2e-cluster", nil)
	cluster.Apply(t, ns, echoManifest(cluster.Image(t, "echo")))
	cluster.WaitDaemonSet(t, ns, "echo", 2*time.Minute)
	pods := cluster.PodsOn(t, ns, "app=echo")
	p1, ok1 := pods["node1"]
	p2, ok2 := pods["node2"]
	if !ok1 || !ok2 {
		t.Fatalf("want an echo pod on node1 and node2, got %v", pods)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("pod-to-pod across nodes keeps pod IPs", func(t *testing.T) {
		out, err := cluster.Exec(ctx, ns, p1.Name, "/echo", "get", "http://"+p2.Status.PodIP+":8080/direct")
		if err != nil {
			t.Fatal(err)
		}
		r := parseReplies(t, out)
		if len(r) != 1 || r[0].Node != "node2" || r[0].Pod != p2.Name {
			t.Fatalf("reply from the wrong pod: %+v", r)
		}
		if !strings.HasPrefix(r[0].RemoteAddr, p1.Status.PodIP+":") {
			t.Fatalf("server saw client %s, want pod IP %s (no NAT between nodes)", r[0].RemoteAddr, p1.Status.PodIP)
		}
	})

	t.Run("ClusterIP Service by DNS name spreads over both nodes", func(t *testing.T) {
		cluster.WaitEndpoints(t, ns, "echo", 2, time.Minute)
		// Each node's kube-proxy programs a new Service and its endpoints on its own
		// schedule after the EndpointSlice is ready (until then the ClusterIP refuses), so
		// wait for a first answer, then ask in rounds until both nodes have answered; from
		// then on every request must succeed.
		url := fmt.Sprintf("http://echo.%s.svc.cluster.local/svc", ns)
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := cluster.Exec(ctx, ns, p1.Name, "/echo", "get", url)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the Service did not answer within 30s: %v", err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		seen := map[string]int{}
		deadline = time.Now().Add(30 * time.Second)
		for seen["node1"] == 0 || seen["node2"] == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("requests through the Service reached only %v after 30s, want both nodes", seen)
			}
			out, err := cluster.Exec(ctx, ns, p1.Name, "/echo", "get", "-n", "10", url)
			if err != nil {
				t.Fatal(err)
			}
			rs := parseReplies(t, out)
			if len(rs) != 10 {
				t.Fatalf("10 requests through the Service got %d replies", len(rs))
			}
			for _, r := range rs {
				seen[r.Node]++
			}
		}
	})

	t.Run("hostPaths and bpffs are per node", func(t *testing.T) {
		for node, cidr := range map[string]string{"node1": "10.244.1.0/24", "node2": "10.244.2.0/24"} {
			out, err := cluster.Exec(ctx, ns, pods[node].Name, "/echo", "fs", "cat", "/host/cni/10-warren-local.conflist")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, cidr) {
				t.Fatalf("%s's /etc/cni/net.d is not its own: want pod CIDR %s in\n%s", node, cidr, out)
			}
		}
		mark := map[string]string{"node1": "e2e-" + ns + "-node1", "node2": "e2e-" + ns + "-node2"}
		for node, dir := range mark {
			if _, err := cluster.Exec(ctx, ns, pods[node].Name, "/echo", "fs", "mkdir", "/host/bpf/"+dir); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_, _ = cluster.Exec(context.Background(), ns, pods[node].Name, "/echo", "fs", "rmdir", "/host/bpf/"+dir)
			}()
		}
		for node := range mark {
			out, err := cluster.Exec(ctx, ns, pods[node].Name, "/echo", "fs", "ls", "/host/bpf")
			if err != nil {
				t.Fatal(err)
			}
			for other, dir := range mark {
				if got := strings.Contains(out, dir); got != (other == node) {
					t.Fatalf("%s's bpffs lists %q: %v, want %v; it shows:\n%s", node, dir, got, other == node, out)
				}
			}
		}
	})

	t.Run("capture on a node's link sees plaintext HTTP", func(t *testing.T) {
		marker := "warren-e2e-plaintext-" + ns
		capt := cluster.StartCapture(t, "node2", "eth0", "tcp port 8080")
		if _, err := cluster.Exec(ctx, ns, p1.Name, "/echo", "get", "http://"+p2.Status.PodIP+":8080/"+marker); err != nil {
			t.Fatal(err)
		}
		text, n := capt.Stop(t)
		if n == 0 || !strings.Contains(text, "GET /"+marker) {
			t.Fatalf("capture of %d packets on node2/eth0 does not show the request %q:\n%s", n, marker, text)
		}
	})
}
