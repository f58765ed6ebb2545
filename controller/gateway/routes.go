package gateway

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
)

// LabelUseWaypoint on a namespace or a Service sends its traffic through
// the named waypoint (a Gateway of class warren-waypoint in the same
// namespace); on a Service it wins over the namespace's, and "none" opts the
// Service out.
const (
	LabelUseWaypoint = "warren.dev/use-waypoint"
	UseWaypointNone  = "none"
)

// WaypointFor is the name of the waypoint that serves svc, or "" for none.
// It is the one rule for it: the model, route status and warrenctl call it.
func WaypointFor(ns, svc map[string]string) string {
	if v, ok := svc[LabelUseWaypoint]; ok {
		if v == UseWaypointNone {
			return ""
		}
		return v
	}
	if v := ns[LabelUseWaypoint]; v != UseWaypointNone {
		return v
	}
	return ""
}

// RouteInputs are what routes are compiled against.
type RouteInputs struct {
	Namespaces map[string]*corev1.Namespace
	Services   map[types.NamespacedName]*corev1.Service
	Grants     []*gwv1.ReferenceGrant
}

// RouteResult is a compiled route and its status per Service parent. Route
// is nil when no parent accepted it.
type RouteResult struct {
	Route   *meshv1.Route
	Parents []gwv1.RouteParentStatus
}

var (
	coreGroup   = gwv1.Group("")
	serviceKind = gwv1.Kind("Service")
)

// routeCompiler gathers one route's problems as it goes.
type routeCompiler struct {
	in       RouteInputs
	ns, kind string
	gen      int64
	// accept is why the route cannot be accepted ("" if it can);
	// resolve why a reference did not resolve.
	acceptReason              gwv1.RouteConditionReason
	acceptMsg                 string
	resolveReason, resolveMsg string
}

func (c *routeCompiler) unsupported(format string, a ...any) {
	if c.acceptReason == "" {
		c.acceptReason, c.acceptMsg = gwv1.RouteReasonUnsupportedValue, fmt.Sprintf(format, a...)
	}
}

func (c *routeCompiler) unresolved(reason gwv1.RouteConditionReason, format string, a ...any) {
	if c.resolveReason == "" {
		c.resolveReason, c.resolveMsg = string(reason), fmt.Sprintf(format, a...)
	}
}

// CompileHTTPRoute compiles an HTTPRoute attached to Services (GAMMA).
func CompileHTTPRoute(r *gwv1.HTTPRoute, in RouteInputs) RouteResult {
	c := &routeCompiler{in: in, ns: r.Namespace, kind: "HTTPRoute", gen: r.Generation}
	out := &meshv1.Route{Namespace: r.Namespace, Name: r.Name, Kind: meshv1.RouteKind_ROUTE_KIND_HTTP, CreatedUnix: r.CreationTimestamp.Unix()}
	for i, rule := range r.Spec.Rules {
		rr := &meshv1.RouteRule{}
		if rule.Name != nil {
			rr.Name = string(*rule.Name)
		}
		for _, m := range rule.Matches {
			rr.Matches = append(rr.Matches, c.httpMatch(m))
		}
		for _, f := range rule.Filters {
			if mf := c.httpFilter(f); mf != nil {
				rr.Filters = append(rr.Filters, mf)
			}
		}
		for _, b := range rule.BackendRefs {
			if len(b.Filters) > 0 {
				c.unsupported("spec.rules[%d].backendRefs: filters on a backendRef are not supported", i)
			}
			rr.Backends = append(rr.Backends, c.backend(b.BackendRef))
		}
		if t := rule.Timeouts; t != nil {
			rr.Timeouts = &meshv1.Timeouts{RequestMs: c.duration(t.Request), BackendRequestMs: c.duration(t.BackendRequest)}
		}
		if rt := rule.Retry; rt != nil {
			mr := &meshv1.Retry{Attempts: 1, BackoffMs: c.duration(rt.Backoff)}
			if rt.Attempts != nil {
				mr.Attempts = int32(*rt.Attempts)
			}
			for _, code := range rt.Codes {
				mr.Codes = append(mr.Codes, uint32(code))
			}
			rr.Retry = mr
		}
		if rule.SessionPersistence != nil {
			c.unsupported("spec.rules[%d].sessionPersistence is not supported", i)
		}
		out.Rules = append(out.Rules, rr)
	}
	return c.finish(r.Spec.ParentRefs, out)
}

