package ztunnel

import (
	"os"
	"strings"
	"testing"
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
