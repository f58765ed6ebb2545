package model

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/internal/identity"
)

// Limits of what Compile accepts.
const (
	MaxWeight   = 1_000_000 // Gateway API's bound on a backendRef's weight
	MaxAttempts = 10        // retries per request: more only amplifies an outage
	maxRegexLen = 1024
)

// Compile validates cfg and builds the State of the waypoint self
// ("<namespace>/<name>"): it fronts the Services whose waypoint is self.
// Every problem is reported, each naming its place in cfg.
func Compile(cfg *meshv1.WaypointConfig, self string) (*State, error) {
	c := compiler{st: &State{
		Self:      self,
		fronted:   map[netip.AddrPort]*Port{},
		services:  map[string]*Service{},
		Workloads: map[string]*Workload{},
	}}
	if self == "" || strings.Count(self, "/") != 1 {
		c.bad("self %q: want <namespace>/<name>", self)
	}
	for i, w := range cfg.GetWorkloads() {
		c.workload(fmt.Sprintf("workloads[%d]", i), w)
	}
	for i, s := range cfg.GetServices() {
		c.service(fmt.Sprintf("services[%d]", i), s)
	}
	attached := map[*Port][]entry{}
	for i, r := range cfg.GetRoutes() {
		c.route(fmt.Sprintf("routes[%d]", i), r, attached)
	}
	for _, svc := range c.st.services {
		for _, p := range svc.Ports {
			if !svc.Fronted || p.Protocol == TCP {
				continue
			}
			if es := attached[p]; len(es) > 0 {
				p.Routes = newTable(es)
			} else {
				p.Routes = defaultTable(p)
			}
		}
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return c.st, nil
}

// defaultTable sends every request to the Service itself.
func defaultTable(p *Port) *Table {
	rule := &Rule{Route: "default", Kind: RouteHTTP, Backends: []Backend{{
		Ref: fmt.Sprintf("%s:%d", p.Service.Key(), p.Number), Service: p.Service, Port: p, Weight: 1}}}
	return newTable([]entry{{m: &Match{PathType: PathPrefix, Path: "/"}, rule: rule}})
}

type compiler struct {
	st   *State
	errs []error
}

func (c *compiler) bad(format string, a ...any) { c.errs = append(c.errs, fmt.Errorf(format, a...)) }

func (c *compiler) workload(at string, w *meshv1.Peer) {
	if w.GetUid() == "" {
		c.bad("%s: uid: required", at)
		return
	}
	wl := &Workload{UID: w.GetUid(), Namespace: w.GetNamespace(), Name: w.GetName()}
	if w.GetIdentity() != "" {
		id, err := identity.Parse(w.GetIdentity())
		if err != nil {
			c.bad("%s (%s): identity: %v", at, w.GetUid(), err)
		}
		wl.Identity = id
	}
	c.st.Workloads[wl.UID] = wl
}

func (c *compiler) service(at string, s *meshv1.Service) {
	if s.GetNamespace() == "" || s.GetName() == "" {
		c.bad("%s: namespace and name: required", at)
		return
	}
	svc := &Service{Namespace: s.GetNamespace(), Name: s.GetName(), Fronted: s.GetWaypoint() != "" && s.GetWaypoint() == c.st.Self}
	at = fmt.Sprintf("%s (%s)", at, svc.Key())
	if _, dup := c.st.services[svc.Key()]; dup {
		c.bad("%s: listed twice", at)
		return
	}
	c.st.services[svc.Key()] = svc
	for j, v := range s.GetVips() {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			c.bad("%s.vips[%d]: %q is not an IP address", at, j, v)
			continue
		}
		svc.VIPs = append(svc.VIPs, a.Unmap())
	}
	for j, sp := range s.GetPorts() {
		pat := fmt.Sprintf("%s.ports[%d]", at, j)
		if sp.GetPort() == 0 || sp.GetPort() > 65535 || sp.GetTargetPort() > 65535 {
			c.bad("%s: port %d -> %d: out of range", pat, sp.GetPort(), sp.GetTargetPort())
			continue
		}
		if _, dup := svc.Port(uint16(sp.GetPort())); dup {
			c.bad("%s: port %d listed twice", pat, sp.GetPort())
			continue
		}
		p := &Port{Service: svc, Number: uint16(sp.GetPort()), Name: sp.GetName(),
			Protocol:   DetectProtocol(sp.GetAppProtocol(), sp.GetName()),
			TargetPort: uint16(sp.GetTargetPort()), TargetPortName: sp.GetTargetPortName()}
		svc.Ports = append(svc.Ports, p)
		if svc.Fronted {
			for _, vip := range svc.VIPs {
				ap := netip.AddrPortFrom(vip, p.Number)
				if other, taken := c.st.fronted[ap]; taken {
					c.bad("%s: %s is also %s's", pat, ap, other.Service.Key())
					continue
				}
				c.st.fronted[ap] = p
			}
		}
	}
	for j, e := range s.GetEndpoints() {
		eat := fmt.Sprintf("%s.endpoints[%d]", at, j)
		a, err := netip.ParseAddr(e.GetIp())
		if err != nil || a.Zone() != "" {
			c.bad("%s: ip %q is not an IP address", eat, e.GetIp())
			continue
		}
		ep := &Endpoint{Addr: a.Unmap(), Ready: e.GetReady(), Enrolled: e.GetEnrolled(), Ports: map[string]uint16{}}
		if e.GetEnrolled() {
			id, err := identity.Parse(e.GetIdentity())
			if err != nil {
				c.bad("%s: identity: %v", eat, err)
				continue
			}
			ep.Identity = id
		}
		for name, n := range e.GetPorts() {
			if n == 0 || n > 65535 {
				c.bad("%s: ports[%s] = %d: out of range", eat, name, n)
				continue
			}
			ep.Ports[name] = uint16(n)
		}
		ep.Workload = c.st.Workloads[e.GetWorkloadUid()]
		svc.Endpoints = append(svc.Endpoints, ep)
	}
}