// CompileGRPCRoute compiles a GRPCRoute attached to Services (GAMMA).
func CompileGRPCRoute(r *gwv1.GRPCRoute, in RouteInputs) RouteResult {
	c := &routeCompiler{in: in, ns: r.Namespace, kind: "GRPCRoute", gen: r.Generation}
	out := &meshv1.Route{Namespace: r.Namespace, Name: r.Name, Kind: meshv1.RouteKind_ROUTE_KIND_GRPC, CreatedUnix: r.CreationTimestamp.Unix()}
	for i, rule := range r.Spec.Rules {
		rr := &meshv1.RouteRule{}
		if rule.Name != nil {
			rr.Name = string(*rule.Name)
		}
		for _, m := range rule.Matches {
			mm := &meshv1.RouteMatch{}
			if m.Method != nil {
				g := &meshv1.GRPCMethodMatch{Type: meshv1.MatchType_MATCH_TYPE_EXACT}
				if m.Method.Type != nil && *m.Method.Type == gwv1.GRPCMethodMatchRegularExpression {
					g.Type = meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION
				}
				if m.Method.Service != nil {
					g.Service = *m.Method.Service
				}
				if m.Method.Method != nil {
					g.Method = *m.Method.Method
				}
				if g.Type == meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION {
					c.regex(g.Service)
					c.regex(g.Method)
				}
				mm.Grpc = g
			}
			for _, h := range m.Headers {
				mm.Headers = append(mm.Headers, c.headerMatch(string(h.Name), h.Value, h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression))
			}
			rr.Matches = append(rr.Matches, mm)
		}
		for _, f := range rule.Filters {
			if mf := c.httpFilter(gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterType(f.Type), RequestHeaderModifier: f.RequestHeaderModifier,
				ResponseHeaderModifier: f.ResponseHeaderModifier, RequestMirror: f.RequestMirror, ExtensionRef: f.ExtensionRef}); mf != nil {
				rr.Filters = append(rr.Filters, mf)
			}
		}
		for _, b := range rule.BackendRefs {
			if len(b.Filters) > 0 {
				c.unsupported("spec.rules[%d].backendRefs: filters on a backendRef are not supported", i)
			}
			rr.Backends = append(rr.Backends, c.backend(b.BackendRef))
		}
		if rule.SessionPersistence != nil {
			c.unsupported("spec.rules[%d].sessionPersistence is not supported", i)
		}
		out.Rules = append(out.Rules, rr)
	}
	return c.finish(r.Spec.ParentRefs, out)
}

func (c *routeCompiler) httpMatch(m gwv1.HTTPRouteMatch) *meshv1.RouteMatch {
	mm := &meshv1.RouteMatch{}
	if p := m.Path; p != nil {
		pm := &meshv1.PathMatch{Type: meshv1.MatchType_MATCH_TYPE_PATH_PREFIX, Value: "/"}
		if p.Type != nil {
			switch *p.Type {
			case gwv1.PathMatchExact:
				pm.Type = meshv1.MatchType_MATCH_TYPE_EXACT
			case gwv1.PathMatchRegularExpression:
				pm.Type = meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION
			}
		}
		if p.Value != nil {
			pm.Value = *p.Value
		}
		if pm.Type == meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION {
			c.regex(pm.Value)
		}
		mm.Path = pm
	}
	for _, h := range m.Headers {
		mm.Headers = append(mm.Headers, c.headerMatch(string(h.Name), h.Value, h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression))
	}
	for _, q := range m.QueryParams {
		mm.QueryParams = append(mm.QueryParams, c.headerMatch(string(q.Name), q.Value, q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression))
	}
	if m.Method != nil {
		mm.Method = string(*m.Method)
	}
	return mm
}

