//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// meshApps runs, on every node, an echo server with HTTP readiness and liveness probes behind
// a ClusterIP Service, and a client pod to exec requests from.
func meshApps(image string) string {
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
        image: %[1]s
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2, failureThreshold: 2}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: client}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: client
        image: %[1]s
        imagePullPolicy: Never
`, image)
}

// deployApps applies meshApps in ns and returns its server and client pods by node.
func deployApps(t *testing.T, ns string) (servers, clients map[string]corev1.Pod) {
	t.Helper()
	cluster.Apply(t, ns, meshApps(cluster.Image(t, "echo")))
	cluster.WaitDaemonSet(t, ns, "echo", 2*time.Minute)
	cluster.WaitDaemonSet(t, ns, "client", 2*time.Minute)
	cluster.WaitEndpoints(t, ns, "echo", 2, time.Minute)
	servers, clients = cluster.PodsOn(t, ns, "app=echo"), cluster.PodsOn(t, ns, "app=client")
	if len(servers) != 2 || len(clients) != 2 {
		t.Fatalf("want a server and a client on each node, got %d and %d", len(servers), len(clients))
	}
	return servers, clients
}

// get makes one request from a pod with the echo client; the reply's path proves who answered.
func get(ctx context.Context, ns, pod, url string) (echoReply, error) {
	out, err := cluster.Exec(ctx, ns, pod, "/echo", "get", "-timeout", "3s", url)
	if err != nil {
		return echoReply{}, err
	}
	var r echoReply
	rs := strings.TrimSpace(out)
	if err := jsonUnmarshal(rs, &r); err != nil {
		return echoReply{}, fmt.Errorf("reply %q: %w", rs, err)
	}
	return r, nil
}

// podURL is the server pod's app port, by pod IP.
func podURL(p corev1.Pod, path string) string {
	return "http://" + p.Status.PodIP + ":8080/" + path
}

// ztunnelMetrics returns the node's ztunnel metrics lines with this name.
func ztunnelMetrics(ctx context.Context, node, name string) ([]string, error) {
	out, err := cluster.NodeGet(ctx, node, "http://127.0.0.1:15020/metrics")
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, name+"{") {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// hasLine reports whether a metrics line holds every label pair.
func hasLine(lines []string, pairs ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range pairs {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// podState is what must not change when a namespace joins or leaves the mesh.
func podState(t *testing.T, ns string) map[string]string {
	t.Helper()
	pods, err := cluster.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		restarts := int32(0)
		for _, cs := range p.Status.ContainerStatuses {
			restarts += cs.RestartCount
		}
		out[p.Name] = fmt.Sprintf("uid=%s restarts=%d ready=%v", p.UID, restarts, podReady(p))
	}
	return out
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func samePods(t *testing.T, ns string, before map[string]string) {
	t.Helper()
	after := podState(t, ns)
	for name, st := range before {
		if after[name] != st {
			t.Errorf("pod %s: was %s, now %q (a pod must not restart or turn unready to join or leave the mesh)", name, st, after[name])
		}
	}
}

// captureWhile captures on a node's interfaces (all of them: its link and its pods' veths)
// while f runs, and returns what tcpdump shows with payloads.
func captureWhile(t *testing.T, node, filter string, f func()) (text string, packets int) {
	t.Helper()
	capt := cluster.StartCapture(t, node, "any", filter)
	f()
	return capt.Stop(t)
}

// waitPlaintext requests url from a pod until a capture on node2 shows the request, marked
// by marker, in plaintext.
func waitPlaintext(t *testing.T, timeout time.Duration, ns, pod, url, marker string) {
	t.Helper()
	cluster.Eventually(t, timeout, "the request "+marker+" in plaintext on the wire", func(ctx context.Context) error {
		var reqErr error
		text, _ := captureWhile(t, "node2", "tcp port 8080", func() {
			_, reqErr = get(ctx, ns, pod, url)
		})
		if reqErr != nil {
			return reqErr
		}
		if !strings.Contains(text, "GET /"+marker) {
			return fmt.Errorf("the capture does not show the request in plaintext:\n%s", text)
		}
		return nil
	})
}

// TestMesh installs Warren through manifests/ and checks the L4 mesh as a user meets it.
func TestMesh(t *testing.T) {
	ctx := context.Background()
	cluster.InstallMesh(t)
	meshNs := cluster.Namespace(t, "mesh", nil)
	plainNs := cluster.Namespace(t, "plain", nil)
	servers, clients := deployApps(t, meshNs)
	plainServers, plainClients := deployApps(t, plainNs)
	before := podState(t, meshNs)

	t.Run("labelling a namespace enrolls its running pods without restarts", func(t *testing.T) {
		cluster.Label(t, meshNs, "warren.dev/mesh", "enabled")
		cluster.Eventually(t, time.Minute, "mTLS from node1's client to node2's server", func(ctx context.Context) error {
			if _, err := get(ctx, meshNs, clients["node1"].Name, podURL(servers["node2"], "enroll")); err != nil {
				return err
			}
			lines, err := ztunnelMetrics(ctx, "node1", "warren_ztunnel_tcp_connections_opened_total")
			if err != nil {
				return err
			}
			if !hasLine(lines, `connection_security_policy="mutual_tls"`, `direction="outbound"`,
				`destination_workload="`+servers["node2"].Name+`"`, `source_principal="spiffe://cluster.local/ns/`+meshNs+`/sa/default"`) {
				return fmt.Errorf("node1's ztunnel shows no mTLS connection to %s yet", servers["node2"].Name)
			}
			return nil
		})
		samePods(t, meshNs, before)
	})

	t.Run("traffic across nodes and on one node is mTLS on the wire", func(t *testing.T) {
		cross, local := "cross-"+meshNs, "local-"+meshNs
		text, n := captureWhile(t, "node2", "tcp port 8080 or tcp port 15008", func() {
			for from, path := range map[string]string{"node1": cross, "node2": local} {
				r, err := get(ctx, meshNs, clients[from].Name, podURL(servers["node2"], path))
				if err != nil || r.Path != "/"+path {
					t.Errorf("request from %s: %+v %v", from, r, err)
				}
			}
		})
		if strings.Contains(text, cross) || strings.Contains(text, local) {
			t.Errorf("the capture on node2 shows a request in plaintext:\n%s", text)
		}
		if hbone := strings.Count(text, ".15008 "); n == 0 || hbone == 0 {
			t.Errorf("the capture on node2 holds %d packets, %d to or from port 15008: the requests did not go over HBONE", n, hbone)
		}
		lines, err := ztunnelMetrics(ctx, "node2", "warren_ztunnel_tcp_connections_opened_total")
		if err != nil {
			t.Fatal(err)
		}
		if !hasLine(lines, `connection_security_policy="mutual_tls"`, `direction="outbound"`,
			`source_workload="`+clients["node2"].Name+`"`, `destination_workload="`+servers["node2"].Name+`"`) {
			t.Errorf("node2's ztunnel does not count the same-node connection as mutual_tls:\n%s", strings.Join(lines, "\n"))
		}
	})

	t.Run("the app sees the client's own address, as without a mesh", func(t *testing.T) {
		for _, c := range []struct {
			what string
			ns   string
			pod  corev1.Pod
		}{
			{"a mesh client on the other node (HBONE)", meshNs, clients["node1"]},
			{"a mesh client on the same node (HBONE)", meshNs, clients["node2"]},
			{"a client outside the mesh (PERMISSIVE plaintext)", plainNs, plainClients["node1"]},
		} {
			r, err := get(ctx, c.ns, c.pod.Name, podURL(servers["node2"], "who"))
			if err != nil {
				t.Errorf("%s: %v", c.what, err)
				continue
			}
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil || host != c.pod.Status.PodIP {
				t.Errorf("%s: the app saw the request from %q, want the client pod's address %s", c.what, r.RemoteAddr, c.pod.Status.PodIP)
			}
		}
	})

	t.Run("a namespace outside the mesh is untouched", func(t *testing.T) {
		marker := "plain-" + plainNs
		waitPlaintext(t, 30*time.Second, plainNs, plainClients["node1"].Name, podURL(plainServers["node2"], marker), marker)
		for _, node := range []string{"node1", "node2"} {
			lines, err := ztunnelMetrics(ctx, node, "warren_ztunnel_tcp_connections_opened_total")
			if err != nil {
				t.Fatal(err)
			}
			if hasLine(lines, `source_namespace="`+plainNs+`"`, `direction="outbound"`) {
				t.Errorf("%s's ztunnel carried a connection of %s, which is not in the mesh", node, plainNs)
			}
		}
	})

	t.Run("a ClusterIP Service through the mesh spreads over both nodes", func(t *testing.T) {
		out, err := cluster.Exec(ctx, meshNs, clients["node1"].Name, "/echo", "get", "-n", "20", "http://echo."+meshNs+".svc.cluster.local/")
		if err != nil {
			t.Fatal(err)
		}
		nodes := map[string]int{}
		for _, r := range parseReplies(t, out) {
			nodes[r.Node]++
		}
		if len(nodes) != 2 {
			t.Errorf("20 requests through the Service reached %v, want both nodes", nodes)
		}
		lines, err := ztunnelMetrics(ctx, "node1", "warren_ztunnel_tcp_connections_opened_total")
		if err != nil {
			t.Fatal(err)
		}
		if !hasLine(lines, `destination_service="`+meshNs+`/echo"`, `connection_security_policy="mutual_tls"`) {
			t.Error("node1's ztunnel does not name the Service of the connections")
		}
	})

	t.Run("an AuthorizationPolicy DENY blocks, and removing it restores", func(t *testing.T) {
		cluster.Apply(t, meshNs, `apiVersion: warren.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-own-namespace}
