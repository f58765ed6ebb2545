package model

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warrenmesh/warren/api/v1alpha1"
)

// meshInputs is the benchmark size: 10k pods on 100 nodes, 1k
// services of 10 endpoints, and 100 policies per kind.
func meshInputs() Inputs {
	var in Inputs
	for n := range 10 {
		in.Namespaces = append(in.Namespaces, ns(fmt.Sprintf("ns%d", n), enabled))
	}
	for i := range 10000 {
		namespace := fmt.Sprintf("ns%d", i%10)
		in.Pods = append(in.Pods, pod(namespace, fmt.Sprintf("p%d", i), fmt.Sprintf("n%d", i%100), fmt.Sprintf("sa%d", i%50),
			corev1.PodRunning, map[string]string{"app": fmt.Sprintf("a%d", i%1000)}, fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256)))
	}
	for s := range 1000 {
		namespace := fmt.Sprintf("ns%d", s%10)
		name := fmt.Sprintf("s%d", s)
		in.Services = append(in.Services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: corev1.ServiceSpec{ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", s/256, s%256)}, Ports: []corev1.ServicePort{{Port: 80}}}})
		var eps []discoveryv1.Endpoint
		for e := range 10 {
			i := s + 1000*e
			eps = append(eps, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256)}})
		}
		in.EndpointSlices = append(in.EndpointSlices, slice(namespace, name, discoveryv1.AddressTypeIPv4, nil, eps...))
	}
	for p := range 100 {
		namespace := fmt.Sprintf("ns%d", p%10)
		action := v1alpha1.ActionAllow
		if p%5 == 0 {
			action = v1alpha1.ActionDeny
		}
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, ap(namespace, fmt.Sprintf("ap%d", p), action,
			map[string]string{"app": fmt.Sprintf("a%d", p*7%1000)}, v1alpha1.Rule{}))
		in.PeerAuthentications = append(in.PeerAuthentications, pa(namespace, fmt.Sprintf("pa%d", p), v1alpha1.ModeStrict,
			map[string]string{"app": fmt.Sprintf("a%d", p*3%1000)}, p))
	}
	return in
}

func BenchmarkBuild(b *testing.B) {
	in := meshInputs()
	for b.Loop() {
		Build(in)
	}
}

func BenchmarkForNode(b *testing.B) {
	m := Build(meshInputs())
	for b.Loop() {
		m.ForNode("n7")
	}
}