func (c *routeCompiler) headerMatch(name, value string, regex bool) *meshv1.HeaderMatch {
	h := &meshv1.HeaderMatch{Type: meshv1.MatchType_MATCH_TYPE_EXACT, Name: name, Value: value}
	if regex {
		h.Type = meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION
		c.regex(value)
	}
	return h
}

// regex checks an RE2 expression (the waypoint compiles the same syntax).
func (c *routeCompiler) regex(expr string) {
	if _, err := regexp.Compile(expr); err != nil {
		c.unsupported("regular expression %q: %v", expr, err)
	}
}

func (c *routeCompiler) duration(d *gwv1.Duration) uint64 {
	if d == nil {
		return 0
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		c.unsupported("duration %q: %v", *d, err)
		return 0
	}
	return uint64(v.Milliseconds())
}

func (c *routeCompiler) httpFilter(f gwv1.HTTPRouteFilter) *meshv1.RouteFilter {
	hm := func(h *gwv1.HTTPHeaderFilter) *meshv1.HeaderModifier {
		if h == nil {
			c.unsupported("filter %s without its settings", f.Type)
			return &meshv1.HeaderModifier{}
		}
		m := &meshv1.HeaderModifier{Remove: h.Remove}
		for _, s := range h.Set {
			m.Set = append(m.Set, &meshv1.HTTPHeader{Name: string(s.Name), Value: s.Value})
		}
		for _, s := range h.Add {
			m.Add = append(m.Add, &meshv1.HTTPHeader{Name: string(s.Name), Value: s.Value})
		}
		return m
	}
	pathMod := func(p *gwv1.HTTPPathModifier) *meshv1.PathModifier {
		switch {
		case p == nil:
			return nil
		case p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
			return &meshv1.PathModifier{Kind: &meshv1.PathModifier_ReplaceFullPath{ReplaceFullPath: *p.ReplaceFullPath}}
		case p.Type == gwv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
			return &meshv1.PathModifier{Kind: &meshv1.PathModifier_ReplacePrefixMatch{ReplacePrefixMatch: *p.ReplacePrefixMatch}}
		}
		c.unsupported("path modifier of type %q without its value", p.Type)
		return nil
	}
	switch f.Type {
	case gwv1.HTTPRouteFilterRequestHeaderModifier:
		return &meshv1.RouteFilter{Kind: &meshv1.RouteFilter_RequestHeaderModifier{RequestHeaderModifier: hm(f.RequestHeaderModifier)}}
	case gwv1.HTTPRouteFilterResponseHeaderModifier:
		return &meshv1.RouteFilter{Kind: &meshv1.RouteFilter_ResponseHeaderModifier{ResponseHeaderModifier: hm(f.ResponseHeaderModifier)}}
	case gwv1.HTTPRouteFilterRequestRedirect:
		r := f.RequestRedirect
		if r == nil {
			c.unsupported("filter RequestRedirect without its settings")
			return nil
		}
		mr := &meshv1.RequestRedirect{Path: pathMod(r.Path), StatusCode: 302}
		if r.Scheme != nil {
			mr.Scheme = *r.Scheme
		}
		if r.Hostname != nil {
			mr.Hostname = string(*r.Hostname)
		}
		if r.Port != nil {
			mr.Port = uint32(*r.Port)
		}
		if r.StatusCode != nil {
			mr.StatusCode = uint32(*r.StatusCode)
		}
		return &meshv1.RouteFilter{Kind: &meshv1.RouteFilter_RequestRedirect{RequestRedirect: mr}}
	case gwv1.HTTPRouteFilterURLRewrite:
		r := f.URLRewrite
		if r == nil {
			c.unsupported("filter URLRewrite without its settings")
			return nil
		}
		mr := &meshv1.URLRewrite{Path: pathMod(r.Path)}
		if r.Hostname != nil {
			mr.Hostname = string(*r.Hostname)
		}
		return &meshv1.RouteFilter{Kind: &meshv1.RouteFilter_UrlRewrite{UrlRewrite: mr}}
	case gwv1.HTTPRouteFilterRequestMirror:
		m := f.RequestMirror
		if m == nil {
			c.unsupported("filter RequestMirror without its settings")
			return nil
		}
		mm := &meshv1.RequestMirror{Backend: c.backend(gwv1.BackendRef{BackendObjectReference: m.BackendRef})}
		switch {
		case m.Percent != nil:
			p := uint32(*m.Percent)
			mm.Percent = &p
		case m.Fraction != nil:
			den := int32(100)
			if m.Fraction.Denominator != nil {
				den = *m.Fraction.Denominator
			}
			if den > 0 {
				p := uint32(int64(m.Fraction.Numerator) * 100 / int64(den))
				mm.Percent = &p
			}
		}
		return &meshv1.RouteFilter{Kind: &meshv1.RouteFilter_RequestMirror{RequestMirror: mm}}
	}
	c.unsupported("filter type %q is not supported by Warren's waypoints", f.Type)
	return nil
}

