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

func kubeService(ns, name string, typ corev1.ServiceType, ips ...string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Type: typ, ClusterIPs: ips,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
	}
	return s
}

// A Service's cluster IP resolves to the Service: namespace and name, no
// workload or identity (the ztunnel picks the endpoint later).
func TestPodIndexServices(t *testing.T) {
	legacy := kubeService("kube-system", "dns", corev1.ServiceTypeClusterIP)
	legacy.Spec.ClusterIP = "10.96.0.10" // only the singular field set
	client := fake.NewClientset(
		kubePod("shop", "web-1", "uid-1", "node1", "10.244.1.5"),
		kubeService("shop", "web", corev1.ServiceTypeClusterIP, "10.96.154.233", "fd00:10:96::e9"),
		kubeService("db", "pg", corev1.ServiceTypeNodePort, "10.96.0.77"),
		kubeService("db", "pg-headless", corev1.ServiceTypeClusterIP, "None"),
		kubeService("db", "ext", corev1.ServiceTypeExternalName),
		legacy,
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
		"10.96.154.233":        {Namespace: "shop", Service: "web"},
		"fd00:10:96::e9":       {Namespace: "shop", Service: "web"},
		"::ffff:10.96.154.233": {Namespace: "shop", Service: "web"},
		"10.96.0.77":           {Namespace: "db", Service: "pg"},
		"10.96.0.10":           {Namespace: "kube-system", Service: "dns"},
		"10.244.1.5":           {Namespace: "shop", Name: "web-1", Workload: "web-1", ServiceAccount: "default", Identity: "spiffe://cluster.local/ns/shop/sa/default"},
	} {
		got, ok := idx.PodByIP(netip.MustParseAddr(ip))
		if !ok || got != want {
			t.Errorf("PodByIP(%s) = %+v, %v; want %+v", ip, got, ok, want)
		}
	}
	if got, ok := idx.PodByIP(netip.MustParseAddr("10.96.9.9")); ok {
		t.Errorf("PodByIP(10.96.9.9) = %+v, want unknown", got)
	}
	// Trimmed: what the informer keeps of a Service is its name and addresses.
	objs := idx.services.GetIndexer().List()
	if len(objs) != 5 {
		t.Fatalf("%d services cached, want 5", len(objs))
	}
	for _, o := range objs {
		if s := o.(*corev1.Service); len(s.Spec.Ports) != 0 {
			t.Errorf("%s/%s not trimmed: %+v", s.Namespace, s.Name, s.Spec)
		}
	}
	// Followed: a new Service resolves, a deleted one no longer does.
	if _, err := client.CoreV1().Services("shop").Create(ctx, kubeService("shop", "api", corev1.ServiceTypeClusterIP, "10.96.1.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Services("db").Delete(ctx, "pg", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		api, okAPI := idx.PodByIP(netip.MustParseAddr("10.96.1.1"))
		_, okPG := idx.PodByIP(netip.MustParseAddr("10.96.0.77"))
		if okAPI && api.Service == "api" && !okPG {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after create/delete: api %+v %v, pg %v", api, okAPI, okPG)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
