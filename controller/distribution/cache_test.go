package distribution

import (
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/enrollment"
	"github.com/warrenmesh/warren/internal/policy"
)

func ptr[T any](v T) *T { return &v }

// TestDeltasAddUpToSnapshots changes every kind of model value, one step
// at a time, and checks that a subscriber that applied every delta (made
// from cached conversions) holds exactly the snapshot a fresh server sends
// for the same model, and that unchanged values were not converted again.
func TestDeltasAddUpToSnapshots(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	newServer := func() *Server {
		s, err := New(Options{Log: quiet, Authn: authn, Callers: []string{"warren-system/ztunnel"}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	web := pod("web", "n1", "10.244.1.5", map[string]string{"app": "web"})
	in := model.Inputs{
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enrollment.Label: enrollment.Enabled}}}},
		Pods:       []*corev1.Pod{web, pod("db", "n2", "10.244.2.5", map[string]string{"app": "db"}), pod("api", "n1", "10.244.1.6", nil)},
		Services: []*corev1.Service{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.20"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-admin"}, Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.21"}, Ports: []corev1.ServicePort{{Port: 81}}}},
		},
		EndpointSlices: []*discoveryv1.EndpointSlice{{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-x", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}, NodeName: ptr("n1")}},
		}},
		AuthorizationPolicies: []*v1alpha1.AuthorizationPolicy{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-only"}, Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionAllow,
				Selector: &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}},
				Rules:    []v1alpha1.Rule{{From: []v1alpha1.Source{{Principals: []string{"spiffe://cluster.local/ns/shop/sa/web"}}}}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: v1alpha1.AuthorizationPolicySpec{Action: v1alpha1.ActionAllow,
				Selector: &v1alpha1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}}}},
		},
	}
	steps := []struct {
		name   string
		change func()
		// changed are the keys whose resources must be converted again.
		changed string
	}{
		{"a peer moves", func() { in.Pods[1] = pod("db", "n2", "10.244.2.9", map[string]string{"app": "db"}) }, "peer/db workload/db"},
		{"local labels", func() { in.Pods[0] = pod("web", "n1", "10.244.1.5", map[string]string{"app": "web", "v": "2"}) }, "workload/web"},
		{"a rule", func() {
			ap := in.AuthorizationPolicies[0].DeepCopy()
			ap.Spec.Rules[0].To = []v1alpha1.Destination{{Ports: []int32{5432}}}
			in.AuthorizationPolicies[0] = ap
		}, "policy/shop/db-only"},
		{"mTLS mode", func() {
			in.PeerAuthentications = []*v1alpha1.PeerAuthentication{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "strict"},
				Spec: v1alpha1.PeerAuthenticationSpec{MTLS: v1alpha1.MutualTLS{Mode: v1alpha1.ModeStrict}}}}
		}, "workload/api workload/db workload/web"},
		{"an endpoint", func() {
			es := in.EndpointSlices[0].DeepCopy()
			es.Endpoints[0].Conditions.Ready = ptr(false)
			in.EndpointSlices[0] = es
		}, "service/shop/web"},
		{"a pod goes", func() { in.Pods = in.Pods[:2] }, ""},
		{"a service port", func() {
			svc := in.Services[1].DeepCopy()
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Port: 82})
			in.Services[1] = svc
		}, "service/shop/web-admin"},
		{"a pod comes", func() { in.Pods = append(in.Pods, pod("cache", "n2", "10.244.2.7", map[string]string{"app": "db"})) }, "peer/cache workload/cache"},
		{"a selector goes", func() {
			ap := in.AuthorizationPolicies[1].DeepCopy()
			ap.Spec.Selector = nil
			in.AuthorizationPolicies[1] = ap
		}, "policy/shop/web"},
		{"nothing", func() {}, ""},
	}

	srv := newServer()
	type client struct {
		node  string
		acked *clientState
		cache localCache
		holds map[string]*meshv1.Resource
	}
	clients := []*client{{node: "n1", holds: map[string]*meshv1.Resource{}}, {node: "n2", holds: map[string]*meshv1.Resource{}}}
	converted := func() map[string]*meshv1.Resource {
		all := map[string]*meshv1.Resource{}
		for _, e := range srv.sharedCur.entries {
			all[e.res.Key] = e.res
		}
		for _, c := range clients {
			for _, e := range c.acked.local {
				all[e.res.Key] = e.res
			}
		}
		return all
	}
	for i := -1; i < len(steps); i++ {
		name := "start"
		var before map[string]*meshv1.Resource
		if i >= 0 {
			name = steps[i].name
			before = converted()
			steps[i].change()
		}
		m := model.Build(in)
		srv.Publish(m)
		fresh := newServer()
		fresh.Publish(m)
		for _, c := range clients {
			p, err := srv.next(view{node: c.node}, c.acked, &c.cache)
			if err != nil {
				t.Fatal(err)
			}
			if p != nil {
				u := p.update
				if !slices.IsSortedFunc(u.Upserts, func(a, b *meshv1.Resource) int { return strings.Compare(a.Key, b.Key) }) || !slices.IsSorted(u.Removals) {
					t.Errorf("%s: %s: update not sorted: %s", name, c.node, keys(u))
				}
				for _, r := range u.Upserts {
					c.holds[r.Key] = r
				}
				for _, k := range u.Removals {
					delete(c.holds, k)
				}
				c.acked = p.state
			} else if c.acked == nil {
				t.Fatalf("%s: %s: no snapshot", name, c.node)
			}
			want, err := fresh.next(view{node: c.node}, nil, &localCache{})
			if err != nil {
				t.Fatal(err)
			}
			if len(want.update.Upserts) != len(c.holds) {
				t.Errorf("%s: %s holds %d resources, a snapshot has %d", name, c.node, len(c.holds), len(want.update.Upserts))
			}
			for _, r := range want.update.Upserts {
				if !proto.Equal(r, c.holds[r.Key]) {
					t.Errorf("%s: %s holds %v, a snapshot has %v", name, c.node, c.holds[r.Key], r)
				}
			}
		}
		if before != nil {
			var changed []string
			for k, r := range converted() {
				if before[k] != r {
					changed = append(changed, k)
				}
			}
			slices.Sort(changed)
			if got := strings.Join(changed, " "); got != steps[i].changed {
				t.Errorf("%s: converted again %q, want %q", name, got, steps[i].changed)
			}
		}
	}
}