func (c *compiler) route(at string, r *meshv1.Route, attached map[*Port][]entry) {
	key := r.GetNamespace() + "/" + r.GetName()
	at = fmt.Sprintf("%s (%s)", at, key)
	if r.GetNamespace() == "" || r.GetName() == "" {
		c.bad("%s: namespace and name: required", at)
		return
	}
	var kind RouteKind
	switch r.GetKind() {
	case meshv1.RouteKind_ROUTE_KIND_HTTP:
		kind = RouteHTTP
	case meshv1.RouteKind_ROUTE_KIND_GRPC:
		kind = RouteGRPC
	default:
		c.bad("%s: kind: must be HTTP or GRPC", at)
		return
	}
	var ports []*Port
	if len(r.GetParents()) == 0 {
		c.bad("%s: parents: at least one Service", at)
	}
	for j, pr := range r.GetParents() {
		pat := fmt.Sprintf("%s.parents[%d]", at, j)
		svc, ok := c.st.services[pr.GetNamespace()+"/"+pr.GetName()]
		if !ok {
			c.bad("%s: Service %s/%s is not in the configuration", pat, pr.GetNamespace(), pr.GetName())
			continue
		}
		if !svc.Fronted {
			continue // another waypoint's: nothing for this one to do
		}
		if pr.GetPort() != 0 {
			p, ok := svc.Port(uint16(min(pr.GetPort(), 65536)))
			if !ok || pr.GetPort() > 65535 {
				c.bad("%s: Service %s has no port %d", pat, svc.Key(), pr.GetPort())
				continue
			}
			ports = append(ports, p)
			continue
		}
		// The whole Service: its HTTP ports (TCP ones take no routes).
		for _, p := range svc.Ports {
			if p.Protocol != TCP {
				ports = append(ports, p)
			}
		}
	}
	nerr := len(c.errs)
	var entries []entry
	for j, rr := range r.GetRules() {
		rat := fmt.Sprintf("%s.rules[%d]", at, j)
		label := rr.GetName()
		if label == "" {
			label = strconv.Itoa(j)
		}
		rule := c.rule(rat, rr, kind)
		rule.Route = key + "#" + label
		ms := rr.GetMatches()
		if len(ms) == 0 {
			ms = []*meshv1.RouteMatch{{}}
		}
		for k, pm := range ms {
			m := c.match(fmt.Sprintf("%s.matches[%d]", rat, k), pm, kind)
			if m == nil {
				continue
			}
			if rule.Redirect != nil && rule.Redirect.Path != nil && rule.Redirect.Path.Prefix ||
				rule.Rewrite != nil && rule.Rewrite.Path != nil && rule.Rewrite.Path.Prefix {
				if m.PathType != PathPrefix {
					c.bad("%s.matches[%d]: replacePrefixMatch needs a PathPrefix match", rat, k)
				}
			}
			entries = append(entries, entry{m: m, rule: rule, created: r.GetCreatedUnix(), routeKey: key, ruleIdx: j, matchIdx: k})
		}
	}
	if len(c.errs) > nerr {
		return
	}
	for _, p := range ports {
		if p.Protocol == TCP {
			c.bad("%s: Service %s port %d is TCP (appProtocol or name): routes do not apply", at, p.Service.Key(), p.Number)
			continue
		}
		attached[p] = append(attached[p], entries...)
	}
}

