// Package policy evaluates L4 AuthorizationPolicies: which policies apply to
// a workload, whether a connection matches them, and the decision (deny wins;
// if ALLOW policies apply, one must match; with no policy, allowed). It is
// pure and depends only on internal/identity, so both the controller's model
// and the ztunnel (which must not pull in the Kubernetes API types) use it.
//
// Its Policy is the one in-memory shape of an AuthorizationPolicy: the
// controller translates the CRD into it (controller/model), internal/policy/policypb
// converts it to and from the distribution protobuf, and its JSON form is the
// ztunnel's static configuration (principals as SPIFFE ID strings).
package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/warrenmesh/warren/internal/identity"
)

// Action is what a matching policy does.
type Action string

// Policy actions; deny wins.
const (
	ActionAllow Action = "ALLOW"
	ActionDeny  Action = "DENY"
)

// Policy is an AuthorizationPolicy in force: an ALLOW with no rules allows
// nothing, a DENY with no rules denies nothing, an empty rule matches all.
type Policy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Selector nil: every workload of Namespace, or of the mesh when
	// Namespace is the system namespace.
	Selector map[string]string `json:"selector,omitempty"`
	Action   Action            `json:"action"`
	Rules    []Rule            `json:"rules,omitempty"`
}

// Rule matches when a source and a destination match (absent lists match
// anything).
type Rule struct {
	From []Source      `json:"from,omitempty"`
	To   []Destination `json:"to,omitempty"`
}

// Source matches a peer by identity and/or namespace. In JSON the
// principals are SPIFFE ID strings, parsed when read.
type Source struct {
	Principals []identity.ID
	Namespaces []string
}

// sourceJSON is Source as JSON spells it.
type sourceJSON struct {
	Principals []string `json:"principals,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
}

// MarshalJSON writes the principals as SPIFFE IDs.
func (s Source) MarshalJSON() ([]byte, error) {
	out := sourceJSON{Namespaces: s.Namespaces}
	for _, id := range s.Principals {
		out.Principals = append(out.Principals, id.String())
	}
	return json.Marshal(out)
}

// UnmarshalJSON parses the principals; a malformed one is an error that
// names it. Unknown fields are refused whoever decodes: a misspelt
// "principals" would leave a source that matches every peer.
func (s *Source) UnmarshalJSON(b []byte) error {
	var in sourceJSON
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&in); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	ids, err := ParsePrincipals(in.Principals)
	if err != nil {
		return err
	}
	*s = Source{Principals: ids, Namespaces: in.Namespaces}
	return nil
}

// ParsePrincipals parses SPIFFE IDs, naming the first malformed one.
func ParsePrincipals(ss []string) ([]identity.ID, error) {
	var ids []identity.ID
	for _, p := range ss {
		id, err := identity.Parse(p)
		if err != nil {
			return nil, fmt.Errorf("principal %q: %w", p, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Destination matches the destination port.
type Destination struct {
	Ports []uint16 `json:"ports"`
}

// Target is the destination workload as policies select it.
type Target struct {
	Namespace string
	Labels    map[string]string
}

// Conn is an inbound connection as the destination's ztunnel sees it.
type Conn struct {
	// Peer is the source's verified identity; zero for plaintext.
	Peer identity.ID
	// Port is the destination workload's port.
	Port uint16
}

// Decision is the outcome of Authorize.
type Decision struct {
	Allowed bool
	// Policy is namespace/name of the policy that decided, empty when none did.
	Policy string
	Reason string
}

// Applies reports whether an object of namespace ns with selector sel
// applies to t: sel nil means every workload of ns, or of the mesh when ns is
// systemNamespace; otherwise t must be in ns and carry every label of sel.
func Applies(ns string, sel map[string]string, t Target, systemNamespace string) bool {
	if sel == nil {
		return ns == t.Namespace || ns == systemNamespace
	}
	if ns != t.Namespace {
		return false
	}
	for k, v := range sel {
		if got, ok := t.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// AppliesTo reports whether the policy applies to t.
func (p *Policy) AppliesTo(t Target, systemNamespace string) bool {
	return Applies(p.Namespace, p.Selector, t, systemNamespace)
}

// Matches reports whether one of the policy's rules matches c.
func (p *Policy) Matches(c Conn) bool {
	return MatchRules(p.Rules, c)
}

// MatchRules reports whether one of rules matches c.
func MatchRules(rules []Rule, c Conn) bool {
	for i := range rules {
		if rules[i].matches(c) {
			return true
		}
	}
	return false
}

func (r *Rule) matches(c Conn) bool {
	fromOK := len(r.From) == 0 || slices.ContainsFunc(r.From, func(s Source) bool { return s.matches(c.Peer) })
	toOK := len(r.To) == 0 || slices.ContainsFunc(r.To, func(d Destination) bool { return slices.Contains(d.Ports, c.Port) })
	return fromOK && toOK
}

func (s *Source) matches(peer identity.ID) bool {
	if peer.IsZero() {
		return false // plaintext has no identity to match
	}
	if len(s.Principals) > 0 && !slices.Contains(s.Principals, peer) {
		return false
	}
	if len(s.Namespaces) > 0 && !slices.Contains(s.Namespaces, peer.Namespace) {
		return false
	}
	return true
}

// Authorize decides c to dst under policies: any matching DENY policy
// refuses it (deny wins, whatever else matches); otherwise, if ALLOW policies
// apply to dst, one of them must match; with no policy, it is allowed.
func Authorize(policies []Policy, systemNamespace string, dst Target, c Conn) Decision {
	var allows []*Policy
	for i := range policies {
		p := &policies[i]
		if !p.AppliesTo(dst, systemNamespace) {
			continue
		}
		if p.Action == ActionDeny {
			if p.Matches(c) {
				return Decision{Policy: p.Namespace + "/" + p.Name, Reason: "matched a DENY policy"}
			}
			continue
		}
		allows = append(allows, p)
	}
	if len(allows) == 0 {
		return Decision{Allowed: true, Reason: "no policy applies"}
	}
	for _, p := range allows {
		if p.Matches(c) {
			return Decision{Allowed: true, Policy: p.Namespace + "/" + p.Name, Reason: "matched an ALLOW policy"}
		}
	}
	return Decision{Reason: "ALLOW policies apply and none matched"}
}
