package gateway

import (
	"errors"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func waypoint(listeners ...gwv1.Listener) *gwv1.Gateway {
	return &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "wp", Namespace: "shop", UID: "u1", Generation: 3},
		Spec:       gwv1.GatewaySpec{GatewayClassName: ClassName, Listeners: listeners},
	}
}

var mesh = gwv1.Listener{Name: "mesh", Port: HBONEPort, Protocol: HBONEProtocol}

func TestRender(t *testing.T) {
	gw := waypoint(mesh)
	o := Options{Image: "reg/waypoint:1", Controller: "warren-controller.warren-system.svc:15012"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	objs := Render(gw, "PEM", o)
	for _, m := range []metav1.Object{objs.ServiceAccount, objs.Roots, objs.Deployment, objs.Service} {
		refs := m.GetOwnerReferences()
		if m.GetNamespace() != "shop" || len(refs) != 1 || refs[0].UID != "u1" || refs[0].Kind != "Gateway" || refs[0].Controller == nil || !*refs[0].Controller {
			t.Errorf("%s: namespace %q owners %+v: want shop, owned by the Gateway", m.GetName(), m.GetNamespace(), refs)
		}
		if m.GetLabels()[LabelManagedBy] != ManagedBy {
			t.Errorf("%s: labels %v lack %s=%s (the cache selects on it)", m.GetName(), m.GetLabels(), LabelManagedBy, ManagedBy)
		}
	}
	pod := objs.Deployment.Spec.Template
	if pod.Spec.ServiceAccountName != "wp" || objs.ServiceAccount.Name != "wp" {
		t.Errorf("service account %q / %q: want the waypoint's own, wp", pod.Spec.ServiceAccountName, objs.ServiceAccount.Name)
	}
	if pod.Labels[labelMesh] != "disabled" {
		t.Errorf("pod labels %v: the waypoint must not be redirected", pod.Labels)
	}
	sel := objs.Deployment.Spec.Selector.MatchLabels
	for k, v := range sel {
		if pod.Labels[k] != v || objs.Service.Spec.Selector[k] != v {
			t.Errorf("selector %s=%s does not select the pods or is not the Service's", k, v)
		}
	}
	c := pod.Spec.Containers[0]
	if c.Image != "reg/waypoint:1" || *c.SecurityContext.RunAsNonRoot != true || *c.SecurityContext.ReadOnlyRootFilesystem != true {
		t.Errorf("container %+v", c)
	}
	if objs.Roots.Data[rootsKey] != "PEM" || pod.Spec.Volumes[0].ConfigMap.Name != RootsName(gw) {
		t.Errorf("roots not mounted from the copied ConfigMap")
	}
	if p := objs.Service.Spec.Ports; len(p) != 1 || p[0].Port != HBONEPort {
		t.Errorf("service ports %+v: want HBONE only", p)
	}
	if err := (&Options{}).Validate(); err == nil {
		t.Error("empty options validated")
	}
}

func TestGatewayStatus(t *testing.T) {
	now := metav1.NewTime(time.Unix(1000, 0))
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.5", ClusterIPs: []string{"10.96.0.5", "fd00::5"}}}
	up := &appsv1.Deployment{Status: appsv1.DeploymentStatus{AvailableReplicas: 1}}
	down := &appsv1.Deployment{}
	type want struct {
		accepted, programmed   bool
		acceptReason, progReas string
		addrs                  int
	}
	for _, tc := range []struct {
		name string
		gw   *gwv1.Gateway
		obs  Observed
		want want
	}{
		{"ready", waypoint(mesh), Observed{Deployment: up, Service: svc}, want{true, true, "Accepted", "Programmed", 2}},
		{"no listener: accepted", waypoint(), Observed{Deployment: up, Service: svc}, want{true, true, "Accepted", "Programmed", 2}},
		{"pod not ready", waypoint(mesh), Observed{Deployment: down, Service: svc}, want{true, false, "Accepted", "Pending", 2}},
		{"nothing yet", waypoint(mesh), Observed{}, want{true, false, "Accepted", "AddressNotAssigned", 0}},
		{"apply failed", waypoint(mesh), Observed{ApplyError: errors.New("forbidden")}, want{true, false, "Accepted", "NoResources", 0}},
		{"http listener", waypoint(gwv1.Listener{Name: "web", Port: 80, Protocol: gwv1.HTTPProtocolType}), Observed{}, want{false, false, "ListenersNotValid", "Invalid", 0}},
		{"wrong port", waypoint(gwv1.Listener{Name: "m", Port: 15009, Protocol: HBONEProtocol}), Observed{}, want{false, false, "ListenersNotValid", "Invalid", 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := GatewayStatus(tc.gw, tc.obs, now)
			a := meta.FindStatusCondition(st.Conditions, "Accepted")
			p := meta.FindStatusCondition(st.Conditions, "Programmed")
			if a == nil || p == nil {
				t.Fatalf("conditions %+v", st.Conditions)
			}
			if (a.Status == metav1.ConditionTrue) != tc.want.accepted || a.Reason != tc.want.acceptReason || a.ObservedGeneration != 3 {
				t.Errorf("Accepted %+v, want %v %s", a, tc.want.accepted, tc.want.acceptReason)
			}
			if (p.Status == metav1.ConditionTrue) != tc.want.programmed || p.Reason != tc.want.progReas {
				t.Errorf("Programmed %+v, want %v %s", p, tc.want.programmed, tc.want.progReas)
			}
			if len(st.Addresses) != tc.want.addrs {
				t.Errorf("addresses %+v, want %d", st.Addresses, tc.want.addrs)
			}
			if len(st.Listeners) != len(tc.gw.Spec.Listeners) {
				t.Errorf("listener statuses %d for %d listeners", len(st.Listeners), len(tc.gw.Spec.Listeners))
			}
		})
	}
	// The transition time stays when nothing changes.
	gw := waypoint(mesh)
	gw.Status = GatewayStatus(gw, Observed{Deployment: up, Service: svc}, now)
	later := GatewayStatus(gw, Observed{Deployment: up, Service: svc}, metav1.NewTime(now.Add(time.Hour)))
	if c := meta.FindStatusCondition(later.Conditions, "Programmed"); !c.LastTransitionTime.Equal(&now) {
		t.Errorf("transition time moved to %v with no change", c.LastTransitionTime)
	}
}

func TestClassStatus(t *testing.T) {
	gc := &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Generation: 2}, Spec: gwv1.GatewayClassSpec{ControllerName: ControllerName}}
	st := ClassStatus(gc, metav1.Now())
	if c := meta.FindStatusCondition(st.Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 2 {
		t.Errorf("class status %+v", st)
	}
}
