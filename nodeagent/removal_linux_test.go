package nodeagent

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	agentNS = "warren-system"
	agentDS = "warren-agent"
	agentSA = "warren-agent"
)

// agentObjects creates what a DaemonSet install has on a bare apiserver
// (no controllers run there): the namespace, the DaemonSet (with a finalizer
// of the test's when withFinalizer), one agent pod owned by it and one owned
// by nothing, the ServiceAccount and the RBAC the agent needs.
func agentObjects(t *testing.T, client kubernetes.Interface, withFinalizer bool) *appsv1.DaemonSet {
	t.Helper()
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Get(ctx, agentNS, metav1.GetOptions{}); err != nil {
		_, err := client.CoreV1().Namespaces().Create(ctx, testNS(agentNS, nil), metav1.CreateOptions{})
		must(t, err)
		for _, sa := range []string{"default", agentSA} {
			_, err = client.CoreV1().ServiceAccounts(agentNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
			must(t, err)
		}
		_, err = client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: agentSA},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get"}},
			},
		}, metav1.CreateOptions{})
		must(t, err)
		bindAgent(t, client)
	}
	labels := map[string]string{"app": "warren-agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: agentDS, Namespace: agentNS},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "warren-agent"}}},
			},
		},
	}
	if withFinalizer {
		ds.Finalizers = []string{"warren.dev/test"}
	}
	ds, err := client.AppsV1().DaemonSets(agentNS).Create(ctx, ds, metav1.CreateOptions{})
	must(t, err)
	for _, p := range []struct {
		name  string
		owner bool
	}{{"agent-owned", true}, {"agent-alone", false}} {
		_ = client.CoreV1().Pods(agentNS).Delete(ctx, p.name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: agentNS, Labels: labels},
			Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "agent", Image: "warren-agent"}}},
		}
		if p.owner {
			pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: new(bool)}}
		}
		waitFor(t, "pod "+p.name+" created", func() bool {
			_, err := client.CoreV1().Pods(agentNS).Create(ctx, pod, metav1.CreateOptions{})
			return err == nil
		})
	}
	return ds
}

func bindAgent(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	_, err := client.RbacV1().ClusterRoleBindings().Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: agentSA},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: agentSA},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: agentSA, Namespace: agentNS}},
	}, metav1.CreateOptions{})
	must(t, err)
}

// restConfig reads a kubeconfig; as the agent's ServiceAccount when asUser is
// set (impersonated, so RBAC applies to it).
func restConfig(t *testing.T, kubeconfig, asUser string) *rest.Config {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	must(t, err)
	rc.Impersonate.UserName = asUser
	return rc
}

func clientFor(t *testing.T, rc *rest.Config) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(rc)
	must(t, err)
	return c
}

// newCheck is newRemovalCheck, once its lookup at start is done.
func newCheck(client kubernetes.Interface, namespace, pod string, log *slog.Logger) *removalCheck {
	c := newRemovalCheck(context.Background(), client, namespace, pod, 10*time.Second, log)
	<-c.started
	return c
}

func expectDecision(t *testing.T, what string, c *removalCheck, want bool, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, reason := c.decide(ctx)
	t.Logf("%s: uninstall=%v: %s", what, got, reason)
	if got != want || !strings.Contains(reason, why) {
		t.Errorf("%s: uninstall=%v (%s), want %v and %q", what, got, reason, want, why)
	}
}

// The agent's decision at exit, against a real apiserver, as its
// ServiceAccount: removed when its DaemonSet is being deleted or gone, when
// its namespace is terminating, or when access it had at start is denied;
// left in place when the DaemonSet lives, when the API cannot be reached,
// outside Kubernetes, for a pod no DaemonSet owns, and when access was
// already denied at start.
func TestRemovalDecision(t *testing.T) {
	admin, kubeconfig := startAPIServerKubeconfig(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	ds := agentObjects(t, admin, true)
	asAgent := restConfig(t, kubeconfig, "system:serviceaccount:"+agentNS+":"+agentSA)
	agent := clientFor(t, asAgent)

	expectDecision(t, "outside Kubernetes", newCheck(agent, "", "", log), false, "no pod name")
	expectDecision(t, "no owner", newCheck(agent, agentNS, "agent-alone", log), false, "no DaemonSet owner")
	alive := newCheck(agent, agentNS, "agent-owned", log)
	if alive.daemonSet != agentDS || !alive.readable {
		t.Fatalf("at start: daemonset %q, readable %v", alive.daemonSet, alive.readable)
	}
	expectDecision(t, "restart", alive, false, "is still there")

	// The API out of reach: nothing can be told, nothing is removed.
	away := rest.CopyConfig(asAgent)
	away.Host, away.Timeout = "https://127.0.0.1:1", 2*time.Second
	unreachable := *alive
	unreachable.client = clientFor(t, away)
	expectDecision(t, "apiserver unreachable", &unreachable, false, "cannot tell")
	// A token the apiserver does not take (401): the ServiceAccount is gone.
	bad := rest.AnonymousClientConfig(asAgent)
	bad.BearerToken = "not-a-token"
	unauthorized := *alive
	unauthorized.client = clientFor(t, bad)
	expectDecision(t, "token refused", &unauthorized, true, "access denied, which it was not at start")
	unauthorized.readable = false
	expectDecision(t, "token refused, as at start", &unauthorized, false, "as at start")

	// RBAC removed (kubectl delete -k manifests/ takes it with the rest).
	must(t, admin.RbacV1().ClusterRoleBindings().Delete(ctx, agentSA, metav1.DeleteOptions{}))
	waitFor(t, "the agent denied", func() bool {
		_, err := agent.AppsV1().DaemonSets(agentNS).Get(ctx, agentDS, metav1.GetOptions{})
		return err != nil
	})
	expectDecision(t, "RBAC removed", alive, true, "access denied, which it was not at start")
	denied := newCheck(agent, agentNS, "agent-owned", log)
	expectDecision(t, "RBAC missing from the start", denied, false, "cannot find the agent's DaemonSet")
	bindAgent(t, admin)
	waitFor(t, "the agent allowed again", func() bool {
		_, err := agent.AppsV1().DaemonSets(agentNS).Get(ctx, agentDS, metav1.GetOptions{})
		return err == nil
	})
	expectDecision(t, "RBAC back", alive, false, "is still there")

	// The DaemonSet deleted: first held by a finalizer, then gone.
	must(t, admin.AppsV1().DaemonSets(agentNS).Delete(ctx, agentDS, metav1.DeleteOptions{}))
	expectDecision(t, "DaemonSet being deleted", alive, true, "is being deleted")
	ds, err := admin.AppsV1().DaemonSets(agentNS).Get(ctx, ds.Name, metav1.GetOptions{})
	must(t, err)
	ds.Finalizers = nil
	_, err = admin.AppsV1().DaemonSets(agentNS).Update(ctx, ds, metav1.UpdateOptions{})
	must(t, err)
	expectDecision(t, "DaemonSet gone", alive, true, "is gone")

	// The namespace deleted (no namespace controller here: it stays
	// Terminating, with the DaemonSet in it).
	agentObjects(t, admin, false)
	alive = newCheck(agent, agentNS, "agent-owned", log)
	expectDecision(t, "DaemonSet back", alive, false, "is still there")
	must(t, admin.CoreV1().Namespaces().Delete(ctx, agentNS, metav1.DeleteOptions{}))
	expectDecision(t, "namespace terminating", alive, true, "namespace "+agentNS+" is being deleted")
}
