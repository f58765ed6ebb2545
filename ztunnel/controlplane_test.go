package ztunnel

import (
	"strings"
	"testing"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
)

func TestMeshFromResources(t *testing.T) {
	res := map[string]*meshv1.Resource{
		"workload/u1": {Key: "workload/u1", Kind: &meshv1.Resource_Workload{Workload: &meshv1.Workload{
			Uid: "u1", Namespace: "shop", Name: "web-1", ServiceAccount: "web", Identity: "spiffe://cluster.local/ns/shop/sa/web",
			Ips: []string{"10.244.1.5"}, Labels: map[string]string{"app": "web"}, MtlsMode: meshv1.MTLSMode_MTLS_MODE_STRICT}}},
		"peer/u2": {Key: "peer/u2", Kind: &meshv1.Resource_Peer{Peer: &meshv1.Peer{
			Uid: "u2", Node: "n2", Ips: []string{"10.244.2.7"}, Identity: "spiffe://cluster.local/ns/shop/sa/db", Namespace: "shop", Name: "db-0"}}},
		"service/shop/db": {Key: "service/shop/db", Kind: &meshv1.Resource_Service{Service: &meshv1.Service{
			Namespace: "shop", Name: "db", Vips: []string{"10.96.0.9"},
			Ports:     []*meshv1.ServicePort{{Port: 5432, TargetPortName: "pg"}},
			Endpoints: []*meshv1.Endpoint{{Ip: "10.244.2.7", Ready: true, Ports: map[string]uint32{"pg": 6432}}}}}},
		// A waypoint's own Service: its pods are not enrolled.
		"service/shop/wp": {Key: "service/shop/wp", Kind: &meshv1.Resource_Service{Service: &meshv1.Service{
			Namespace: "shop", Name: "wp", Vips: []string{"10.96.0.10"}, Ports: []*meshv1.ServicePort{{Port: 15008}},
			Endpoints: []*meshv1.Endpoint{{Ip: "10.244.3.2", Ready: true}}}}},
		"service/shop/web": {Key: "service/shop/web", Kind: &meshv1.Resource_Service{Service: &meshv1.Service{
			Namespace: "shop", Name: "web", Vips: []string{"10.96.0.11"}, Ports: []*meshv1.ServicePort{{Port: 80, TargetPort: 8080}},
			Endpoints: []*meshv1.Endpoint{{Ip: "10.244.1.5", Ready: true, Enrolled: true}}, Waypoint: "shop/wp"}}},
		"policy/shop/deny": {Key: "policy/shop/deny", Kind: &meshv1.Resource_Policy{Policy: &meshv1.Policy{
			Namespace: "shop", Name: "deny", HasSelector: true, Action: meshv1.Action_ACTION_DENY,
			Rules: []*meshv1.Rule{{From: []*meshv1.Source{{Namespaces: []string{"evil"}}}, To: []*meshv1.Destination{{Ports: []uint32{5432}}}}}}}},
	}
	m, err := MeshFromResources(res, "cluster.local", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Workloads) != 2 || len(m.Services) != 3 || len(m.Policies) != 1 {
		t.Fatalf("mesh %+v", m)
	}
	if m.Modes["u1"] != ModeStrict {
		t.Errorf("mode of u1 %q", m.Modes["u1"])
	}
	// The view must make a valid configuration, and route the named port.
	c := &Config{Node: "n1", PinDir: "/x", CABundle: "/ca.pem", Workloads: m.Workloads, Services: m.Services, Policies: m.Policies}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	st := NewState(c)
	web := st.Workload(m.Workloads[1].IPs[0])
	if web == nil || web.Name != "web-1" || web.Identity().String() != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("local workload %+v", web)
	}
	plan := Route(st, web, ap("10.96.0.9:5432"), 0)
	if plan.Kind != PlanHBONE || plan.Dst.String() != "10.244.2.7:6432" || plan.Workload.Name != "db-0" {
		t.Errorf("plan %+v", plan)
	}
	// Service.waypoint: the web Service's VIP goes to the waypoint's pod,
	// which must prove the waypoint's ServiceAccount; web-1 takes its
	// tunnels only.
	plan = Route(st, nil, ap("10.96.0.11:80"), 0)
	if plan.Kind != PlanWaypoint || plan.Tunnel.String() != "10.244.3.2:15008" || plan.Waypoint.String() != "spiffe://cluster.local/ns/shop/sa/wp" {
		t.Errorf("waypoint plan %+v", plan)
	}
	if why := WaypointGate(st, &LocalPod{Workload: *web}, Inbound{Peer: web.Identity(), Port: 8080}); why == "" {
		t.Error("web-1 takes a tunnel that did not come through its waypoint")
	}
	if m.Policies[0].Selector == nil {
		t.Error("has_selector with no labels lost: selects the namespace instead of every workload")
	}
}

func TestMeshFromResourcesRefusesBadInput(t *testing.T) {
	res := map[string]*meshv1.Resource{
		"peer/x":     {Key: "peer/x", Kind: &meshv1.Resource_Peer{Peer: &meshv1.Peer{Uid: "x", Ips: []string{"10.0.0.1"}, Identity: "spiffe://other.org/ns/a/sa/b"}}},
		"peer/y":     {Key: "peer/y", Kind: &meshv1.Resource_Peer{Peer: &meshv1.Peer{Uid: "y", Ips: []string{"not-an-ip"}, Identity: "spiffe://cluster.local/ns/a/sa/b"}}},
		"policy/a/p": {Key: "policy/a/p", Kind: &meshv1.Resource_Policy{Policy: &meshv1.Policy{Namespace: "a", Name: "p"}}},
	}
	_, err := MeshFromResources(res, "cluster.local", "n1")
	for _, want := range []string{"peer/x: identity", "peer/y: ip \"not-an-ip\"", "policy/a/p: action"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to name %q", err, want)
		}
	}
}
