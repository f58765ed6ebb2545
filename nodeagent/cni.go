package nodeagent

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warrenmesh/warren/nodeagent/cniapi"
)

// ErrUnknownPod: a CNI call for a pod the API does not have (on this node).
var ErrUnknownPod = errors.New("unknown pod")

// CNIAdd serves the plugin's ADD: it enrolls the pod (netns from the
// runtime, addresses from the previous plugin) when its labels say so, and
// returns once redirection is in place. An error fails the pod's creation.
func (r *Reconciler) CNIAdd(ctx context.Context, req cniapi.AddRequest) (cniapi.AddResponse, error) {
	key := req.Namespace + "/" + req.Name
	if req.Namespace == "" || req.Name == "" || req.Netns == "" {
		return cniapi.AddResponse{}, fmt.Errorf("cni add: pod %q, netns %q: %w", key, req.Netns, ErrInvalidPod)
	}
	pod, err := r.getPod(ctx, req.Namespace, req.Name)
	if err != nil {
		return cniapi.AddResponse{}, fmt.Errorf("cni add: %w", err)
	}
	if req.UID != "" && string(pod.UID) != req.UID {
		return cniapi.AddResponse{}, fmt.Errorf("cni add: pod %s has uid %s, the runtime says %s: %w", key, pod.UID, req.UID, ErrUnknownPod)
	}
	if pod.Spec.NodeName != r.cfg.Node {
		return cniapi.AddResponse{}, fmt.Errorf("cni add: pod %s is on node %q, this agent is %q's: %w", key, pod.Spec.NodeName, r.cfg.Node, ErrUnknownPod)
	}
	ns, err := r.getNamespace(ctx, req.Namespace)
	if err != nil {
		return cniapi.AddResponse{}, fmt.Errorf("cni add: %w", err)
	}
	// The kubelet writes the pod's addresses to its status only after this
	// call: decide with the runtime's.
	pod = pod.DeepCopy()
	pod.Status.PodIP, pod.Status.PodIPs = "", nil
	for _, ip := range req.IPs {
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	if pod.Status.Phase == "" {
		pod.Status.Phase = corev1.PodPending
	}
	d, err := Decide(r.cfg.Node, ns, pod)
	if err != nil {
		r.log.Warn("pod created outside the mesh", "pod", key, "err", err)
		return cniapi.AddResponse{Reason: err.Error()}, nil
	}
	switch d.Verdict {
	case Enroll:
	case Wait:
		return cniapi.AddResponse{}, fmt.Errorf("cni add: pod %s: cannot decide: %s", key, d.Reason)
	default:
		return cniapi.AddResponse{Reason: d.Reason}, nil
	}
	uid := string(pod.UID)
	unlock := r.lockPod(uid)
	defer unlock()
	r.mu.Lock()
	r.cniNetns[uid] = req.Netns
	r.mu.Unlock()
	if err := r.enrollPod(ctx, pod, req.Netns, req.ContainerID); err != nil {
		// The runtime calls DEL for the failed sandbox, which undoes
		// whatever part of this was done.
		return cniapi.AddResponse{}, fmt.Errorf("cni add: pod %s: %w", key, err)
	}
	return cniapi.AddResponse{Enrolled: true, Reason: d.Reason}, nil
}

// CNIDel serves the plugin's DEL: the pod's sandbox is going. It comes again
// later for the same sandbox, with no netns: idempotent.
func (r *Reconciler) CNIDel(ctx context.Context, req cniapi.DelRequest) error {
	key := req.Namespace + "/" + req.Name
	uid := req.UID
	if uid == "" {
		if uids := r.uidsOf(key, ""); len(uids) > 0 {
			uid = uids[len(uids)-1]
		}
	}
	if uid == "" {
		return nil
	}
	unlock := r.lockPod(uid)
	defer unlock()
	// A DEL for an older sandbox must not unenroll the pod's current one.
	if rec, ok, _ := r.record(uid); ok && rec.containerID != "" && req.ContainerID != "" && rec.containerID != req.ContainerID {
		return nil
	}
	r.mu.Lock()
	delete(r.cniNetns, uid)
	r.mu.Unlock()
	return r.unenrollPod(ctx, uid, "sandbox deleted")
}

// getPod reads the pod from the informer, or from the API when the informer
// has not seen it yet (the runtime can be faster than the watch).
func (r *Reconciler) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	if p, err := r.pods.Pods(ns).Get(name); err == nil {
		return p, nil
	}
	p, err := r.cfg.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s/%s: %w", ns, name, ErrUnknownPod)
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	return p, nil
}

func (r *Reconciler) getNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if ns, err := r.namespaces.Get(name); err == nil {
		return ns, nil
	}
	ns, err := r.cfg.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", name, err)
	}
	return ns, nil
}
