package warrenctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/warrenmesh/warren/internal/kubetest"
	"github.com/warrenmesh/warren/internal/meshmanifests"
)

// startAPIServer runs a real kube-apiserver and etcd (internal/kubetest)
// for the test, or skips where they cannot run.
func startAPIServer(t *testing.T) *Clients {
	t.Helper()
	e, _, _ := kubetest.ForTest(t)
	c, err := NewClients(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually runs f until it returns nil or the deadline passes.
func eventually(ctx context.Context, t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last = f(ctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: %v (last: %v)", what, err, last)
	}
}

func TestAgainstAPIServer(t *testing.T) {
	c := startAPIServer(t)
	PollInterval = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kube := c.Kube
	for _, n := range []corev1.Node{node("node-a", "linux", "6.1.0-18-amd64"), node("node-b", "linux", "5.10.0")} {
		created, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status = n.Status
		if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Before install: the pre-checks see the old kernel; the rest pass
	// (envtest's user is an admin).
	pre := PreChecks(ctx, c)
	var failed []string
	for _, r := range pre {
		if r.Status != OK {
			failed = append(failed, r.Name)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0], "node-b") || len(pre) != 2+len(InstallAccess)+1 {
		t.Errorf("pre-checks: failed %v of %d", failed, len(pre))
	}
	// Status and config on a cluster without Warren: one line, what to do.
	if _, err := ReadStatus(ctx, c, false); err == nil || !strings.Contains(err.Error(), "run warrenctl install") {
		t.Errorf("status without Warren: %v", err)
	}
	if _, err := ZtunnelConfig(ctx, c, "", "workloads", now); err == nil || !strings.Contains(err.Error(), "run warrenctl install") {
		t.Errorf("config without Warren: %v", err)
	}
	post := PostChecks(ctx, c, now)
	if post[len(post)-1].Status != Fail || !strings.Contains(post[len(post)-1].Hint, "warrenctl install") {
		t.Errorf("check without Warren: %+v", post)
	}

	// Enroll.
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{WaypointLabel: "shop-waypoint"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := Enroll(ctx, c, "shop", true, &out); err != nil || out.String() != "namespace shop: warren.dev/mesh unset -> warren.dev/mesh=enabled\n" {
		t.Fatalf("enroll: %v %q", err, out.String())
	}
	out.Reset()
	if err := Enroll(ctx, c, "shop", true, &out); err != nil || !strings.Contains(out.String(), "unchanged") {
		t.Errorf("enroll again: %v %q", err, out.String())
	}
	if ns, _ := kube.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{}); ns.Labels[MeshLabel] != "enabled" {
		t.Errorf("labels after enroll: %v", ns.Labels)
	}
	if err := Enroll(ctx, c, "nope", true, &out); err == nil || !strings.Contains(err.Error(), `namespace "nope" not found`) {
		t.Errorf("unknown namespace: %v", err)
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tmp", Labels: map[string]string{MeshLabel: "enabled"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Enroll(ctx, c, "tmp", false, &out); err != nil || out.String() != "namespace tmp: warren.dev/mesh=enabled -> warren.dev/mesh unset\n" {
		t.Errorf("unenroll: %v %q", err, out.String())
	}
	if ns, _ := kube.CoreV1().Namespaces().Get(ctx, "tmp", metav1.GetOptions{}); len(ns.Labels) != 1 { // kubernetes.io/metadata.name
		t.Errorf("labels after unenroll: %v", ns.Labels)
	}

	// Install, with this test as the cluster's controllers: no
	// kube-controller-manager runs, so it marks the Deployment available and
	// the DaemonSet rolled out, and makes the DaemonSet's pods.
	objs, err := meshmanifests.Objects(meshmanifests.Images{Registry: "r.io/warren", Tag: "v0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	installed := make(chan error, 1)
	var progress strings.Builder
	go func() {
		ictx, icancel := context.WithTimeout(ctx, time.Minute)
		defer icancel()
		installed <- Install(ictx, c, objs, &progress)
	}()
	eventually(ctx, t, "controller Deployment", func(ctx context.Context) error {
		d, err := kube.AppsV1().Deployments(SystemNamespace).Get(ctx, ControllerName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
		_, err = kube.AppsV1().Deployments(SystemNamespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
		return err
	})
	var ds *appsv1.DaemonSet
	eventually(ctx, t, "node DaemonSet", func(ctx context.Context) error {
		ds, err = kube.AppsV1().DaemonSets(SystemNamespace).Get(ctx, NodeDaemonSetName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, DesiredNumberScheduled: 2, CurrentNumberScheduled: 2, NumberReady: 2, UpdatedNumberScheduled: 2, NumberAvailable: 2}
		_, err = kube.AppsV1().DaemonSets(SystemNamespace).UpdateStatus(ctx, ds, metav1.UpdateOptions{})
		return err
	})
	if err := <-installed; err != nil {
		t.Fatalf("install: %v\n%s", err, progress.String())
	}
	for _, want := range []string{"applied Namespace warren-system", "√ CRDs established (2)", "√ Deployment warren-controller available (2/2 available", "√ DaemonSet warren-node rolled out (2/2 nodes ready", "Warren is installed"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("install progress lacks %q:\n%s", want, progress.String())
		}
	}
	if strings.Index(progress.String(), "√ CRDs established") > strings.Index(progress.String(), "applied ServiceAccount") {
		t.Errorf("CRDs not established before the rest was applied:\n%s", progress.String())
	}
	d, _ := kube.AppsV1().Deployments(SystemNamespace).Get(ctx, ControllerName, metav1.GetOptions{})
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "r.io/warren/warren-controller:v0.1.0" {
		t.Errorf("controller image %q", img)
	}
	if fm := d.ManagedFields; len(fm) == 0 || fm[0].Manager != FieldManager || fm[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Errorf("managed fields %+v", fm)
	}

	// The DaemonSet's pods and the controller's roots, as the cluster
	// would make them; the ztunnels answer through a fake fetcher.
	for i, n := range []string{"node-a", "node-b"} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("warren-node-%d", i), Namespace: SystemNamespace, Labels: map[string]string{"app.kubernetes.io/name": "warren-node"}},
			Spec: *ds.Spec.Template.Spec.DeepCopy()}
		p.Spec.NodeName = n
		p, err := kube.CoreV1().Pods(SystemNamespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = corev1.PodRunning
		if _, err := kube.CoreV1().Pods(SystemNamespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	app := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "web", Image: "web"}}}}
	if app, err = kube.CoreV1().Pods("shop").Create(ctx, app, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	app.Status.Phase = corev1.PodRunning
	if _, err := kube.CoreV1().Pods("shop").UpdateStatus(ctx, app, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	roots := certPEM(t, "warren-root", time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
	if _, err := kube.CoreV1().ConfigMaps(SystemNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RootsConfigMapName}, Data: map[string]string{RootsKey: string(roots)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Fetch = fakeZtunnels(map[string]bool{"warren-node-1": true})

	results := PostChecks(ctx, c, time.Now())
	var bad []string
	for _, r := range results {
		if r.Status != OK {
			bad = append(bad, r.Category+": "+r.Name+" ("+r.Detail+")")
		}
	}
	// node-b's ztunnel (warren-node-1) is made to refuse its readiness probe.
	if len(bad) != 1 || !strings.Contains(bad[0], "ztunnel on node-b: ztunnel is ready") {
		t.Errorf("post-install checks, not ok: %q", bad)
	}

	s, err := ReadStatus(ctx, c, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Nodes) != 2 || s.Nodes[0].Node != "node-a" || s.Nodes[0].EnrolledPods != 1 || s.Nodes[1].EnrolledPods != 0 ||
		ImageTag(s.Nodes[0].ZtunnelImage) != "v0.1.0" || s.Nodes[0].ServedPods == nil || *s.Nodes[0].ServedPods != 1 || s.Nodes[0].CertExpiry.IsZero() {
		t.Errorf("status nodes: %+v", s.Nodes)
	}
	var shop *NamespaceStatus
	for i := range s.Namespaces {
		if s.Namespaces[i].Namespace == "shop" {
			shop = &s.Namespaces[i]
		}
	}
	if shop == nil || !shop.Enrolled || shop.Waypoint != "shop-waypoint" || shop.Pods != 1 {
		t.Errorf("status of shop: %+v", shop)
	}
	if _, err := ZtunnelConfig(ctx, c, "", "workloads", now); err == nil || !strings.Contains(err.Error(), "pick one with --node (node-a, node-b)") {
		t.Errorf("config without --node: %v", err)
	}
	if _, err := ZtunnelConfig(ctx, c, "node-z", "workloads", now); err == nil || !strings.Contains(err.Error(), `no warren-node pod on node "node-z"`) {
		t.Errorf("config of an unknown node: %v", err)
	}
	w, err := ZtunnelConfig(ctx, c, "node-a", "workloads", now)
	if err != nil || len(w.(Workloads)) != 2 || !w.(Workloads)[0].Local {
		t.Errorf("config workloads: %+v %v", w, err)
	}
	v := ClusterVersions(ctx, c)
	if len(v.Controller) != 1 || ImageTag(v.Controller[0]) != "v0.1.0" || len(v.Nodes) != 2 || ImageTag(v.Nodes[1].Agent) != "v0.1.0" || v.Server == "" {
		t.Errorf("versions: %+v", v)
	}

	// Uninstall: the test plays the garbage collector, removing the
	// DaemonSet's pods once it is gone.
	uninstalled := make(chan error, 1)
	progress.Reset()
	go func() {
		uctx, ucancel := context.WithTimeout(ctx, time.Minute)
		defer ucancel()
		uninstalled <- Uninstall(uctx, c, objs, &progress)
	}()
	eventually(ctx, t, "DaemonSet deleted", func(ctx context.Context) error {
		if _, err := kube.AppsV1().DaemonSets(SystemNamespace).Get(ctx, NodeDaemonSetName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	if err := kube.CoreV1().Pods(SystemNamespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{LabelSelector: NodeSelector}); err != nil {
		t.Fatal(err)
	}
	if err := <-uninstalled; err != nil {
		t.Fatalf("uninstall: %v\n%s", err, progress.String())
	}
	p := progress.String()
	if !strings.Contains(p, "√ warren-node pods gone") || strings.Index(p, "deleted DaemonSet") > strings.Index(p, "deleted Deployment") ||
		!strings.HasSuffix(p, "deleted Namespace warren-system\nWarren is uninstalled\n") {
		t.Errorf("uninstall progress:\n%s", p)
	}
	for _, name := range CRDs {
		if _, err := c.Dynamic.Resource(CRDResource).Get(ctx, name, metav1.GetOptions{}); err == nil {
			// Deletion of a CRD finishes asynchronously; it must at least be marked.
			crd, _ := c.Dynamic.Resource(CRDResource).Get(ctx, name, metav1.GetOptions{})
			if crd != nil && crd.GetDeletionTimestamp() == nil {
				t.Errorf("CRD %s not deleted", name)
			}
		}
	}
}

// fakeZtunnels answers the ztunnels' ports: every pod serves one local pod
// and holds a fresh certificate; pods in notReady refuse /healthz/ready.
func fakeZtunnels(notReady map[string]bool) Fetcher {
	return func(_ context.Context, _, pod string, port int, path string) ([]byte, error) {
		switch {
		case port == 15021 && path == "/healthz/ready":
			if notReady[pod] {
				return nil, fmt.Errorf("/healthz/ready on %s: 503 Service Unavailable", pod)
			}
			return []byte("ready\n"), nil
		case port == ZtunnelMetricsPort && path == "/metrics":
			return []byte("warren_ztunnel_config_updates_total{result=\"acked\"} 3\n"), nil
		case port == ZtunnelAdminPort && path == "/certs":
			nb := time.Now().Add(-time.Hour)
			return fmt.Appendf(nil, `[{"identity":"spiffe://cluster.local/ns/shop/sa/default","serial":"1","notBefore":%q,"notAfter":%q}]`,
				nb.Format(time.RFC3339), nb.Add(24*time.Hour).Format(time.RFC3339)), nil
		case port == ZtunnelAdminPort && path == "/config_dump":
			return []byte(`{"config":{"node":"node-a","pods":[{"name":"web","namespace":"shop","ips":["10.0.0.5"],"enrolled":true,"uid":"u1"}],
"workloads":[{"name":"db","namespace":"shop","ips":["10.0.1.7"],"node":"node-b","enrolled":true}],"caKey":"SECRET"},"servedPods":["u1"]}`), nil
		}
		return nil, fmt.Errorf("%s:%d%s: 404 Not Found", pod, port, path)
	}
}