// backend resolves a backendRef. One that does not resolve is kept with
// its name, so that the waypoint answers 500 for the share of requests it
// would have had (the spec's rule), and the route's ResolvedRefs says why.
func (c *routeCompiler) backend(b gwv1.BackendRef) *meshv1.BackendRef {
	ns := c.ns
	if b.Namespace != nil {
		ns = string(*b.Namespace)
	}
	out := &meshv1.BackendRef{Namespace: ns, Name: string(b.Name), Weight: b.Weight}
	if b.Port != nil {
		out.Port = uint32(*b.Port)
	}
	if (b.Group != nil && *b.Group != coreGroup) || (b.Kind != nil && *b.Kind != serviceKind) {
		c.unresolved(gwv1.RouteReasonInvalidKind, "backendRef %s: only core Services are supported", b.Name)
		out.Name, out.Namespace = "", ""
		return out
	}
	if ns != c.ns && !c.granted(ns, string(b.Name)) {
		c.unresolved(gwv1.RouteReasonRefNotPermitted, "backendRef %s/%s: no ReferenceGrant in %s allows it", ns, b.Name, ns)
		out.Name, out.Namespace = "", ""
		return out
	}
	svc := c.in.Services[types.NamespacedName{Namespace: ns, Name: string(b.Name)}]
	if svc == nil {
		c.unresolved(gwv1.RouteReasonBackendNotFound, "backendRef %s/%s: no such Service", ns, b.Name)
		return out
	}
	if b.Port != nil && !hasPort(svc, int32(*b.Port)) {
		c.unresolved(gwv1.RouteReasonBackendNotFound, "backendRef %s/%s: the Service has no port %d", ns, b.Name, *b.Port)
	}
	return out
}

func hasPort(svc *corev1.Service, p int32) bool {
	for _, sp := range svc.Spec.Ports {
		if sp.Port == p {
			return true
		}
	}
	return false
}

// granted: a ReferenceGrant in ns lets this kind of route in c.ns refer to
// the Service name.
func (c *routeCompiler) granted(ns, name string) bool {
	for _, g := range c.in.Grants {
		if g.Namespace != ns {
			continue
		}
		from, to := false, false
		for _, f := range g.Spec.From {
			from = from || (f.Group == gwv1.GroupName && string(f.Kind) == c.kind && string(f.Namespace) == c.ns)
		}
		for _, t := range g.Spec.To {
			to = to || (t.Group == coreGroup && t.Kind == serviceKind && (t.Name == nil || string(*t.Name) == name))
		}
		if from && to {
			return true
		}
	}
	return false
}

