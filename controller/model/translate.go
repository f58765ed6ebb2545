package model

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/internal/enrollment"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy"
)

// WorkloadFromPod translates a pod. nsLabels are the labels of the pod's
// namespace (nil when the namespace is unknown: not enrolled). ok is false for
// pods that are no workload: finished (Succeeded or Failed) or not yet
// scheduled. Enrollment is internal/enrollment's rule, the node agent's too; a
// malformed label is returned as err, with the workload, not enrolled.
func WorkloadFromPod(pod *corev1.Pod, nsLabels map[string]string, trustDomain string) (w Workload, ok bool, err error) {
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return Workload{}, false, nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default" // what the apiserver's admission fills in
	}
	w = Workload{
		UID:            pod.UID,
		Namespace:      pod.Namespace,
		Name:           pod.Name,
		Node:           pod.Spec.NodeName,
		ServiceAccount: sa,
		Identity:       identity.ID{TrustDomain: trustDomain, Namespace: pod.Namespace, ServiceAccount: sa},
		Labels:         maps.Clone(pod.Labels),
		Running:        pod.Status.Phase == corev1.PodRunning,
	}
	// A host-network pod's traffic is the node's: never enrolled, whatever
	// its labels (the agent ignores it too).
	if !pod.Spec.HostNetwork {
		w.Enrolled, err = enrollment.ShouldEnroll(nsLabels, pod.Labels)
		if err != nil {
			err = fmt.Errorf("pod %s/%s not enrolled: %w", pod.Namespace, pod.Name, err)
		}
	}
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			w.IPs = append(w.IPs, a.Unmap())
		}
	}
	if len(w.IPs) == 0 && pod.Status.PodIP != "" {
		if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			w.IPs = append(w.IPs, a.Unmap())
		}
	}
	slices.SortFunc(w.IPs, netip.Addr.Compare)
	w.IPs = slices.Compact(w.IPs)
	return w, true, err
}

// ServiceFromCore translates a Service and the EndpointSlices that belong to
// it (label kubernetes.io/service-name; others are ignored). An address in
// several slices (as during a slice rebalance) is kept once, ready if any
// copy is ready.
func ServiceFromCore(svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice) Service {
	s := Service{Namespace: svc.Namespace, Name: svc.Name}
	for _, ip := range svc.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			s.VIPs = append(s.VIPs, a.Unmap())
		}
	}
	slices.SortFunc(s.VIPs, netip.Addr.Compare)
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		sp := ServicePort{Name: p.Name, Port: uint16(p.Port)}
		if p.AppProtocol != nil {
			sp.AppProtocol = *p.AppProtocol
		}
		switch {
		case p.TargetPort.Type == intstr.String:
			sp.TargetPortName = p.TargetPort.StrVal
		case p.TargetPort.IntVal != 0:
			sp.TargetPort = uint16(p.TargetPort.IntVal)
		default:
			sp.TargetPort = sp.Port // the API's default
		}
		s.Ports = append(s.Ports, sp)
	}
	slices.SortFunc(s.Ports, func(a, b ServicePort) int { return int(a.Port) - int(b.Port) })

	byAddr := map[netip.Addr]*Endpoint{}
	for _, es := range endpointSlices {
		if es.Namespace != svc.Namespace || es.Labels[discoveryv1.LabelServiceName] != svc.Name {
			continue
		}
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		ports := map[string]uint16{}
		for _, p := range es.Ports {
			if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			ports[name] = uint16(*p.Port)
		}
		for _, ep := range es.Endpoints {
			// The API says a nil ready condition means ready.
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			for _, addr := range ep.Addresses {
				a, err := netip.ParseAddr(addr)
				if err != nil {
					continue
				}
				a = a.Unmap()
				if e, dup := byAddr[a]; dup {
					e.Ready = e.Ready || ready
					continue
				}
				e := &Endpoint{Addr: a, Ready: ready, Ports: maps.Clone(ports)}
				if ep.NodeName != nil {
					e.Node = *ep.NodeName
				}
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
					e.WorkloadUID = ep.TargetRef.UID
				}
				byAddr[a] = e
			}
		}
	}
	for _, e := range byAddr {
		s.Endpoints = append(s.Endpoints, *e)
	}
	slices.SortFunc(s.Endpoints, func(a, b Endpoint) int { return a.Addr.Compare(b.Addr) })
	return s
}

// ErrInvalidPolicy is wrapped by the errors of PolicyFromCRD and
// PeerAuthFromCRD: the object passed the apiserver's schema (or predates it)
// but cannot be enforced as written.
var ErrInvalidPolicy = errors.New("invalid policy")

