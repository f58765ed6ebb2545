package nodeagent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/warrenmesh/warren/internal/kubetest"
)

// startAPIServer runs a real kube-apiserver and etcd for the length of
// the test (internal/kubetest).
func startAPIServer(t *testing.T) kubernetes.Interface {
	c, _ := startAPIServerKubeconfig(t)
	return c
}

// startAPIServerKubeconfig is startAPIServer, with the path of a kubeconfig for it.
func startAPIServerKubeconfig(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	_, client, kubeconfig := kubetest.ForTest(t)
	return client, kubeconfig
}

// The reconciler against a real apiserver: field-selected pod informer,
// namespace informer, labels changing under it.
func TestReconcilerAPIServer(t *testing.T) {
	client := startAPIServer(t)
	ctx := context.Background()
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := client.CoreV1().Namespaces().Create(ctx, testNS("mesh", map[string]string{LabelMesh: MeshEnabled}), metav1.CreateOptions{})
	mustCreate(err)
	_, err = client.CoreV1().ServiceAccounts("mesh").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	mustCreate(err)
	r := startReconciler(t, client, newRecordingDataplane(), fixedNetns{})

	uids := map[string]string{}
	for _, p := range []struct{ name, node, ip string }{{"a", "node1", "10.244.1.2"}, {"b", "node2", "10.244.2.2"}} {
		pod := kubePod("mesh", p.name, "", p.node, p.ip)
		created, err := client.CoreV1().Pods("mesh").Create(ctx, pod, metav1.CreateOptions{})
		mustCreate(err)
		created.Status = pod.Status
		_, err = client.CoreV1().Pods("mesh").UpdateStatus(ctx, created, metav1.UpdateOptions{})
		mustCreate(err)
		uids[p.name] = string(created.UID)
	}
	r.eventually("pod enrolled", uids["a"])
	if _, err := r.rec.pods.Pods("mesh").Get("b"); err == nil {
		t.Error("the pod informer holds another node's pod")
	}

	r.setNSLabel("mesh", "")
	r.eventually("namespace label removed")
	r.setNSLabel("mesh", MeshEnabled)
	r.eventually("namespace label back", uids["a"])
	r.updatePod("mesh", "a", podLabel(MeshDisabled))
	r.eventually("pod opted out")
	r.updatePod("mesh", "a", podLabel(MeshEnabled))
	r.eventually("pod back", uids["a"])
	mustCreate(client.CoreV1().Pods("mesh").Delete(ctx, "a", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
	r.eventually("pod deleted")

	// And while an apiserver is up: it takes the node DaemonSet's manifests as they are.
	dir := filepath.Join("..", "manifests", "node")
	_, err = client.CoreV1().Namespaces().Create(ctx, testNS("warren-system", nil), metav1.CreateOptions{})
	mustCreate(err)
	var sa corev1.ServiceAccount
	readYAML(t, filepath.Join(dir, "serviceaccount.yaml"), &sa, true)
	_, err = client.CoreV1().ServiceAccounts("warren-system").Create(ctx, &sa, metav1.CreateOptions{})
	mustCreate(err)
	var ds appsv1.DaemonSet
	readYAML(t, filepath.Join(dir, "daemonset.yaml"), &ds, true)
	_, err = client.AppsV1().DaemonSets("warren-system").Create(ctx, &ds, metav1.CreateOptions{})
	mustCreate(err)
	rbac, err := os.ReadFile(filepath.Join(dir, "rbac.yaml"))
	mustCreate(err)
	kinds := map[string]int{}
	for _, doc := range strings.Split(string(rbac), "\n---\n") {
		var meta metav1.TypeMeta
		mustCreate(yaml.Unmarshal([]byte(doc), &meta))
		kinds[meta.Kind]++
		switch meta.Kind {
		case "ClusterRole":
			var o rbacv1.ClusterRole
			mustCreate(yaml.UnmarshalStrict([]byte(doc), &o))
			_, err = client.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{})
		case "ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			mustCreate(yaml.UnmarshalStrict([]byte(doc), &o))
			_, err = client.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
		case "Role":
			var o rbacv1.Role
			mustCreate(yaml.UnmarshalStrict([]byte(doc), &o))
			_, err = client.RbacV1().Roles("warren-system").Create(ctx, &o, metav1.CreateOptions{})
		case "RoleBinding":
			var o rbacv1.RoleBinding
			mustCreate(yaml.UnmarshalStrict([]byte(doc), &o))
			_, err = client.RbacV1().RoleBindings("warren-system").Create(ctx, &o, metav1.CreateOptions{})
		default:
			t.Fatalf("rbac.yaml: unexpected kind %q", meta.Kind)
		}
		mustCreate(err)
	}
	if kinds["ClusterRole"] != 1 || kinds["Role"] != 2 {
		t.Errorf("rbac.yaml holds %v: want the agent's ClusterRole and binding, its Role and binding, and warren-observer", kinds)
	}
}
