package gateway

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Observed is what the cluster shows of a Gateway's waypoint; nil for what
// does not exist (yet).
type Observed struct {
	Deployment *appsv1.Deployment
	Service    *corev1.Service
	// ApplyError is why the objects could not be written, if they could not.
	ApplyError error
}

// ClassStatus is the status Warren writes on its GatewayClass.
func ClassStatus(gc *gwv1.GatewayClass, now metav1.Time) gwv1.GatewayClassStatus {
	st := *gc.Status.DeepCopy()
	setCondition(&st.Conditions, metav1.Condition{
		Type: string(gwv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
		Reason: string(gwv1.GatewayClassReasonAccepted), Message: "Warren runs Gateways of this class as waypoints",
		ObservedGeneration: gc.Generation,
	}, now)
	return st
}

// GatewayStatus is the status of a waypoint Gateway given what exists.
// Accepted: every listener is HBONE on 15008 (or there is none; Warren adds
// it). Programmed: the Deployment has an available replica and the Service
// has an address, which becomes the Gateway's address.
func GatewayStatus(gw *gwv1.Gateway, obs Observed, now metav1.Time) gwv1.GatewayStatus {
	st := *gw.Status.DeepCopy()
	gen := gw.Generation
	cond := func(conds *[]metav1.Condition, t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		setCondition(conds, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}, now)
	}

	valid := 0
	var listeners []gwv1.ListenerStatus
	for _, l := range gw.Spec.Listeners {
		ls := gwv1.ListenerStatus{Name: l.Name, SupportedKinds: []gwv1.RouteGroupKind{}}
		for _, old := range st.Listeners {
			if old.Name == l.Name {
				ls.Conditions = old.Conditions
			}
		}
		reason, msg := checkListener(l)
		if reason == "" {
			valid++
			cond(&ls.Conditions, string(gwv1.ListenerConditionAccepted), true, string(gwv1.ListenerReasonAccepted), "HBONE listener")
		} else {
			cond(&ls.Conditions, string(gwv1.ListenerConditionAccepted), false, string(reason), msg)
		}
		cond(&ls.Conditions, string(gwv1.ListenerConditionResolvedRefs), true, string(gwv1.ListenerReasonResolvedRefs), "no references")
		cond(&ls.Conditions, string(gwv1.ListenerConditionConflicted), false, string(gwv1.ListenerReasonNoConflicts), "no conflicts")
		programmed := reason == "" && ready(obs)
		cond(&ls.Conditions, string(gwv1.ListenerConditionProgrammed), programmed, string(ifElse(programmed, gwv1.ListenerReasonProgrammed, gwv1.ListenerReasonPending)), ifElse(programmed, "the waypoint serves it", "the waypoint is not ready"))
		listeners = append(listeners, ls)
	}
	st.Listeners = listeners

	switch {
	case len(gw.Spec.Listeners) > 0 && valid == 0:
		cond(&st.Conditions, string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonListenersNotValid),
			fmt.Sprintf("no listener a waypoint can serve: declare one with protocol HBONE on port %d", HBONEPort))
	case len(gw.Spec.Addresses) > 0:
		cond(&st.Conditions, string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonUnsupportedAddress),
			"a waypoint's address is its Service's cluster IP; spec.addresses is not supported")
	default:
		cond(&st.Conditions, string(gwv1.GatewayConditionAccepted), true, string(gwv1.GatewayReasonAccepted), "accepted as a waypoint")
	}
	accepted := meta.IsStatusConditionTrue(st.Conditions, string(gwv1.GatewayConditionAccepted))

	st.Addresses = nil
	if obs.Service != nil && obs.Service.Spec.ClusterIP != "" && obs.Service.Spec.ClusterIP != corev1.ClusterIPNone {
		for _, ip := range obs.Service.Spec.ClusterIPs {
			st.Addresses = append(st.Addresses, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: ip})
		}
	}
	switch {
	case !accepted:
		cond(&st.Conditions, string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonInvalid), "not accepted")
	case obs.ApplyError != nil:
		cond(&st.Conditions, string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonNoResources),
			"could not create the waypoint's objects: "+truncate(obs.ApplyError.Error(), 200))
	case len(st.Addresses) == 0:
		cond(&st.Conditions, string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonAddressNotAssigned), "the waypoint's Service has no cluster IP yet")
	case !ready(obs):
		cond(&st.Conditions, string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonPending), "waiting for a waypoint pod to be ready")
	default:
		cond(&st.Conditions, string(gwv1.GatewayConditionProgrammed), true, string(gwv1.GatewayReasonProgrammed), "the waypoint is ready")
	}
	return st
}

// ready: at least one waypoint pod is available.
func ready(obs Observed) bool {
	return obs.Deployment != nil && obs.Deployment.Status.AvailableReplicas > 0
}

// setCondition sets c, keeping the transition time when the status did not
// change.
func setCondition(conds *[]metav1.Condition, c metav1.Condition, now metav1.Time) {
	c.LastTransitionTime = now
	meta.SetStatusCondition(conds, c)
}

func ifElse[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