// PolicyFromCRD translates an AuthorizationPolicy. On error the returned
// Policy is still usable and fails closed: an invalid DENY policy denies
// everything to the workloads it selects, an invalid ALLOW policy allows
// nothing (so only the other ALLOW policies let connections in). Dropping it
// instead would open what its author meant to close. An invalid selector
// selects nothing: guessing which workloads it meant could close a namespace.
func PolicyFromCRD(ap *v1alpha1.AuthorizationPolicy) (policy.Policy, error) {
	p := policy.Policy{Namespace: ap.Namespace, Name: ap.Name, Action: policy.Action(ap.Spec.Action)}
	var errs []error
	sel, err := selector(ap.Spec.Selector)
	if err != nil {
		errs = append(errs, err)
	}
	p.Selector = sel
	switch ap.Spec.Action {
	case v1alpha1.ActionAllow:
		p.Action = policy.ActionAllow
	case v1alpha1.ActionDeny:
		p.Action = policy.ActionDeny
	default:
		errs = append(errs, fmt.Errorf("spec.action: %q is neither ALLOW nor DENY", ap.Spec.Action))
		p.Action = policy.ActionDeny
	}
	for i, r := range ap.Spec.Rules {
		var rule policy.Rule
		for j, f := range r.From {
			var src policy.Source
			for _, pr := range f.Principals {
				id, err := identity.Parse(pr)
				if err != nil {
					errs = append(errs, fmt.Errorf("spec.rules[%d].from[%d].principals: %w", i, j, err))
					continue
				}
				src.Principals = append(src.Principals, id)
			}
			src.Namespaces = slices.Clone(f.Namespaces)
			rule.From = append(rule.From, src)
		}
		for j, t := range r.To {
			if len(t.Methods) > 0 || len(t.Paths) > 0 {
				errs = append(errs, fmt.Errorf("spec.rules[%d].to[%d]: methods and paths need a waypoint, which Warren does not have yet", i, j))
			}
			var dst policy.Destination
			for _, port := range t.Ports {
				if port < 1 || port > 65535 {
					errs = append(errs, fmt.Errorf("spec.rules[%d].to[%d].ports: %d is not a port", i, j, port))
					continue
				}
				dst.Ports = append(dst.Ports, uint16(port))
			}
			rule.To = append(rule.To, dst)
		}
		p.Rules = append(p.Rules, rule)
	}
	if len(errs) > 0 {
		if p.Action == policy.ActionDeny {
			p.Rules = []policy.Rule{{}} // matches everything
		} else {
			p.Rules = nil // matches nothing
		}
		return p, fmt.Errorf("%w: %w", ErrInvalidPolicy, errors.Join(errs...))
	}
	return p, nil
}

// PeerAuthFromCRD translates a PeerAuthentication. On error the returned
// PeerAuth is STRICT: a mode Warren cannot read must not let plaintext in.
func PeerAuthFromCRD(pa *v1alpha1.PeerAuthentication) (PeerAuth, error) {
	out := PeerAuth{Namespace: pa.Namespace, Name: pa.Name, Mode: pa.Spec.MTLS.Mode, Created: pa.CreationTimestamp.Time}
	var errs []error
	sel, err := selector(pa.Spec.Selector)
	if err != nil {
		errs = append(errs, err)
	}
	out.Selector = sel
	if out.Mode != v1alpha1.ModeStrict && out.Mode != v1alpha1.ModePermissive {
		errs = append(errs, fmt.Errorf("spec.mtls.mode: %q is neither STRICT nor PERMISSIVE", out.Mode))
	}
	if len(errs) > 0 {
		out.Mode = v1alpha1.ModeStrict
		return out, fmt.Errorf("%w: %w", ErrInvalidPolicy, errors.Join(errs...))
	}
	return out, nil
}

// selector checks label keys and values, which the CRD schema leaves to the
// controller (CEL over map keys would cost more than the apiserver allows).
func selector(s *v1alpha1.WorkloadSelector) (map[string]string, error) {
	if s == nil {
		return nil, nil
	}
	var msgs []string
	for k, v := range s.MatchLabels {
		for _, m := range validation.IsQualifiedName(k) {
			msgs = append(msgs, fmt.Sprintf("key %q: %s", k, m))
		}
		for _, m := range validation.IsValidLabelValue(v) {
			msgs = append(msgs, fmt.Sprintf("value %q of %q: %s", v, k, m))
		}
	}
	if len(msgs) > 0 {
		slices.Sort(msgs)
		return map[string]string{"": ""}, fmt.Errorf("spec.selector.matchLabels: %s", strings.Join(msgs, "; "))
	}
	// An empty selector would otherwise mean "everything", the opposite of
	// what a list of labels says; the schema refuses it, this is for objects
	// written before the schema.
	if len(s.MatchLabels) == 0 {
		return map[string]string{"": ""}, fmt.Errorf("spec.selector.matchLabels: empty")
	}
	return maps.Clone(s.MatchLabels), nil
}
