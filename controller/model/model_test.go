package model

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/internal/enrollment"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy"
)

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func pod(namespace, name, node, sa string, phase corev1.PodPhase, labels map[string]string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID(namespace + "-" + name), Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: phase},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

var enabled = map[string]string{enrollment.Label: enrollment.Enabled}

func meshLabel(v string) map[string]string { return map[string]string{enrollment.Label: v} }

func TestWorkloadFromPod(t *testing.T) {
	hostNet := pod("a", "h", "n1", "sa", corev1.PodRunning, nil, "10.250.0.11")
	hostNet.Spec.HostNetwork = true
	legacyIP := pod("a", "l", "n1", "sa", corev1.PodRunning, nil)
	legacyIP.Status.PodIP = "10.244.1.9"
	for _, tc := range []struct {
		name         string
		pod          *corev1.Pod
		nsLabels     map[string]string
		ok, enrolled bool
		running      bool
		sa           string
		ips          []string
		// labelErr is part of the error for a malformed label, if any.
		labelErr string
	}{
		{"enrolled namespace", pod("a", "p", "n1", "web", corev1.PodRunning, nil, "fd00::1", "10.244.1.5"), enabled, true, true, true, "web", []string{"10.244.1.5", "fd00::1"}, ""},
		{"namespace not labelled", pod("a", "p", "n1", "web", corev1.PodRunning, nil), nil, true, false, true, "web", nil, ""},
		{"namespace disabled", pod("a", "p", "n1", "web", corev1.PodRunning, nil), map[string]string{enrollment.Label: "disabled"}, true, false, true, "web", nil, ""},
		{"pod opts out", pod("a", "p", "n1", "web", corev1.PodRunning, map[string]string{enrollment.Label: enrollment.Disabled}), enabled, true, false, true, "web", nil, ""},
		{"pod label enabled in plain namespace", pod("a", "p", "n1", "web", corev1.PodRunning, enabled), nil, true, false, true, "web", nil, ""},
		{"pending", pod("a", "p", "n1", "web", corev1.PodPending, nil), enabled, true, true, false, "web", nil, ""},
		{"default service account", pod("a", "p", "n1", "", corev1.PodRunning, nil), enabled, true, true, true, "default", nil, ""},
		{"host network", hostNet, enabled, true, false, true, "sa", []string{"10.250.0.11"}, ""},
		{"only status.podIP", legacyIP, enabled, true, true, true, "sa", []string{"10.244.1.9"}, ""},
		{"unscheduled", pod("a", "p", "", "web", corev1.PodPending, nil), enabled, false, false, false, "", nil, ""},
		{"succeeded", pod("a", "p", "n1", "web", corev1.PodSucceeded, nil), enabled, false, false, false, "", nil, ""},
		{"failed", pod("a", "p", "n1", "web", corev1.PodFailed, nil), enabled, false, false, false, "", nil, ""},
		// Malformed labels: the agent does not enroll such a pod, so no
		// ztunnel may send it HBONE (internal/enrollment decides for both).
		{"pod label Disabled", pod("a", "p", "n1", "web", corev1.PodRunning, meshLabel("Disabled")), enabled, true, false, true, "web", nil, `pod a/p not enrolled: label warren.dev/mesh="Disabled"`},
		{"pod label ENABLED", pod("a", "p", "n1", "web", corev1.PodRunning, meshLabel("ENABLED")), enabled, true, false, true, "web", nil, `label warren.dev/mesh="ENABLED"`},
		{"pod label yes", pod("a", "p", "n1", "web", corev1.PodRunning, meshLabel("yes")), enabled, true, false, true, "web", nil, `label warren.dev/mesh="yes"`},
		{"pod label empty", pod("a", "p", "n1", "web", corev1.PodRunning, meshLabel("")), enabled, true, false, true, "web", nil, `label warren.dev/mesh=""`},
		{"namespace label Disabled", pod("a", "p", "n1", "web", corev1.PodRunning, nil), meshLabel("Disabled"), true, false, true, "web", nil, `label warren.dev/mesh="Disabled"`},
		{"namespace label ENABLED", pod("a", "p", "n1", "web", corev1.PodRunning, nil), meshLabel("ENABLED"), true, false, true, "web", nil, `label warren.dev/mesh="ENABLED"`},
		{"namespace label yes", pod("a", "p", "n1", "web", corev1.PodRunning, nil), meshLabel("yes"), true, false, true, "web", nil, `label warren.dev/mesh="yes"`},
		{"namespace label empty", pod("a", "p", "n1", "web", corev1.PodRunning, nil), meshLabel(""), true, false, true, "web", nil, `label warren.dev/mesh=""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, ok, err := WorkloadFromPod(tc.pod, tc.nsLabels, "cluster.local")
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if tc.labelErr == "" && err != nil || tc.labelErr != "" && (err == nil || !strings.Contains(err.Error(), tc.labelErr)) {
				t.Errorf("err = %v, want one containing %q", err, tc.labelErr)
			}
			if !ok {
				return
			}
			if w.Enrolled != tc.enrolled || w.Running != tc.running || w.ServiceAccount != tc.sa {
				t.Errorf("enrolled, running, sa = %v, %v, %q; want %v, %v, %q", w.Enrolled, w.Running, w.ServiceAccount, tc.enrolled, tc.running, tc.sa)
			}
			if want := "spiffe://cluster.local/ns/a/sa/" + tc.sa; w.Identity.String() != want {
				t.Errorf("identity = %s, want %s", w.Identity, want)
			}
			if got := addrs(w.IPs); got != strings.Join(tc.ips, ",") {
				t.Errorf("IPs = %s, want %s", got, strings.Join(tc.ips, ","))
			}
		})
	}
}

func addrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}

func ptr[T any](v T) *T { return &v }

func slice(namespace, svc string, addrType discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: svc + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: addrType, Ports: ports, Endpoints: eps,
	}
}

func TestServiceFromCore(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web"},
		Spec: corev1.ServiceSpec{
			ClusterIPs: []string{"10.96.0.20", "fd96::20"},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				{Name: "grpc", Port: 90, TargetPort: intstr.FromString("grpc")},
				{Name: "same", Port: 70},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			},
		},
	}
	ports := []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}, {Name: ptr("grpc"), Port: ptr(int32(9090))}, {Name: ptr("dns"), Port: ptr(int32(53)), Protocol: ptr(corev1.ProtocolUDP)}}
	slices := []*discoveryv1.EndpointSlice{
		slice("a", "web", discoveryv1.AddressTypeIPv4, ports,
			discoveryv1.Endpoint{Addresses: []string{"10.244.1.5"}, NodeName: ptr("n1"), TargetRef: &corev1.ObjectReference{Kind: "Pod", UID: "u1"}},
			discoveryv1.Endpoint{Addresses: []string{"10.244.2.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}, NodeName: ptr("n2")}),
		// the same address again, ready this time, as during a rebalance
		slice("a", "web", discoveryv1.AddressTypeIPv4, ports, discoveryv1.Endpoint{Addresses: []string{"10.244.2.5"}}),
		slice("a", "web", discoveryv1.AddressTypeFQDN, ports, discoveryv1.Endpoint{Addresses: []string{"example.com"}}),
		slice("a", "other", discoveryv1.AddressTypeIPv4, ports, discoveryv1.Endpoint{Addresses: []string{"10.244.3.5"}}),
		slice("b", "web", discoveryv1.AddressTypeIPv4, ports, discoveryv1.Endpoint{Addresses: []string{"10.244.4.5"}}),
	}
	s := ServiceFromCore(svc, slices)
	if got := addrs(s.VIPs); got != "10.96.0.20,fd96::20" {
		t.Errorf("VIPs = %s", got)
	}
	wantPorts := []ServicePort{{Name: "same", Port: 70, TargetPort: 70}, {Name: "http", Port: 80, TargetPort: 8080}, {Name: "grpc", Port: 90, TargetPortName: "grpc"}}
	if len(s.Ports) != len(wantPorts) {
		t.Fatalf("ports = %+v, want %+v", s.Ports, wantPorts)
	}
	for i := range wantPorts {
		if s.Ports[i] != wantPorts[i] {
			t.Errorf("port %d = %+v, want %+v", i, s.Ports[i], wantPorts[i])
		}
	}
	if len(s.Endpoints) != 2 {
		t.Fatalf("endpoints = %+v, want 2", s.Endpoints)
	}
	e0, e1 := s.Endpoints[0], s.Endpoints[1]
	if e0.Addr.String() != "10.244.1.5" || !e0.Ready || e0.Node != "n1" || e0.WorkloadUID != "u1" || e0.Ports["grpc"] != 9090 || e0.Ports["http"] != 8080 || len(e0.Ports) != 2 {
		t.Errorf("endpoint 0 = %+v", e0)
	}
	if e1.Addr.String() != "10.244.2.5" || !e1.Ready || e1.Node != "n2" {
		t.Errorf("endpoint 1 = %+v (ready in one slice of two must be ready)", e1)
	}

	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "h"}, Spec: corev1.ServiceSpec{ClusterIP: "None", ClusterIPs: []string{"None"}}}
	if s := ServiceFromCore(headless, nil); len(s.VIPs) != 0 {
		t.Errorf("headless VIPs = %v", s.VIPs)
	}
}

func ap(namespace, name string, action v1alpha1.AuthorizationAction, sel map[string]string, rules ...v1alpha1.Rule) *v1alpha1.AuthorizationPolicy {
	p := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1alpha1.AuthorizationPolicySpec{Action: action, Rules: rules}}
	if sel != nil {
		p.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: sel}
	}
	return p
}

func TestPolicyFromCRD(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      *v1alpha1.AuthorizationPolicy
		wantErr string
		// when invalid, what the fail-closed policy does to any connection
		matchesAll bool
	}{
		{name: "valid", in: ap("a", "p", v1alpha1.ActionAllow, map[string]string{"app": "web"},
			v1alpha1.Rule{From: []v1alpha1.Source{{Principals: []string{"spiffe://cluster.local/ns/b/sa/c"}}}, To: []v1alpha1.Destination{{Ports: []int32{80}}}})},
		{name: "bad principal", in: ap("a", "p", v1alpha1.ActionDeny, nil,
			v1alpha1.Rule{From: []v1alpha1.Source{{Principals: []string{"spiffe://cluster.local/ns/b/sa/c/extra"}}}}),
			wantErr: "spec.rules[0].from[0].principals", matchesAll: true},
		{name: "L7 fields", in: ap("a", "p", v1alpha1.ActionAllow, nil,
			v1alpha1.Rule{To: []v1alpha1.Destination{{Methods: []string{"GET"}}}}),
			wantErr: "spec.rules[0].to[0]: methods and paths need a waypoint"},
		{name: "bad action", in: ap("a", "p", "AUDIT", nil), wantErr: "spec.action", matchesAll: true},
		{name: "bad port", in: ap("a", "p", v1alpha1.ActionAllow, nil, v1alpha1.Rule{To: []v1alpha1.Destination{{Ports: []int32{0}}}}), wantErr: "spec.rules[0].to[0].ports"},
		{name: "bad selector key", in: ap("a", "p", v1alpha1.ActionAllow, map[string]string{"-x": "y"}), wantErr: "spec.selector.matchLabels: key \"-x\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PolicyFromCRD(tc.in)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			c := policy.Conn{Peer: identity.New("b", "c"), Port: 80}
			if got := p.Matches(c); got != tc.matchesAll {
				t.Errorf("fail-closed policy matches = %v, want %v", got, tc.matchesAll)
			}
		})
	}
}

func TestAuthorize(t *testing.T) {
	web := &Workload{Namespace: "a", Labels: map[string]string{"app": "web"}}
	db := &Workload{Namespace: "a", Labels: map[string]string{"app": "db"}}
	fromB := v1alpha1.Rule{From: []v1alpha1.Source{{Namespaces: []string{"b"}}}}
	fromC := v1alpha1.Rule{From: []v1alpha1.Source{{Principals: []string{"spiffe://cluster.local/ns/b/sa/c"}}}}
	port80 := v1alpha1.Rule{To: []v1alpha1.Destination{{Ports: []int32{80}}}}
	all := v1alpha1.Rule{}
	bc, bd, xc := identity.New("b", "c"), identity.New("b", "d"), identity.New("x", "c")
	for _, tc := range []struct {
		name     string
		policies []*v1alpha1.AuthorizationPolicy
		dst      *Workload
		conn     policy.Conn
		allowed  bool
		by       string
	}{
		{"no policy", nil, web, policy.Conn{Peer: bc, Port: 80}, true, ""},
		{"allow by namespace", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionAllow, nil, fromB)}, web, policy.Conn{Peer: bd, Port: 80}, true, "a/p"},
		{"allow refuses other namespace", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionAllow, nil, fromB)}, web, policy.Conn{Peer: xc, Port: 80}, false, ""},
		{"allow refuses plaintext", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionAllow, nil, fromB)}, web, policy.Conn{Port: 80}, false, ""},
		{"allow by port lets plaintext in", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionAllow, nil, port80)}, web, policy.Conn{Port: 80}, true, "a/p"},
		{"allow without rules allows nothing", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionAllow, nil)}, web, policy.Conn{Peer: bc, Port: 80}, false, ""},
		{"deny without rules denies nothing", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionDeny, nil)}, web, policy.Conn{Peer: bc, Port: 80}, true, ""},
		{"deny wins over allow", []*v1alpha1.AuthorizationPolicy{ap("a", "allow", v1alpha1.ActionAllow, nil, fromB), ap("a", "deny", v1alpha1.ActionDeny, nil, fromC)}, web, policy.Conn{Peer: bc, Port: 80}, false, "a/deny"},
		{"deny does not touch others", []*v1alpha1.AuthorizationPolicy{ap("a", "allow", v1alpha1.ActionAllow, nil, fromB), ap("a", "deny", v1alpha1.ActionDeny, nil, fromC)}, web, policy.Conn{Peer: bd, Port: 80}, true, "a/allow"},
		{"selector misses", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionDeny, map[string]string{"app": "web"}, all)}, db, policy.Conn{Peer: bc, Port: 80}, true, ""},
		{"selector hits", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionDeny, map[string]string{"app": "web"}, all)}, web, policy.Conn{Peer: bc, Port: 80}, false, "a/p"},
		{"other namespace does not apply", []*v1alpha1.AuthorizationPolicy{ap("z", "p", v1alpha1.ActionDeny, nil, all)}, web, policy.Conn{Peer: bc, Port: 80}, true, ""},
		{"mesh-wide deny", []*v1alpha1.AuthorizationPolicy{ap(DefaultSystemNamespace, "p", v1alpha1.ActionDeny, nil, port80)}, web, policy.Conn{Peer: bc, Port: 80}, false, "warren-system/p"},
		{"rule needs from and to", []*v1alpha1.AuthorizationPolicy{ap("a", "p", v1alpha1.ActionAllow, nil, v1alpha1.Rule{From: fromB.From, To: port80.To})}, web, policy.Conn{Peer: bc, Port: 81}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Build(Inputs{AuthorizationPolicies: tc.policies})
			d := Authorize(m.Policies, m.SystemNamespace, tc.dst, tc.conn)
			if d.Allowed != tc.allowed || d.Policy != tc.by {
				t.Errorf("got %+v, want allowed=%v by %q", d, tc.allowed, tc.by)
			}
		})
	}
}

func pa(namespace, name string, mode v1alpha1.MTLSMode, sel map[string]string, age int) *v1alpha1.PeerAuthentication {
	p := &v1alpha1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
		CreationTimestamp: metav1.NewTime(time.Unix(1e9-int64(age), 0))},
		Spec: v1alpha1.PeerAuthenticationSpec{MTLS: v1alpha1.MutualTLS{Mode: mode}}}
	if sel != nil {
		p.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: sel}
	}
	return p
}

func TestMTLSModeAndConflicts(t *testing.T) {
	web := map[string]string{"app": "web"}
	pods := []*corev1.Pod{pod("a", "web", "n1", "sa", corev1.PodRunning, web), pod("a", "db", "n1", "sa", corev1.PodRunning, nil), pod("b", "x", "n1", "sa", corev1.PodRunning, web)}
	const strict, perm = v1alpha1.ModeStrict, v1alpha1.ModePermissive
	for _, tc := range []struct {
		name       string
		pas        []*v1alpha1.PeerAuthentication
		want       map[string]string // pod uid -> mode@source
		conflicted []string
	}{
		{"default permissive", nil, map[string]string{"a-web": "PERMISSIVE@", "a-db": "PERMISSIVE@", "b-x": "PERMISSIVE@"}, nil},
		{"mesh-wide strict", []*v1alpha1.PeerAuthentication{pa(DefaultSystemNamespace, "mesh", strict, nil, 1)},
			map[string]string{"a-web": "STRICT@warren-system/mesh", "b-x": "STRICT@warren-system/mesh"}, nil},
		{"namespace beats mesh", []*v1alpha1.PeerAuthentication{pa(DefaultSystemNamespace, "mesh", strict, nil, 1), pa("a", "ns", perm, nil, 1)},
			map[string]string{"a-web": "PERMISSIVE@a/ns", "b-x": "STRICT@warren-system/mesh"}, nil},
		{"selector beats namespace", []*v1alpha1.PeerAuthentication{pa("a", "ns", perm, nil, 1), pa("a", "web", strict, web, 1)},
			map[string]string{"a-web": "STRICT@a/web", "a-db": "PERMISSIVE@a/ns", "b-x": "PERMISSIVE@"}, nil},
		{"two namespace-wide: older wins", []*v1alpha1.PeerAuthentication{pa("a", "new", perm, nil, 1), pa("a", "old", strict, nil, 5)},
			map[string]string{"a-db": "STRICT@a/old"}, []string{"a/new"}},
		{"overlapping selectors: older wins", []*v1alpha1.PeerAuthentication{pa("a", "s1", perm, web, 9), pa("a", "s2", strict, web, 1), pa("a", "s3", strict, map[string]string{"app": "db"}, 1)},
			map[string]string{"a-web": "PERMISSIVE@a/s1"}, []string{"a/s2"}},
		{"invalid is strict", []*v1alpha1.PeerAuthentication{pa("a", "bad", "OFF", nil, 1)}, map[string]string{"a-db": "STRICT@a/bad"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Build(Inputs{Pods: pods, PeerAuthentications: tc.pas})
			for uid, want := range tc.want {
				mode, src := m.MTLSMode(m.Workloads[types.UID(uid)])
				if got := string(mode) + "@" + src; got != want {
					t.Errorf("%s: %s, want %s", uid, got, want)
				}
			}
			for k, v := range m.PeerAuthVerdicts {
				conflicted := v.Reason == v1alpha1.ReasonConflicted
				want := false
				for _, c := range tc.conflicted {
					want = want || c == k.String()
				}
				if conflicted != want {
					t.Errorf("%s: verdict %+v, conflicted want %v", k, v, want)
				}
			}
		})
	}
}

func TestVerdicts(t *testing.T) {
	m := Build(Inputs{
		Pods: []*corev1.Pod{pod("a", "web", "n1", "sa", corev1.PodRunning, map[string]string{"app": "web"}), pod("a", "db", "n1", "sa", corev1.PodRunning, map[string]string{"app": "db"})},
		AuthorizationPolicies: []*v1alpha1.AuthorizationPolicy{
			ap("a", "allow-web", v1alpha1.ActionAllow, map[string]string{"app": "web"}, v1alpha1.Rule{}),
			ap("a", "allow-db", v1alpha1.ActionAllow, map[string]string{"app": "db"}, v1alpha1.Rule{}),
			ap("a", "deny-web", v1alpha1.ActionDeny, map[string]string{"app": "web"}, v1alpha1.Rule{To: []v1alpha1.Destination{{Ports: []int32{22}}}}),
			ap("a", "l7", v1alpha1.ActionAllow, nil, v1alpha1.Rule{To: []v1alpha1.Destination{{Paths: []string{"/"}}}}),
		},
	})
	for name, want := range map[string]string{
		"allow-web": "true OverlapsDeny a/deny-web",
		"allow-db":  "true Accepted in force",
		"deny-web":  "true Accepted in force",
		"l7":        "false Invalid spec.rules[0].to[0]: methods and paths need a waypoint",
	} {
		v := m.AuthzVerdicts[Key{Namespace: "a", Name: name}]
		got := strings.Join([]string{map[bool]string{true: "true", false: "false"}[v.Accepted], v.Reason, v.Message}, " ")
		if !strings.HasPrefix(got, strings.SplitN(want, " ", 3)[0]+" "+strings.SplitN(want, " ", 3)[1]) || !strings.Contains(got, strings.SplitN(want, " ", 3)[2]) {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

func TestForNode(t *testing.T) {
	m := Build(Inputs{
		Namespaces: []*corev1.Namespace{ns("a", enabled), ns("plain", nil)},
		Pods: []*corev1.Pod{
			pod("a", "web1", "n1", "web", corev1.PodRunning, map[string]string{"app": "web"}, "10.244.1.5"),
			pod("a", "web2", "n2", "web", corev1.PodRunning, map[string]string{"app": "web"}, "10.244.2.5"),
			pod("a", "db", "n2", "db", corev1.PodRunning, map[string]string{"app": "db"}, "10.244.2.6"),
			pod("a", "out", "n1", "web", corev1.PodRunning, map[string]string{enrollment.Label: enrollment.Disabled}, "10.244.1.7"),
			// meant to opt out; its agent does not enroll it, so it must be
			// no peer (no HBONE to it) and no local workload
			pod("a", "typo", "n2", "web", corev1.PodRunning, meshLabel("Disabled"), "10.244.2.8"),
			pod("plain", "p", "n1", "default", corev1.PodRunning, nil, "10.244.1.8"),
		},
		Services: []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web"}, Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.20"}, Ports: []corev1.ServicePort{{Port: 80}}}}},
		EndpointSlices: []*discoveryv1.EndpointSlice{slice("a", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Port: ptr(int32(80))}},
			discoveryv1.Endpoint{Addresses: []string{"10.244.2.5"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", UID: "a-web2"}})},
		AuthorizationPolicies: []*v1alpha1.AuthorizationPolicy{
			ap("a", "web", v1alpha1.ActionAllow, map[string]string{"app": "web"}),
			ap("a", "db", v1alpha1.ActionAllow, map[string]string{"app": "db"}),
		},
		PeerAuthentications: []*v1alpha1.PeerAuthentication{pa("a", "strict", v1alpha1.ModeStrict, nil, 1)},
	})
	v := m.ForNode("n1")
	if len(v.Workloads) != 1 || v.Workloads[0].Name != "web1" || v.Workloads[0].Mode != v1alpha1.ModeStrict {
		t.Errorf("local workloads = %+v, want web1 only, STRICT", v.Workloads)
	}
	if len(v.Peers) != 2 || v.Peers[0].UID != "a-db" || v.Peers[1].UID != "a-web2" {
		t.Errorf("peers = %+v, want a-db and a-web2", v.Peers)
	}
	if len(v.Policies) != 1 || v.Policies[0].Name != "web" {
		t.Errorf("policies = %+v, want only a/web", v.Policies)
	}
	if len(v.Services) != 1 || len(v.Services[0].Endpoints) != 1 || !v.Services[0].Endpoints[0].Enrolled ||
		v.Services[0].Endpoints[0].Identity != identity.New("a", "web") {
		t.Errorf("services = %+v, want a/web with one enrolled endpoint of identity a/web", v.Services)
	}
	if v2 := m.ForNode("n2"); slices.ContainsFunc(v2.Workloads, func(w NodeWorkload) bool { return w.Name == "typo" }) {
		t.Errorf("n2 workloads = %+v: a/typo (warren.dev/mesh=Disabled) must not be enrolled", v2.Workloads)
	}
	if msg := m.LabelErrors["a-typo"]; !strings.Contains(msg, `pod a/typo not enrolled: label warren.dev/mesh="Disabled"`) || len(m.LabelErrors) != 1 {
		t.Errorf("label errors = %v, want one for a/typo", m.LabelErrors)
	}
	if !m.Scheduled("n2", identity.New("a", "db")) || m.Scheduled("n1", identity.New("a", "db")) {
		t.Error("Scheduled: a/db runs on n2 and not on n1")
	}
	if v2 := m.ForNode("n2"); len(v2.Policies) != 2 {
		t.Errorf("n2 policies = %+v, want both", v2.Policies)
	}
}

// The model holds internal/policy's actions, whatever the CRD spells.
func TestPolicyFromCRDActions(t *testing.T) {
	for in, want := range map[v1alpha1.AuthorizationAction]policy.Action{
		v1alpha1.ActionAllow: policy.ActionAllow,
		v1alpha1.ActionDeny:  policy.ActionDeny,
		"AUDIT":              policy.ActionDeny, // invalid: fails closed
	} {
		if p, _ := PolicyFromCRD(ap("a", "p", in, nil)); p.Action != want {
			t.Errorf("%s: action %q, want %q", in, p.Action, want)
		}
	}
}