spec:
  selector: {matchLabels: {app: echo}}
  action: DENY
  rules:
  - from: [{namespaces: [`+meshNs+`]}]
`)
		cluster.Eventually(t, 30*time.Second, "the DENY policy in force", func(ctx context.Context) error {
			if _, err := get(ctx, meshNs, clients["node1"].Name, podURL(servers["node2"], "denied")); err == nil {
				return fmt.Errorf("request still allowed")
			}
			return nil
		})
		if _, err := cluster.Config.Kubectl(ctx, nil, "-n", meshNs, "delete", "authorizationpolicy", "deny-own-namespace"); err != nil {
			t.Fatal(err)
		}
		cluster.Eventually(t, 30*time.Second, "requests allowed again", func(ctx context.Context) error {
			_, err := get(ctx, meshNs, clients["node1"].Name, podURL(servers["node2"], "allowed"))
			return err
		})
	})

	t.Run("STRICT refuses clients outside the mesh, and probes keep pods Ready", func(t *testing.T) {
		cluster.Apply(t, meshNs, `apiVersion: warren.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: strict}
spec:
  mtls: {mode: STRICT}
`)
		cluster.Eventually(t, 30*time.Second, "STRICT in force", func(ctx context.Context) error {
			if _, err := get(ctx, plainNs, plainClients["node1"].Name, podURL(servers["node2"], "from-outside")); err == nil {
				return fmt.Errorf("a client outside the mesh still gets through")
			}
			return nil
		})
		if _, err := get(ctx, meshNs, clients["node1"].Name, podURL(servers["node2"], "from-inside")); err != nil {
			t.Errorf("a mesh client is refused under STRICT: %v", err)
		}
		// The kubelet probes every 2 s; a liveness failure twice in a row would restart.
		time.Sleep(8 * time.Second)
		samePods(t, meshNs, before)
		if _, err := cluster.Config.Kubectl(ctx, nil, "-n", meshNs, "delete", "peerauthentication", "strict"); err != nil {
			t.Fatal(err)
		}
		cluster.Eventually(t, 30*time.Second, "PERMISSIVE again", func(ctx context.Context) error {
			_, err := get(ctx, plainNs, plainClients["node1"].Name, podURL(servers["node2"], "from-outside"))
			return err
		})
	})

	t.Run("removing the label returns the pods to plaintext without restarts", func(t *testing.T) {
		cluster.Label(t, meshNs, "warren.dev/mesh", "")
		marker := "left-" + meshNs
		waitPlaintext(t, time.Minute, meshNs, clients["node1"].Name, podURL(servers["node2"], marker), marker)
		samePods(t, meshNs, before)
	})
}