func (c *compiler) rule(at string, rr *meshv1.RouteRule, kind RouteKind) *Rule {
	rule := &Rule{Kind: kind}
	for k, f := range rr.GetFilters() {
		fat := fmt.Sprintf("%s.filters[%d]", at, k)
		switch f := f.GetKind().(type) {
		case *meshv1.RouteFilter_RequestHeaderModifier:
			if rule.RequestHeaders != nil {
				c.bad("%s: a second RequestHeaderModifier", fat)
			}
			rule.RequestHeaders = c.headerModifier(fat, f.RequestHeaderModifier)
		case *meshv1.RouteFilter_ResponseHeaderModifier:
			if rule.ResponseHeaders != nil {
				c.bad("%s: a second ResponseHeaderModifier", fat)
			}
			rule.ResponseHeaders = c.headerModifier(fat, f.ResponseHeaderModifier)
		case *meshv1.RouteFilter_RequestRedirect:
			if kind == RouteGRPC {
				c.bad("%s: RequestRedirect: not a GRPCRoute filter", fat)
			}
			if rule.Redirect != nil || rule.Rewrite != nil {
				c.bad("%s: RequestRedirect with another RequestRedirect or URLRewrite", fat)
			}
			rd := f.RequestRedirect
			rule.Redirect = &Redirect{Scheme: rd.GetScheme(), Hostname: rd.GetHostname(), Status: int(rd.GetStatusCode()),
				Path: c.pathModifier(fat+".path", rd.GetPath())}
			switch rd.GetScheme() {
			case "", "http", "https":
			default:
				c.bad("%s: scheme %q: http or https", fat, rd.GetScheme())
			}
			if rd.GetPort() > 65535 {
				c.bad("%s: port %d: out of range", fat, rd.GetPort())
			}
			rule.Redirect.Port = uint16(min(rd.GetPort(), 65535))
			switch rule.Redirect.Status {
			case 0:
				rule.Redirect.Status = http.StatusFound
			case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			default:
				c.bad("%s: statusCode %d: 301, 302, 303, 307 or 308", fat, rule.Redirect.Status)
			}
			if rd.GetHostname() != "" && !httpguts.ValidHostHeader(rd.GetHostname()) {
				c.bad("%s: hostname %q: invalid", fat, rd.GetHostname())
			}
		case *meshv1.RouteFilter_UrlRewrite:
			if kind == RouteGRPC {
				c.bad("%s: URLRewrite: not a GRPCRoute filter", fat)
			}
			if rule.Redirect != nil || rule.Rewrite != nil {
				c.bad("%s: URLRewrite with another URLRewrite or RequestRedirect", fat)
			}
			rw := f.UrlRewrite
			if rw.GetHostname() != "" && !httpguts.ValidHostHeader(rw.GetHostname()) {
				c.bad("%s: hostname %q: invalid", fat, rw.GetHostname())
			}
			rule.Rewrite = &Rewrite{Hostname: rw.GetHostname(), Path: c.pathModifier(fat+".path", rw.GetPath())}
		case *meshv1.RouteFilter_RequestMirror:
			m := f.RequestMirror
			pct := uint32(100)
			if m.Percent != nil {
				pct = m.GetPercent()
			}
			if pct > 100 {
				c.bad("%s: percent %d: above 100", fat, pct)
			}
			if m.GetBackend() == nil {
				c.bad("%s: backend: required", fat)
				continue
			}
			b := c.backend(fat+".backend", m.GetBackend())
			if b.Port == nil {
				c.bad("%s: backend %s: not in the configuration", fat, b.Ref)
			}
			rule.Mirrors = append(rule.Mirrors, Mirror{Backend: b, Percent: pct})
		default:
			c.bad("%s: no filter", fat)
		}
	}
	for k, b := range rr.GetBackends() {
		rule.Backends = append(rule.Backends, c.backend(fmt.Sprintf("%s.backends[%d]", at, k), b))
	}
	if t := rr.GetTimeouts(); t != nil {
		rule.RequestTimeout = time.Duration(min(t.GetRequestMs(), 1<<40)) * time.Millisecond
		rule.BackendTimeout = time.Duration(min(t.GetBackendRequestMs(), 1<<40)) * time.Millisecond
		if rule.RequestTimeout != 0 && rule.BackendTimeout > rule.RequestTimeout {
			c.bad("%s.timeouts: backendRequest %v longer than request %v", at, rule.BackendTimeout, rule.RequestTimeout)
		}
	}
	if rt := rr.GetRetry(); rt != nil {
		if rt.GetAttempts() < 0 || rt.GetAttempts() > MaxAttempts {
			c.bad("%s.retry.attempts %d: 0 to %d", at, rt.GetAttempts(), MaxAttempts)
		}
		rule.Retry.Attempts = int(max(min(rt.GetAttempts(), MaxAttempts), 0))
		for _, code := range rt.GetCodes() {
			if code < 400 || code > 599 {
				c.bad("%s.retry.codes: %d: 400 to 599", at, code)
				continue
			}
			rule.Retry.Codes = append(rule.Retry.Codes, int(code))
		}
		rule.Retry.Backoff = time.Duration(min(rt.GetBackoffMs(), 1<<30)) * time.Millisecond
	}
	return rule
}

