package model

import (
	"cmp"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// MatchType is how a path, header, query parameter or gRPC method matches.
type MatchType int

const (
	Exact MatchType = iota + 1
	PathPrefix
	RegularExpression
)

// Match is one compiled HTTPRouteMatch or GRPCRouteMatch: all of its parts
// must match.
type Match struct {
	PathType MatchType // HTTPRoute: Exact, PathPrefix or RegularExpression
	Path     string    // for PathPrefix without its trailing '/', except "/"
	pathRe   *regexp.Regexp
	Method   string
	Headers  []ValueMatch
	Query    []ValueMatch
	// GRPC is set on GRPCRoute matches.
	GRPC *GRPCMatch
}

// ValueMatch matches a header (Name canonical) or a query parameter.
type ValueMatch struct {
	Name  string
	Value string
	re    *regexp.Regexp // RegularExpression matches
}

func (v *ValueMatch) matches(got string, present bool) bool {
	if !present {
		return false
	}
	if v.re != nil {
		return v.re.MatchString(got)
	}
	return got == v.Value
}

// GRPCMatch matches the request path "/<service>/<method>"; an empty part
// matches any.
type GRPCMatch struct {
	Service, Method     string
	serviceRe, methodRe *regexp.Regexp
}

// Table is a port's rules, in the order the Gateway API's precedence gives
// their matches.
type Table struct {
	entries []entry
}

type entry struct {
	m    *Match
	rule *Rule
	// tie-breaks: older route, then "<namespace>/<name>", then rule order.
	created  int64
	routeKey string
	ruleIdx  int
	matchIdx int
}

// newTable sorts entries by precedence. GRPCRoute matches come before
// HTTPRoute matches: a GRPCRoute is the more specific statement about a
// gRPC port.
func newTable(entries []entry) *Table {
	slices.SortStableFunc(entries, compareEntries)
	return &Table{entries: entries}
}

// compareEntries orders a before b (negative) when a takes precedence.
//
// HTTPRoute (Gateway API, HTTPRouteRule): an Exact path, then a PathPrefix
// with the most characters, then RegularExpression paths (implementation
// specific: after prefixes, in the order below), then a method match, then
// the most header matches, then the most query parameter matches.
// GRPCRoute: the most characters in the service, then in the method, then
// the most header matches. Both then: the oldest route, the first by
// "<namespace>/<name>", the first rule in the route, the first match.
func compareEntries(a, b entry) int {
	ag, bg := a.m.GRPC != nil, b.m.GRPC != nil
	if ag != bg {
		if ag {
			return -1
		}
		return 1
	}
	if ag {
		if c := cmp.Compare(len(b.m.GRPC.Service), len(a.m.GRPC.Service)); c != 0 {
			return c
		}
		if c := cmp.Compare(len(b.m.GRPC.Method), len(a.m.GRPC.Method)); c != 0 {
			return c
		}
		if c := cmp.Compare(len(b.m.Headers), len(a.m.Headers)); c != 0 {
			return c
		}
	} else {
		if c := cmp.Compare(pathRank(a.m.PathType), pathRank(b.m.PathType)); c != 0 {
			return c
		}
		if a.m.PathType == PathPrefix {
			if c := cmp.Compare(prefixLen(b.m.Path), prefixLen(a.m.Path)); c != 0 {
				return c
			}
		}
		if c := boolFirst(a.m.Method != "", b.m.Method != ""); c != 0 {
			return c
		}
		if c := cmp.Compare(len(b.m.Headers), len(a.m.Headers)); c != 0 {
			return c
		}
		if c := cmp.Compare(len(b.m.Query), len(a.m.Query)); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(a.created, b.created); c != 0 {
		return c
	}
	if c := strings.Compare(a.routeKey, b.routeKey); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ruleIdx, b.ruleIdx); c != 0 {
		return c
	}
	return cmp.Compare(a.matchIdx, b.matchIdx)
}

// boolFirst orders true before false.
func boolFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	default:
		return 1
	}
}

func pathRank(t MatchType) int {
	switch t {
	case Exact:
		return 0
	case PathPrefix:
		return 1
	default:
		return 2
	}
}

// prefixLen counts "/" as no character, so that "/" is the least specific.
func prefixLen(p string) int {
	if p == "/" {
		return 0
	}
	return len(p)
}

// Match returns the rule of the first match that the request meets, and
// that match (the rewrite of a prefix needs it); nil when none does (404).
func (t *Table) Match(method, path string, h http.Header, query url.Values) (*Rule, *Match) {
	for i := range t.entries {
		e := &t.entries[i]
		if e.m.Matches(method, path, h, query) {
			return e.rule, e.m
		}
	}
	return nil, nil
}

// Rules returns the table's distinct rules in precedence order of their
// first match (for dumps and tests).
func (t *Table) Rules() []*Rule {
	var out []*Rule
	for _, e := range t.entries {
		if !slices.Contains(out, e.rule) {
			out = append(out, e.rule)
		}
	}
	return out
}

// Matches reports whether a request meets every part of m. path is the
// request's path without its query; query is nil when the request has none.
func (m *Match) Matches(method, path string, h http.Header, query url.Values) bool {
	if m.GRPC != nil {
		if !m.GRPC.matches(path) {
			return false
		}
	} else if !m.matchPath(path) {
		return false
	}
	if m.Method != "" && m.Method != method {
		return false
	}
	for i := range m.Headers {
		vs, ok := h[m.Headers[i].Name]
		// Several lines of one header match as one, joined by ",".
		if !m.Headers[i].matches(strings.Join(vs, ","), ok) {
			return false
		}
	}
	for i := range m.Query {
		vs, ok := query[m.Query[i].Name]
		// Only the first value counts, as in Envoy.
		v := ""
		if ok && len(vs) > 0 {
			v = vs[0]
		}
		if !m.Query[i].matches(v, ok) {
			return false
		}
	}
	return true
}

func (m *Match) matchPath(path string) bool {
	switch m.PathType {
	case Exact:
		return path == m.Path
	case PathPrefix:
		// Element-wise: "/foo" matches "/foo" and "/foo/bar", not "/foobar".
		if m.Path == "/" {
			return true
		}
		return path == m.Path || strings.HasPrefix(path, m.Path) && path[len(m.Path)] == '/'
	case RegularExpression:
		return m.pathRe.MatchString(path)
	}
	return false
}

// SplitGRPCPath splits "/<service>/<method>"; ok is false for any other
// path.
func SplitGRPCPath(path string) (service, method string, ok bool) {
	rest, found := strings.CutPrefix(path, "/")
	if !found {
		return "", "", false
	}
	service, method, found = strings.Cut(rest, "/")
	if !found || service == "" || method == "" || strings.Contains(method, "/") {
		return "", "", false
	}
	return service, method, true
}

func (g *GRPCMatch) matches(path string) bool {
	if g.Service == "" && g.Method == "" {
		return true
	}
	svc, meth, ok := SplitGRPCPath(path)
	if !ok {
		return false
	}
	if g.Service != "" {
		if g.serviceRe != nil && !g.serviceRe.MatchString(svc) || g.serviceRe == nil && svc != g.Service {
			return false
		}
	}
	if g.Method != "" {
		if g.methodRe != nil && !g.methodRe.MatchString(meth) || g.methodRe == nil && meth != g.Method {
			return false
		}
	}
	return true
}
