package nodeagent

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/warrenmesh/warren/internal/enrollment"
)

// The labels that decide enrollment: internal/enrollment's, named here for
// the agent's callers.
const (
	// LabelMesh on a namespace enrolls its pods ("enabled"); on a pod,
	// "disabled" opts it out.
	LabelMesh    = enrollment.Label
	MeshEnabled  = enrollment.Enabled
	MeshDisabled = enrollment.Disabled
)

// Verdict is what the agent should do with a pod.
type Verdict int

const (
	// Ignore: not this node's pod, or a host-network pod; never touched.
	Ignore Verdict = iota
	// Direct: the pod must not be enrolled (unenroll it if it is).
	Direct
	// Wait: not decidable yet (no IP, not running, namespace unknown);
	// leave the pod as it is.
	Wait
	// Enroll: the pod's traffic must go through the tunnel.
	Enroll
)

func (v Verdict) String() string {
	switch v {
	case Ignore:
		return "ignore"
	case Direct:
		return "direct"
	case Wait:
		return "wait"
	case Enroll:
		return "enroll"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Decision is a Verdict with the reason for it, for logs and the CNI plugin's errors.
type Decision struct {
	Verdict Verdict
	Reason  string
}

// ShouldEnroll reports whether the labels alone enroll the pod, by
// internal/enrollment's rule, the controller's too: the namespace has
// warren.dev/mesh=enabled and the pod does not opt out. A malformed label
// value is an error naming the object, and the pod is then not enrolled.
func ShouldEnroll(ns *corev1.Namespace, pod *corev1.Pod) (bool, error) {
	ok, err := enrollment.ShouldEnroll(ns.Labels, pod.Labels)
	var le *enrollment.LabelError
	switch {
	case errors.As(err, &le) && le.Object == "namespace":
		return false, fmt.Errorf("namespace %s: %w", ns.Name, err)
	case err != nil:
		return false, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return ok, nil
}

// Decide tells what the agent of node should do with pod in namespace ns
// (nil when the namespace is not known yet). The error, for a malformed
// label, comes with a Direct decision.
func Decide(node string, ns *corev1.Namespace, pod *corev1.Pod) (Decision, error) {
	switch {
	case pod.Spec.NodeName != node:
		return Decision{Ignore, "pod of another node"}, nil
	case pod.Spec.HostNetwork:
		return Decision{Ignore, "host network"}, nil
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return Decision{Direct, "pod finished"}, nil
	case ns == nil:
		return Decision{Wait, "namespace not known yet"}, nil
	}
	ok, err := ShouldEnroll(ns, pod)
	if err != nil {
		return Decision{Direct, "malformed label"}, err
	}
	if !ok {
		return Decision{Direct, "not enrolled by labels"}, nil
	}
	if _, err := PodIPs(pod); err != nil {
		return Decision{Wait, err.Error()}, nil
	}
	if pod.Status.Phase != corev1.PodRunning && pod.Status.Phase != corev1.PodPending {
		return Decision{Wait, "pod phase " + string(pod.Status.Phase)}, nil
	}
	return Decision{Enroll, "enrolled by labels"}, nil
}

// PodIPs parses the pod's addresses from its status.
func PodIPs(pod *corev1.Pod) ([]netip.Addr, error) {
	var ips []netip.Addr
	for _, p := range pod.Status.PodIPs {
		ip, err := netip.ParseAddr(p.IP)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: address %q: %w", pod.Namespace, pod.Name, p.IP, err)
		}
		ips = append(ips, ip.Unmap())
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ip, err := netip.ParseAddr(pod.Status.PodIP)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: address %q: %w", pod.Namespace, pod.Name, pod.Status.PodIP, err)
		}
		ips = append(ips, ip.Unmap())
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("pod %s/%s: no IP yet", pod.Namespace, pod.Name)
	}
	return ips, nil
}