func (c *compiler) backend(at string, b *meshv1.BackendRef) Backend {
	out := Backend{Ref: fmt.Sprintf("%s/%s:%d", b.GetNamespace(), b.GetName(), b.GetPort()), Weight: 1}
	if b.Weight != nil {
		out.Weight = b.GetWeight()
	}
	if out.Weight < 0 || out.Weight > MaxWeight {
		c.bad("%s: weight %d: 0 to %d", at, out.Weight, MaxWeight)
	}
	if b.GetPort() == 0 || b.GetPort() > 65535 {
		c.bad("%s: port %d: required, 1 to 65535", at, b.GetPort())
		return out
	}
	// A Service the configuration lacks is a valid rule whose share of the
	// requests gets 500, as the Gateway API says of unresolved references.
	if svc, ok := c.st.services[b.GetNamespace()+"/"+b.GetName()]; ok {
		out.Service = svc
		out.Port, _ = svc.Port(uint16(b.GetPort()))
	}
	return out
}

func (c *compiler) headerModifier(at string, m *meshv1.HeaderModifier) *HeaderModifier {
	out := &HeaderModifier{}
	check := func(kind string, i int, name, value string) string {
		if !httpguts.ValidHeaderFieldName(name) {
			c.bad("%s.%s[%d]: header name %q: invalid", at, kind, i, name)
		}
		if !httpguts.ValidHeaderFieldValue(value) {
			c.bad("%s.%s[%d]: value of %q: invalid", at, kind, i, name)
		}
		if hopByHop(name) {
			c.bad("%s.%s[%d]: %q is connection-specific", at, kind, i, name)
		}
		return http.CanonicalHeaderKey(name)
	}
	for i, h := range m.GetSet() {
		out.Set = append(out.Set, HTTPHeader{check("set", i, h.GetName(), h.GetValue()), h.GetValue()})
	}
	for i, h := range m.GetAdd() {
		out.Add = append(out.Add, HTTPHeader{check("add", i, h.GetName(), h.GetValue()), h.GetValue()})
	}
	for i, n := range m.GetRemove() {
		out.Remove = append(out.Remove, check("remove", i, n, ""))
	}
	return out
}

func hopByHop(name string) bool {
	switch strings.ToLower(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host", "content-length":
		return true
	}
	return strings.HasPrefix(name, ":")
}

func (c *compiler) pathModifier(at string, pm *meshv1.PathModifier) *PathModifier {
	switch k := pm.GetKind().(type) {
	case nil:
		return nil
	case *meshv1.PathModifier_ReplaceFullPath:
		if !validPath(k.ReplaceFullPath) {
			c.bad("%s.replaceFullPath %q: must start with / and hold no query", at, k.ReplaceFullPath)
		}
		return &PathModifier{Value: k.ReplaceFullPath}
	case *meshv1.PathModifier_ReplacePrefixMatch:
		if !validPath(k.ReplacePrefixMatch) {
			c.bad("%s.replacePrefixMatch %q: must start with / and hold no query", at, k.ReplacePrefixMatch)
		}
		return &PathModifier{Prefix: true, Value: k.ReplacePrefixMatch}
	}
	return nil
}

func validPath(p string) bool {
	if p == "" || p[0] != '/' || strings.ContainsAny(p, "?#") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] == 0x7f {
			return false
		}
	}
	return true
}

var methods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true, http.MethodDelete: true,
	http.MethodConnect: true, http.MethodOptions: true, http.MethodTrace: true, http.MethodPatch: true,
}

