package nodeagent

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PodIndex resolves pod addresses cluster-wide, for flow labels: an
// informer on every pod, each trimmed to what a flow label needs. Host-network
// pods are left out (their address is the node's). It resolves Services'
// cluster IPs too (an app's connection to a Service has its cluster IP for
// original destination: the ztunnel, not the kernel, picks the endpoint),
// from a second informer on every Service trimmed to its cluster IPs.
type PodIndex struct {
	factory     informers.SharedInformerFactory
	informer    cache.SharedIndexInformer
	services    cache.SharedIndexInformer
	trustDomain string
}

const (
	podIPIndex     = "podIP"
	clusterIPIndex = "clusterIP"
)

// NewPodIndex builds the informer; Run starts it.
func NewPodIndex(client kubernetes.Interface, trustDomain string) (*PodIndex, error) {
	if trustDomain == "" {
		trustDomain = "cluster.local"
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(trimObject))
	inf := f.Core().V1().Pods().Informer()
	if err := inf.AddIndexers(cache.Indexers{podIPIndex: func(obj any) ([]string, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Spec.HostNetwork {
			return nil, nil
		}
		var out []string
		for _, ip := range pod.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				out = append(out, a.Unmap().String())
			}
		}
		return out, nil
	}}); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	svc := f.Core().V1().Services().Informer()
	if err := svc.AddIndexers(cache.Indexers{clusterIPIndex: func(obj any) ([]string, error) {
		s, ok := obj.(*corev1.Service)
		if !ok {
			return nil, nil
		}
		return clusterIPs(s), nil
	}}); err != nil {
		return nil, fmt.Errorf("service index: %w", err)
	}
	return &PodIndex{factory: f, informer: inf, services: svc, trustDomain: trustDomain}, nil
}

// clusterIPs are the addresses a Service answers on, unmapped: none for a
// headless (ClusterIP None) or ExternalName Service.
func clusterIPs(s *corev1.Service) []string {
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	return out
}

// Run starts the informer, for as long as ctx lasts, and waits for its first
// list at most timeout: it reports false if that did not come (the index
// fills later; flows are labelled unknown meanwhile).
func (p *PodIndex) Run(ctx context.Context, timeout time.Duration) bool {
	p.factory.Start(ctx.Done())
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return cache.WaitForCacheSync(wctx.Done(), p.informer.HasSynced, p.services.HasSynced)
}

// PodByIP implements PodResolver. Of several pods with one address (a
// finished pod's, reused), the running one wins. An address that is no
// pod's but a Service's cluster IP is that Service (PodMeta.Service).
func (p *PodIndex) PodByIP(ip netip.Addr) (PodMeta, bool) {
	objs, err := p.informer.GetIndexer().ByIndex(podIPIndex, ip.Unmap().String())
	if err != nil || len(objs) == 0 {
		return p.serviceByIP(ip)
	}
	var pod *corev1.Pod
	for _, o := range objs {
		cand := o.(*corev1.Pod)
		if pod == nil || (cand.Status.Phase == corev1.PodRunning && pod.Status.Phase != corev1.PodRunning) {
			pod = cand
		}
	}
	m := PodMetaOf(pod)
	m.SetIdentity(p.trustDomain)
	return m, true
}

// serviceByIP names the Service of a cluster IP. Two Services never share
// one (the apiserver allocates them); should the cache briefly hold two (a
// deleted one's, reused), the first by namespace/name wins.
func (p *PodIndex) serviceByIP(ip netip.Addr) (PodMeta, bool) {
	objs, err := p.services.GetIndexer().ByIndex(clusterIPIndex, ip.Unmap().String())
	if err != nil || len(objs) == 0 {
		return PodMeta{}, false
	}
	var svc *corev1.Service
	for _, o := range objs {
		cand := o.(*corev1.Service)
		if svc == nil || cand.Namespace+"/"+cand.Name < svc.Namespace+"/"+svc.Name {
			svc = cand
		}
	}
	return PodMeta{Namespace: svc.Namespace, Service: svc.Name}, true
}

// PodMetaOf is what flows say about a pod.
func PodMetaOf(pod *corev1.Pod) PodMeta {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return PodMeta{Namespace: pod.Namespace, Name: pod.Name, Workload: WorkloadName(pod), ServiceAccount: sa}
}

// WorkloadName names the pod's workload: its controller's name, with a
// ReplicaSet's pod-template-hash suffix removed (its Deployment's name), a
// Job's controller-uid-free name as it is; the pod's own name without a controller.
func WorkloadName(pod *corev1.Pod) string {
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return pod.Name
	}
	if owner.Kind == "ReplicaSet" {
		if h := pod.Labels["pod-template-hash"]; h != "" {
			return strings.TrimSuffix(owner.Name, "-"+h)
		}
	}
	return owner.Name
}

// trimPod keeps what PodByIP needs of a pod.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	var hash map[string]string
	if h, ok := pod.Labels["pod-template-hash"]; ok {
		hash = map[string]string{"pod-template-hash": h}
	}
	return &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion, Labels: hash, OwnerReferences: pod.OwnerReferences},
		Spec:   corev1.PodSpec{ServiceAccountName: pod.Spec.ServiceAccountName, HostNetwork: pod.Spec.HostNetwork, NodeName: pod.Spec.NodeName},
		Status: corev1.PodStatus{Phase: pod.Status.Phase, PodIPs: pod.Status.PodIPs},
	}, nil
}

// trimService keeps what serviceByIP needs of a Service: its name and
// cluster IPs (and type, to leave ExternalName ones out).
func trimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	return &corev1.Service{
		TypeMeta: s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID,
			ResourceVersion: s.ResourceVersion},
		Spec: corev1.ServiceSpec{Type: s.Spec.Type, ClusterIP: s.Spec.ClusterIP, ClusterIPs: s.Spec.ClusterIPs},
	}, nil
}

// trimObject trims what the index's informers hold.
func trimObject(obj any) (any, error) {
	if _, ok := obj.(*corev1.Service); ok {
		return trimService(obj)
	}
	return trimPod(obj)
}

// podIndexSyncTimeout is how long the agent waits for the index's first list
// before it says so in its log (nothing waits for it: flows before it are
// labelled unknown).
const podIndexSyncTimeout = 30 * time.Second
