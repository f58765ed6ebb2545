package ztunnel

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/identity"
)

func TestLoadStatic(t *testing.T) {
	c, err := LoadStatic("testdata/static.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	st := NewState(c)
	p := Route(st, &c.Pods[0].Workload, ap("10.96.0.20:80"), 0)
	if p.Kind != PlanHBONE || p.Dst != ap("10.244.2.7:8080") || p.Workload.Identity().String() != "spiffe://cluster.local/ns/demo/sa/echo" {
		t.Errorf("plan %+v", p)
	}
	if p := Route(st, &c.Pods[0].Workload, ap("10.244.2.9:80"), 0); p.Kind != PlanPassthrough {
		t.Errorf("non-enrolled workload: plan %v", p.Kind)
	}
	for _, dst := range []string{"10.96.0.21:80", "10.244.2.8:8080"} {
		p := Route(st, &c.Pods[0].Workload, ap(dst), 0)
		if p.Kind != PlanWaypoint || p.Dst != ap(dst) || p.Tunnel != ap("10.244.2.30:15008") || p.Waypoint.String() != "spiffe://cluster.local/ns/demo/sa/wp" {
			t.Errorf("%s: plan %+v, want the waypoint demo/wp", dst, p)
		}
	}
}

func TestLoadStaticRefusesUnknownFields(t *testing.T) {
	path := t.TempDir() + "/bad.yaml"
	if err := writeFile(path, "node: n\npinDir: /x\ncaBundle: ca.pem\nmtlsMode: STRICT\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadStatic(path); err == nil || !strings.Contains(err.Error(), "mtlsMode") {
		t.Errorf("LoadStatic: %v, want the unknown field named", err)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// Policies in the static file are internal/policy's values: principals are
// parsed as they are read, and what cannot be parsed, or is misspelt, is
// refused by name rather than left to match every peer.
func TestLoadStaticPolicies(t *testing.T) {
	c, err := LoadStatic("testdata/static.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Policies) != 1 || len(c.Policies[0].Rules) != 1 || len(c.Policies[0].Rules[0].From) != 1 {
		t.Fatalf("policies %+v", c.Policies)
	}
	if got := c.Policies[0].Rules[0].From[0].Principals; len(got) != 1 || got[0] != identity.New("demo", "client") {
		t.Errorf("principals %v, want the client's SPIFFE ID", got)
	}
	// The JSON the admin config dump writes reads back the same.
	b, err := json.Marshal(c.Policies)
	if err != nil {
		t.Fatal(err)
	}
	var back []Policy
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, c.Policies) {
		t.Errorf("JSON round trip: %v\n%s\n%+v", err, b, back)
	}
	if !strings.Contains(string(b), `"principals":["spiffe://cluster.local/ns/demo/sa/client"]`) {
		t.Errorf("JSON %s: want principals as SPIFFE IDs", b)
	}

	head := "node: n\npinDir: /x\ncaBundle: ca.pem\npolicies:\n  - {name: p, namespace: demo, action: DENY, rules: [{from: [%s]}]}\n"
	for _, tc := range []struct{ source, want string }{
		{"{principals: [spiffe://cluster.local/ns/demo]}", `principal "spiffe://cluster.local/ns/demo"`},
		{"{principal: [spiffe://cluster.local/ns/demo/sa/client]}", `"principal"`},
	} {
		path := t.TempDir() + "/p.yaml"
		if err := writeFile(path, fmt.Sprintf(head, tc.source)); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadStatic(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("source %s: LoadStatic: %v, want %s named", tc.source, err, tc.want)
		}
	}
}
