package nodeagent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestPodIndex(t *testing.T) {
	yes := true
	client := fake.NewClientset(
		kubePod("shop", "web-7d9f8-abcde", "uid-1", "node1", "10.244.1.5", func(p *corev1.Pod) {
			p.Labels = map[string]string{"pod-template-hash": "7d9f8", "app": "web"}
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-7d9f8", Controller: &yes}}
			p.Spec.ServiceAccountName = "web"
		}),
		kubePod("db", "pg-0", "uid-2", "node2", "10.244.2.7", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "StatefulSet", Name: "pg", Controller: &yes}}
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::7"})
		}),
		kubePod("kube-system", "proxy", "uid-3", "node1", "10.250.0.11", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		kubePod("shop", "old", "uid-4", "node1", "10.244.1.9", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		kubePod("shop", "new", "uid-5", "node1", "10.244.1.9"),
	)
	idx, err := NewPodIndex(client, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !idx.Run(ctx, 10*time.Second) {
		t.Fatal("not synced")
	}
	for ip, want := range map[string]PodMeta{
		"10.244.1.5": {Namespace: "shop", Name: "web-7d9f8-abcde", Workload: "web", ServiceAccount: "web", Identity: "spiffe://cluster.local/ns/shop/sa/web"},
		"10.244.2.7": {Namespace: "db", Name: "pg-0", Workload: "pg", ServiceAccount: "default", Identity: "spiffe://cluster.local/ns/db/sa/default"},
		"fd00::7":    {Namespace: "db", Name: "pg-0", Workload: "pg", ServiceAccount: "default", Identity: "spiffe://cluster.local/ns/db/sa/default"},
		"10.244.1.9": {Namespace: "shop", Name: "new", Workload: "new", ServiceAccount: "default", Identity: "spiffe://cluster.local/ns/shop/sa/default"},
	} {
		got, ok := idx.PodByIP(netip.MustParseAddr(ip))
		if !ok || got != want {
			t.Errorf("PodByIP(%s) = %+v, %v; want %+v", ip, got, ok, want)
		}
	}
	for _, ip := range []string{"10.250.0.11", "10.244.9.9"} { // host network; nobody
		if got, ok := idx.PodByIP(netip.MustParseAddr(ip)); ok {
			t.Errorf("PodByIP(%s) = %+v, want unknown", ip, got)
		}
	}
	if got, ok := idx.PodByIP(netip.MustParseAddr("::ffff:10.244.1.5")); !ok || got.Name != "web-7d9f8-abcde" {
		t.Errorf("v4-mapped: %+v, %v", got, ok)
	}
}