// finish resolves the parents and writes each one's status.
func (c *routeCompiler) finish(parents []gwv1.ParentReference, out *meshv1.Route) RouteResult {
	var res RouteResult
	cond := func(t gwv1.RouteConditionType, ok bool, reason gwv1.RouteConditionReason, msg string) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: string(t), Status: s, Reason: string(reason), Message: msg, ObservedGeneration: c.gen}
	}
	resolved := cond(gwv1.RouteConditionResolvedRefs, true, gwv1.RouteReasonResolvedRefs, "all references resolved")
	if c.resolveReason != "" {
		resolved = cond(gwv1.RouteConditionResolvedRefs, false, gwv1.RouteConditionReason(c.resolveReason), c.resolveMsg)
	}
	for _, p := range parents {
		if (p.Group == nil || *p.Group != coreGroup) || (p.Kind == nil || *p.Kind != serviceKind) {
			continue // a Gateway parent: not a mesh route, not ours
		}
		ns := c.ns
		if p.Namespace != nil {
			ns = string(*p.Namespace)
		}
		accepted := c.parent(p, ns, out)
		if accepted.Status == metav1.ConditionTrue && c.acceptReason != "" {
			accepted = cond(gwv1.RouteConditionAccepted, false, c.acceptReason, c.acceptMsg)
		}
		res.Parents = append(res.Parents, gwv1.RouteParentStatus{ParentRef: p, ControllerName: ControllerName,
			Conditions: []metav1.Condition{accepted, resolved}})
	}
	if len(out.Parents) > 0 && c.acceptReason == "" {
		res.Route = out
	}
	return res
}

// parent checks one Service parent and, when it is served, adds it to out.
func (c *routeCompiler) parent(p gwv1.ParentReference, ns string, out *meshv1.Route) metav1.Condition {
	no := func(reason gwv1.RouteConditionReason, format string, a ...any) metav1.Condition {
		return metav1.Condition{Type: string(gwv1.RouteConditionAccepted), Status: metav1.ConditionFalse, Reason: string(reason),
			Message: fmt.Sprintf(format, a...), ObservedGeneration: c.gen}
	}
	if ns != c.ns {
		// Consumer routes (a route in the caller's namespace for another's
		// Service) would need per-caller routing tables.
		return no(gwv1.RouteReasonNotAllowedByListeners, "a route may attach only to Services of its own namespace %s", c.ns)
	}
	svc := c.in.Services[types.NamespacedName{Namespace: ns, Name: string(p.Name)}]
	if svc == nil {
		return no(gwv1.RouteReasonNoMatchingParent, "no Service %s/%s", ns, p.Name)
	}
	var port uint32
	switch {
	case p.Port != nil:
		if !hasPort(svc, int32(*p.Port)) {
			return no(gwv1.RouteReasonNoMatchingParent, "Service %s/%s has no port %d", ns, p.Name, *p.Port)
		}
		port = uint32(*p.Port)
	case p.SectionName != nil:
		for _, sp := range svc.Spec.Ports {
			if sp.Name == string(*p.SectionName) {
				port = uint32(sp.Port)
			}
		}
		if port == 0 {
			return no(gwv1.RouteReasonNoMatchingParent, "Service %s/%s has no port named %s", ns, p.Name, *p.SectionName)
		}
	}
	var nsLabels map[string]string
	if n := c.in.Namespaces[ns]; n != nil {
		nsLabels = n.Labels
	}
	wp := WaypointFor(nsLabels, svc.Labels)
	if wp == "" {
		return no(gwv1.RouteReasonNoMatchingParent, "Service %s/%s is not bound to a waypoint: label it or its namespace %s=<waypoint name>", ns, p.Name, LabelUseWaypoint)
	}
	out.Parents = append(out.Parents, &meshv1.ParentRef{Namespace: ns, Name: string(p.Name), Port: port})
	return metav1.Condition{Type: string(gwv1.RouteConditionAccepted), Status: metav1.ConditionTrue, Reason: string(gwv1.RouteReasonAccepted),
		Message: "served by waypoint " + strings.Join([]string{ns, wp}, "/"), ObservedGeneration: c.gen}
}
