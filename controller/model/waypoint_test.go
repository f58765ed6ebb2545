package model

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warrenmesh/warren/controller/gateway"
)

func useWaypoint(v string) map[string]string { return map[string]string{gateway.LabelUseWaypoint: v} }

// TestServiceWaypoint: Build binds every Service by gateway.WaypointFor,
// in the Service's namespace, whether or not the waypoint exists.
func TestServiceWaypoint(t *testing.T) {
	for _, tc := range []struct {
		name              string
		nsLabels, svcLabs map[string]string
		want              string
	}{
		{"no labels", nil, nil, ""},
		{"namespace label", useWaypoint("wp"), nil, "shop/wp"},
		{"service label", nil, useWaypoint("wp2"), "shop/wp2"},
		{"service label wins", useWaypoint("wp"), useWaypoint("wp2"), "shop/wp2"},
		{"service opts out", useWaypoint("wp"), useWaypoint(gateway.UseWaypointNone), ""},
		{"namespace none", useWaypoint(gateway.UseWaypointNone), nil, ""},
		{"missing waypoint still binds (fail closed)", useWaypoint("no-such-gateway"), nil, "shop/no-such-gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Build(Inputs{
				Namespaces: []*corev1.Namespace{ns("shop", tc.nsLabels), ns("other", useWaypoint("elsewhere"))},
				Services: []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: tc.svcLabs},
					Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.1"}, Ports: []corev1.ServicePort{{Port: 80}}}}},
			})
			if got := m.Services[Key{Namespace: "shop", Name: "web"}].Waypoint; got != tc.want {
				t.Errorf("waypoint = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestServicePortAppProtocol(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "http", Port: 80, AppProtocol: ptr("http")},
		{Name: "grpc", Port: 90, AppProtocol: ptr("kubernetes.io/h2c")},
		{Name: "plain", Port: 100},
	}}}
	s := ServiceFromCore(svc, nil)
	want := map[uint16]string{80: "http", 90: "kubernetes.io/h2c", 100: ""}
	if len(s.Ports) != len(want) {
		t.Fatalf("ports %+v", s.Ports)
	}
	for _, p := range s.Ports {
		if p.AppProtocol != want[p.Port] {
			t.Errorf("port %d appProtocol = %q, want %q", p.Port, p.AppProtocol, want[p.Port])
		}
	}
}
