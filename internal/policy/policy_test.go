package policy

import (
	"testing"

	"github.com/warrenmesh/warren/internal/identity"
)

// TestAuthorize is the union of the cases controller/model and ztunnel test
// through their own types (which keep them, as tests of their conversions).
func TestAuthorize(t *testing.T) {
	const sys = "warren-system"
	web := Target{Namespace: "a", Labels: map[string]string{"app": "web"}}
	db := Target{Namespace: "a", Labels: map[string]string{"app": "db"}}
	bc, bd, xc := identity.New("b", "c"), identity.New("b", "d"), identity.New("x", "c")
	fromB := Rule{From: []Source{{Namespaces: []string{"b"}}}}
	fromBC := Rule{From: []Source{{Principals: []identity.ID{bc}}}}
	port80 := Rule{To: []Destination{{Ports: []uint16{80}}}}
	pol := func(ns, name string, a Action, sel map[string]string, rules ...Rule) Policy {
		return Policy{Namespace: ns, Name: name, Selector: sel, Action: a, Rules: rules}
	}
	allowB := pol("a", "p", ActionAllow, nil, fromB)
	for _, tc := range []struct {
		name     string
		policies []Policy
		dst      Target
		conn     Conn
		allowed  bool
		by       string
	}{
		{"no policy", nil, web, Conn{Peer: bc, Port: 80}, true, ""},
		{"no policy, plaintext", nil, web, Conn{Port: 80}, true, ""},
		{"allow by namespace", []Policy{allowB}, web, Conn{Peer: bd, Port: 80}, true, "a/p"},
		{"allow by principal", []Policy{pol("a", "p", ActionAllow, nil, fromBC)}, web, Conn{Peer: bc, Port: 80}, true, "a/p"},
		{"allow by principal refuses another", []Policy{pol("a", "p", ActionAllow, nil, fromBC)}, web, Conn{Peer: bd, Port: 80}, false, ""},
		{"allow refuses other namespace", []Policy{allowB}, web, Conn{Peer: xc, Port: 80}, false, ""},
		{"allow refuses plaintext", []Policy{allowB}, web, Conn{Port: 80}, false, ""},
		{"allow by port lets plaintext in", []Policy{pol("a", "p", ActionAllow, nil, port80)}, web, Conn{Port: 80}, true, "a/p"},
		{"allow without rules allows nothing", []Policy{pol("a", "p", ActionAllow, nil)}, web, Conn{Peer: bc, Port: 80}, false, ""},
		{"deny without rules denies nothing", []Policy{pol("a", "p", ActionDeny, nil)}, web, Conn{Peer: bc, Port: 80}, true, ""},
		{"empty rule matches all", []Policy{pol("a", "p", ActionDeny, nil, Rule{})}, web, Conn{Port: 1}, false, "a/p"},
		{"deny wins over allow", []Policy{pol("a", "allow", ActionAllow, nil, fromB), pol("a", "deny", ActionDeny, nil, fromBC)}, web, Conn{Peer: bc, Port: 80}, false, "a/deny"},
		{"deny wins whatever the order", []Policy{pol("a", "deny", ActionDeny, nil, fromBC), pol("a", "allow", ActionAllow, nil, fromB)}, web, Conn{Peer: bc, Port: 80}, false, "a/deny"},
		{"deny does not touch others", []Policy{pol("a", "allow", ActionAllow, nil, fromB), pol("a", "deny", ActionDeny, nil, fromBC)}, web, Conn{Peer: bd, Port: 80}, true, "a/allow"},
		{"deny by port hits plaintext", []Policy{pol("a", "p", ActionDeny, nil, port80)}, web, Conn{Port: 80}, false, "a/p"},
		{"deny by port spares other ports", []Policy{pol("a", "p", ActionDeny, nil, port80)}, web, Conn{Peer: bc, Port: 81}, true, ""},
		{"selector misses", []Policy{pol("a", "p", ActionDeny, map[string]string{"app": "web"}, Rule{})}, db, Conn{Peer: bc, Port: 80}, true, ""},
		{"selector hits", []Policy{pol("a", "p", ActionDeny, map[string]string{"app": "web"}, Rule{})}, web, Conn{Peer: bc, Port: 80}, false, "a/p"},
		{"selector in another namespace", []Policy{pol("z", "p", ActionDeny, map[string]string{"app": "web"}, Rule{})}, web, Conn{Peer: bc, Port: 80}, true, ""},
		{"selector in the system namespace is not mesh-wide", []Policy{pol(sys, "p", ActionDeny, map[string]string{"app": "web"}, Rule{})}, web, Conn{Peer: bc, Port: 80}, true, ""},
		{"other namespace does not apply", []Policy{pol("z", "p", ActionDeny, nil, Rule{})}, web, Conn{Peer: bc, Port: 80}, true, ""},
		{"mesh-wide deny", []Policy{pol(sys, "p", ActionDeny, nil, port80)}, web, Conn{Peer: bc, Port: 80}, false, "warren-system/p"},
		{"mesh-wide deny beats a namespace allow", []Policy{allowB, pol(sys, "d", ActionDeny, nil, fromB)}, web, Conn{Peer: bd, Port: 80}, false, "warren-system/d"},
		{"rule needs from and to", []Policy{pol("a", "p", ActionAllow, nil, Rule{From: fromB.From, To: port80.To})}, web, Conn{Peer: bc, Port: 81}, false, ""},
		{"source needs principal and namespace", []Policy{pol("a", "p", ActionAllow, nil, Rule{From: []Source{{Principals: []identity.ID{bc}, Namespaces: []string{"x"}}}})}, web, Conn{Peer: bc, Port: 80}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Authorize(tc.policies, sys, tc.dst, tc.conn)
			if d.Allowed != tc.allowed || d.Policy != tc.by {
				t.Errorf("got %+v, want allowed=%v by %q", d, tc.allowed, tc.by)
			}
			if d.Reason == "" {
				t.Error("no reason")
			}
		})
	}
}
