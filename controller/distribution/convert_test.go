package distribution

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/api/v1alpha1"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy"
	"github.com/warrenmesh/warren/internal/policy/policypb"
)

// TestPolicyRoundTrip follows AuthorizationPolicies the whole way: CRD, the
// model's internal/policy values, the resource the server sends, its bytes
// on the wire, and what the ztunnel reads back (policypb.FromProto, as
// ztunnel.MeshFromResources calls it). The ztunnel must hold the model's
// values exactly, and decide every connection as the model does.
func TestPolicyRoundTrip(t *testing.T) {
	crd := func(name string, action v1alpha1.AuthorizationAction, sel map[string]string, rules ...v1alpha1.Rule) *v1alpha1.AuthorizationPolicy {
		p := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec: v1alpha1.AuthorizationPolicySpec{Action: action, Rules: rules}}
		if sel != nil {
			p.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: sel}
		}
		return p
	}
	m := model.Build(model.Inputs{AuthorizationPolicies: []*v1alpha1.AuthorizationPolicy{
		crd("allow-front", v1alpha1.ActionAllow, map[string]string{"app": "web"}, v1alpha1.Rule{
			From: []v1alpha1.Source{{Principals: []string{"spiffe://cluster.local/ns/front/sa/ui"}}, {Namespaces: []string{"ops"}}},
			To:   []v1alpha1.Destination{{Ports: []int32{8080, 8443}}},
		}),
		crd("deny-ssh", v1alpha1.ActionDeny, nil, v1alpha1.Rule{To: []v1alpha1.Destination{{Ports: []int32{22}}}}),
		crd("allow-nothing", v1alpha1.ActionAllow, map[string]string{"app": "db"}),
		// invalid: enforced fail-closed (deny-all) on the ztunnel too
		crd("bad-deny", v1alpha1.ActionDeny, map[string]string{"app": "db"}, v1alpha1.Rule{
			From: []v1alpha1.Source{{Principals: []string{"spiffe://cluster.local/ns/x"}}}}),
	}})
	if len(m.Policies) != 4 {
		t.Fatalf("model policies %+v", m.Policies)
	}
	var read []policy.Policy
	for i := range m.Policies {
		r := policyResource(&m.Policies[i])
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var wire meshv1.Resource
		if err := proto.Unmarshal(b, &wire); err != nil {
			t.Fatal(err)
		}
		p, err := policypb.FromProto(wire.GetPolicy())
		if err != nil {
			t.Fatalf("%s: the ztunnel refuses what the controller sends: %v", r.Key, err)
		}
		if !reflect.DeepEqual(p, m.Policies[i]) {
			t.Errorf("%s:\n model %+v\nztunnel %+v", r.Key, m.Policies[i], p)
		}
		read = append(read, p)
	}

	web := &model.Workload{Namespace: "shop", Labels: map[string]string{"app": "web"}}
	db := &model.Workload{Namespace: "shop", Labels: map[string]string{"app": "db"}}
	ui, ops, other := identity.New("front", "ui"), identity.New("ops", "bot"), identity.New("x", "y")
	for _, dst := range []*model.Workload{web, db} {
		for _, peer := range []identity.ID{ui, ops, other, {}} {
			for _, port := range []uint16{22, 80, 8080, 8443} {
				c := policy.Conn{Peer: peer, Port: port}
				want := model.Authorize(m.Policies, m.SystemNamespace, dst, c)
				got := policy.Authorize(read, m.SystemNamespace, policy.Target{Namespace: dst.Namespace, Labels: dst.Labels}, c)
				if got != want {
					t.Errorf("%v to %v:%d: ztunnel %+v, model %+v", peer, dst.Labels, port, got, want)
				}
			}
		}
	}
	// and the decisions are the ones the CRDs ask for
	for _, tc := range []struct {
		dst     *model.Workload
		c       policy.Conn
		allowed bool
	}{
		{web, policy.Conn{Peer: ui, Port: 8080}, true},
		{web, policy.Conn{Peer: ops, Port: 8443}, true},
		{web, policy.Conn{Peer: other, Port: 8080}, false},
		{web, policy.Conn{Peer: ui, Port: 22}, false},
		{db, policy.Conn{Peer: ui, Port: 8080}, false},
	} {
		if d := policy.Authorize(read, m.SystemNamespace, policy.Target{Namespace: tc.dst.Namespace, Labels: tc.dst.Labels}, tc.c); d.Allowed != tc.allowed {
			t.Errorf("%v to %v:%d: %+v, want allowed=%v", tc.c.Peer, tc.dst.Labels, tc.c.Port, d, tc.allowed)
		}
	}
}
