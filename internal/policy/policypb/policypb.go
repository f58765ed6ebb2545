// Package policypb converts internal/policy's Policy to and from the
// distribution protobuf (api/proto/mesh/v1): the controller sends with
// ToProto, the ztunnel reads with FromProto, so the wire format has one
// mapping in both directions. No Kubernetes types.
package policypb

import (
	"errors"
	"fmt"
	"maps"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/internal/policy"
)

// ToProto converts p. An action other than ALLOW or DENY (never in a
// model) is sent as unspecified, which FromProto refuses.
func ToProto(p *policy.Policy) *meshv1.Policy {
	pp := &meshv1.Policy{Namespace: p.Namespace, Name: p.Name, Selector: maps.Clone(p.Selector), HasSelector: p.Selector != nil, Action: action(p.Action)}
	for _, r := range p.Rules {
		pr := &meshv1.Rule{}
		for _, f := range r.From {
			src := &meshv1.Source{Namespaces: f.Namespaces}
			for _, id := range f.Principals {
				src.Principals = append(src.Principals, id.String())
			}
			pr.From = append(pr.From, src)
		}
		for _, t := range r.To {
			d := &meshv1.Destination{}
			for _, port := range t.Ports {
				d.Ports = append(d.Ports, uint32(port))
			}
			pr.To = append(pr.To, d)
		}
		pp.Rules = append(pp.Rules, pr)
	}
	return pp
}

func action(a policy.Action) meshv1.Action {
	switch a {
	case policy.ActionAllow:
		return meshv1.Action_ACTION_ALLOW
	case policy.ActionDeny:
		return meshv1.Action_ACTION_DENY
	}
	return meshv1.Action_ACTION_UNSPECIFIED
}

// FromProto converts pp. Every malformed field is reported (an unknown
// action, a principal that is no SPIFFE ID, a port out of range); the
// policy is only usable without error: half of a policy could allow what
// the whole denies.
func FromProto(pp *meshv1.Policy) (policy.Policy, error) {
	p := policy.Policy{Namespace: pp.Namespace, Name: pp.Name}
	var errs []error
	if pp.HasSelector || len(pp.Selector) > 0 {
		p.Selector = maps.Clone(pp.Selector)
		if p.Selector == nil {
			p.Selector = map[string]string{}
		}
	}
	switch pp.Action {
	case meshv1.Action_ACTION_ALLOW:
		p.Action = policy.ActionAllow
	case meshv1.Action_ACTION_DENY:
		p.Action = policy.ActionDeny
	default:
		errs = append(errs, fmt.Errorf("action %v", pp.Action))
	}
	for i, r := range pp.Rules {
		var rule policy.Rule
		for j, f := range r.From {
			ids, err := policy.ParsePrincipals(f.Principals)
			if err != nil {
				errs = append(errs, fmt.Errorf("rules[%d].from[%d]: %w", i, j, err))
			}
			rule.From = append(rule.From, policy.Source{Principals: ids, Namespaces: f.Namespaces})
		}
		for j, t := range r.To {
			var d policy.Destination
			for _, port := range t.Ports {
				if port == 0 || port > 65535 {
					errs = append(errs, fmt.Errorf("rules[%d].to[%d]: port %d: out of range", i, j, port))
					continue
				}
				d.Ports = append(d.Ports, uint16(port))
			}
			rule.To = append(rule.To, d)
		}
		p.Rules = append(p.Rules, rule)
	}
	if err := errors.Join(errs...); err != nil {
		return policy.Policy{}, err
	}
	return p, nil
}
