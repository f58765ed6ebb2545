package policypb

import (
	"reflect"
	"strings"
	"testing"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/policy"
)

func TestRoundTrip(t *testing.T) {
	for _, p := range []policy.Policy{
		{Namespace: "a", Name: "no-selector", Action: policy.ActionAllow},
		{Namespace: "a", Name: "empty-selector", Selector: map[string]string{}, Action: policy.ActionDeny, Rules: []policy.Rule{{}}},
		{Namespace: "a", Name: "full", Selector: map[string]string{"app": "web"}, Action: policy.ActionAllow, Rules: []policy.Rule{
			{From: []policy.Source{{Principals: []identity.ID{identity.New("b", "c")}, Namespaces: []string{"b"}}}, To: []policy.Destination{{Ports: []uint16{80, 65535}}}},
			{To: []policy.Destination{{Ports: []uint16{1}}}},
		}},
	} {
		got, err := FromProto(ToProto(&p))
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", p.Name, got, p)
		}
	}
}

func TestFromProtoRefuses(t *testing.T) {
	in := &meshv1.Policy{Namespace: "a", Name: "p", Action: meshv1.Action_ACTION_UNSPECIFIED, Rules: []*meshv1.Rule{{
		From: []*meshv1.Source{{Principals: []string{"spiffe://cluster.local/ns/b"}}},
		To:   []*meshv1.Destination{{Ports: []uint32{0, 80, 70000}}},
	}}}
	p, err := FromProto(in)
	for _, want := range []string{"action ACTION_UNSPECIFIED", `rules[0].from[0]: principal "spiffe://cluster.local/ns/b"`, "rules[0].to[0]: port 0", "port 70000"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q in it", err, want)
		}
	}
	if !reflect.DeepEqual(p, policy.Policy{}) {
		t.Errorf("a refused policy came back as %+v: half of it could allow what the whole denies", p)
	}
}
