package flowv1

import "testing"

func TestFilterMatch(t *testing.T) {
	ev := &FlowEvent{
		Verdict:     Verdict_CLOSED,
		Source:      &Endpoint{Ip: "10.244.1.5", Namespace: "shop", Pod: "web-1"},
		Destination: &Endpoint{Ip: "10.244.2.7", Port: 8080, Namespace: "db", Pod: "pg-0"},
	}
	for _, c := range []struct {
		name string
		f    *Filter
		want bool
	}{
		{"nil", nil, true},
		{"empty", &Filter{}, true},
		{"namespace source", &Filter{Namespace: "shop"}, true},
		{"namespace destination", &Filter{Namespace: "db"}, true},
		{"namespace neither", &Filter{Namespace: "kube-system"}, false},
		{"pod name", &Filter{Pod: "pg-0"}, true},
		{"pod ns/name", &Filter{Pod: "shop/web-1"}, true},
		{"pod wrong namespace", &Filter{Pod: "db/web-1"}, false},
		{"from namespace/", &Filter{From: "shop/"}, true},
		{"from is the destination", &Filter{From: "db/pg-0"}, false},
		{"to pod", &Filter{To: "db/pg-0"}, true},
		{"to ip", &Filter{To: "10.244.2.7"}, true},
		{"to other ip", &Filter{To: "10.244.2.8"}, false},
		{"from ip v4-mapped", &Filter{From: "::ffff:10.244.1.5"}, true},
		{"verdict", &Filter{Verdicts: []Verdict{Verdict_RESET, Verdict_CLOSED}}, true},
		{"other verdict", &Filter{Verdicts: []Verdict{Verdict_ESTABLISHED}}, false},
		{"all set", &Filter{Namespace: "db", Pod: "web-1", From: "shop/web-1", To: "db/", Verdicts: []Verdict{Verdict_CLOSED}}, true},
	} {
		if got := c.f.Match(ev); got != c.want {
			t.Errorf("%s: Match = %v, want %v", c.name, got, c.want)
		}
	}
	// A destination that is a Service's cluster IP.
	svc := &FlowEvent{
		Source:      &Endpoint{Ip: "10.244.1.5", Namespace: "shop", Pod: "web-1"},
		Destination: &Endpoint{Ip: "10.96.154.233", Port: 80, Namespace: "db", Service: "pg"},
	}
	for _, c := range []struct {
		name string
		f    *Filter
		want bool
	}{
		{"to namespace/", &Filter{To: "db/"}, true},
		{"to namespace/service", &Filter{To: "db/pg"}, true},
		{"to other service", &Filter{To: "db/redis"}, false},
		{"to service in other namespace", &Filter{To: "shop/pg"}, false},
		{"to bare name: pods only", &Filter{To: "pg"}, false},
		{"to cluster ip", &Filter{To: "10.96.154.233"}, true},
		{"namespace of the service", &Filter{Namespace: "db"}, true},
		{"pod: a service is no pod", &Filter{Pod: "db/pg"}, false},
		{"pod namespace/: a service is no pod", &Filter{Pod: "db/"}, false},
	} {
		if got := c.f.Match(svc); got != c.want {
			t.Errorf("service: %s: Match = %v, want %v", c.name, got, c.want)
		}
	}
	// An unknown endpoint matches no pod form, only its IP.
	unknown := &FlowEvent{Source: &Endpoint{Ip: "10.0.0.1"}, Destination: &Endpoint{Ip: "10.0.0.2"}}
	if (&Filter{Pod: "x"}).Match(unknown) || (&Filter{Namespace: ""}).Match(unknown) == false || !(&Filter{To: "10.0.0.2"}).Match(unknown) {
		t.Error("unknown endpoints")
	}
}

func TestFilterValidate(t *testing.T) {
	if err := (&Filter{Pod: "a/b/c"}).Validate(); err == nil {
		t.Error("a/b/c accepted")
	}
	if err := (&Filter{Verdicts: []Verdict{0}}).Validate(); err == nil {
		t.Error("unspecified verdict accepted")
	}
	if err := (&Filter{Namespace: "ns", From: "ns/", To: "10.0.0.1", Verdicts: []Verdict{Verdict_FAILED}}).Validate(); err != nil {
		t.Error(err)
	}
	for in, want := range map[string]Verdict{"closed": Verdict_CLOSED, "RESET": Verdict_RESET, "Established": Verdict_ESTABLISHED} {
		if v, err := ParseVerdict(in); err != nil || v != want {
			t.Errorf("ParseVerdict(%q) = %v, %v", in, v, err)
		}
	}
	if _, err := ParseVerdict("dropped"); err == nil {
		t.Error("dropped accepted")
	}
}