// TestEqualitiesCoverEveryField fails when a model type gains a field: the
// equality that decides whether a value is converted again must compare it
// (convert.go), or subscribers keep a stale resource.
func TestEqualitiesCoverEveryField(t *testing.T) {
	for typ, want := range map[reflect.Type]string{
		reflect.TypeFor[model.Peer]():         "UID Namespace Name Node IPs Identity",
		reflect.TypeFor[model.Service]():      "Namespace Name VIPs Ports Endpoints Waypoint",
		reflect.TypeFor[model.Endpoint]():     "Addr Node WorkloadUID Ready Ports Enrolled Identity",
		reflect.TypeFor[model.LocalRef]():     "Workload Mode",
		reflect.TypeFor[model.Workload]():     "UID Namespace Name Node ServiceAccount Identity IPs Labels Running Enrolled",
		reflect.TypeFor[policy.Policy]():      "Namespace Name Selector Action Rules",
		reflect.TypeFor[policy.Rule]():        "From To",
		reflect.TypeFor[policy.Source]():      "Principals Namespaces",
		reflect.TypeFor[policy.Destination](): "Ports",
	} {
		var got []string
		for f := range typ.Fields() {
			got = append(got, f.Name)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%v has fields %v, the equalities in convert.go know %s: update them and this test", typ, got, want)
		}
	}
	// The service's Ports are compared with ==.
	if !reflect.TypeFor[model.ServicePort]().Comparable() {
		t.Error("model.ServicePort is no longer comparable")
	}
}

// TestOlderVersionDoesNotReplaceCurrent: a subscriber that read the model
// before a Publish converts its version after another converted the newer
// one; it gets the older set, and the newer stays current.
func TestOlderVersionDoesNotReplaceCurrent(t *testing.T) {
	s, err := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Authn: authn, Callers: []string{"warren-system/ztunnel"}})
	if err != nil {
		t.Fatal(err)
	}
	m1 := build(pod("web", "n1", "10.244.1.5", nil))
	m2 := build(pod("web", "n1", "10.244.1.6", nil))
	s2, err := s.shared(m2, 2)
	if err != nil {
		t.Fatal(err)
	}
	s1, err := s.shared(m1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if s.sharedCur != s2 || s1.version != 1 {
		t.Fatalf("current set is version %d, want 2", s.sharedCur.version)
	}
	ups, _ := diffEntries(s1.entries, s2.entries)
	if len(ups) != 1 || ups[0].res.GetPeer().GetIps()[0] != "10.244.1.6" {
		t.Errorf("version 1 to 2: %v", ups)
	}
}

// TestRoutesShared: the model's routes go to every subscriber, keyed by
// kind, among the peers and services in key order, and a route that goes
// is removed.
func TestRoutesShared(t *testing.T) {
	s, err := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Authn: authn, Callers: []string{"warren-system/ztunnel"}})
	if err != nil {
		t.Fatal(err)
	}
	route := func(kind, name string) model.Route {
		return model.Route{RouteRef: model.RouteRef{Kind: kind, Namespace: "shop", Name: name}, Proto: &meshv1.Route{Namespace: "shop", Name: name}}
	}
	m1 := build(pod("web", "n1", "10.244.1.5", nil))
	m1.Routes = []model.Route{route(model.KindGRPCRoute, "api"), route(model.KindHTTPRoute, "split")}
	s1, err := s.shared(m1, 1)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range s1.entries {
		keys = append(keys, e.res.Key)
	}
	if !slices.IsSorted(keys) || !slices.Contains(keys, "grpcroute/shop/api") || !slices.Contains(keys, "route/shop/split") {
		t.Fatalf("keys %v", keys)
	}
	m2 := build(pod("web", "n1", "10.244.1.5", nil))
	m2.Routes = []model.Route{route(model.KindHTTPRoute, "split")}
	s2, err := s.shared(m2, 2)
	if err != nil {
		t.Fatal(err)
	}
	ups, rms := diffEntries(s1.entries, s2.entries)
	if len(ups) != 0 || len(rms) != 1 || rms[0].res.Key != "grpcroute/shop/api" {
		t.Errorf("upserts %v, removals %v", ups, rms)
	}
}