func (c *compiler) regex(at, expr string) *regexp.Regexp {
	if len(expr) > maxRegexLen {
		c.bad("%s: regular expression longer than %d", at, maxRegexLen)
		return nil
	}
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		c.bad("%s: regular expression %q: %v", at, expr, err)
		return nil
	}
	return re
}

func (c *compiler) match(at string, pm *meshv1.RouteMatch, kind RouteKind) *Match {
	nerr := len(c.errs)
	m := &Match{}
	if kind == RouteGRPC {
		if pm.GetPath() != nil || len(pm.GetQueryParams()) > 0 || pm.GetMethod() != "" {
			c.bad("%s: path, queryParams and method are HTTPRoute matches", at)
		}
		g := pm.GetGrpc()
		m.GRPC = &GRPCMatch{Service: g.GetService(), Method: g.GetMethod()}
		switch g.GetType() {
		case meshv1.MatchType_MATCH_TYPE_UNSPECIFIED, meshv1.MatchType_MATCH_TYPE_EXACT:
			if g != nil && g.GetService() == "" && g.GetMethod() == "" {
				c.bad("%s.grpc: service or method: required", at)
			}
			if strings.Contains(g.GetService(), "/") || strings.Contains(g.GetMethod(), "/") {
				c.bad("%s.grpc: service and method hold no /", at)
			}
		case meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION:
			if g.GetService() != "" {
				m.GRPC.serviceRe = c.regex(at+".grpc.service", g.GetService())
			}
			if g.GetMethod() != "" {
				m.GRPC.methodRe = c.regex(at+".grpc.method", g.GetMethod())
			}
		default:
			c.bad("%s.grpc.type: Exact or RegularExpression", at)
		}
	} else {
		if pm.GetGrpc() != nil {
			c.bad("%s: grpc is a GRPCRoute match", at)
		}
		p := pm.GetPath()
		switch p.GetType() {
		case meshv1.MatchType_MATCH_TYPE_UNSPECIFIED, meshv1.MatchType_MATCH_TYPE_PATH_PREFIX:
			m.PathType, m.Path = PathPrefix, p.GetValue()
			if m.Path == "" {
				m.Path = "/"
			}
			if !validPath(m.Path) {
				c.bad("%s.path: %q must start with / and hold no query", at, m.Path)
			}
			if m.Path != "/" {
				m.Path = strings.TrimSuffix(m.Path, "/")
			}
		case meshv1.MatchType_MATCH_TYPE_EXACT:
			m.PathType, m.Path = Exact, p.GetValue()
			if !validPath(m.Path) {
				c.bad("%s.path: %q must start with / and hold no query", at, m.Path)
			}
		case meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION:
			m.PathType, m.Path = RegularExpression, p.GetValue()
			m.pathRe = c.regex(at+".path", p.GetValue())
		}
		if pm.GetMethod() != "" {
			if !methods[pm.GetMethod()] {
				c.bad("%s.method %q: not an HTTP method", at, pm.GetMethod())
			}
			m.Method = pm.GetMethod()
		}
		for i, q := range pm.GetQueryParams() {
			if q.GetName() == "" {
				c.bad("%s.queryParams[%d]: name: required", at, i)
			}
			m.Query = append(m.Query, c.valueMatch(fmt.Sprintf("%s.queryParams[%d]", at, i), q, q.GetName()))
		}
	}
	seen := map[string]bool{}
	for i, h := range pm.GetHeaders() {
		hat := fmt.Sprintf("%s.headers[%d]", at, i)
		if !httpguts.ValidHeaderFieldName(h.GetName()) {
			c.bad("%s: name %q: invalid", hat, h.GetName())
		}
		name := http.CanonicalHeaderKey(h.GetName())
		if seen[name] {
			c.bad("%s: %s matched twice", hat, name)
		}
		seen[name] = true
		m.Headers = append(m.Headers, c.valueMatch(hat, h, name))
	}
	if len(c.errs) > nerr {
		return nil
	}
	return m
}

func (c *compiler) valueMatch(at string, h *meshv1.HeaderMatch, name string) ValueMatch {
	v := ValueMatch{Name: name, Value: h.GetValue()}
	switch h.GetType() {
	case meshv1.MatchType_MATCH_TYPE_UNSPECIFIED, meshv1.MatchType_MATCH_TYPE_EXACT:
	case meshv1.MatchType_MATCH_TYPE_REGULAR_EXPRESSION:
		v.re = c.regex(at, h.GetValue())
	default:
		c.bad("%s.type: Exact or RegularExpression", at)
	}
	return v
}
