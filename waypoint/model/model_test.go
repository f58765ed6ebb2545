package model

import (
	"math"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
)

func TestDetectProtocol(t *testing.T) {
	for _, tc := range []struct {
		app, name string
		want      Protocol
	}{
		{"", "http", HTTP},
		{"", "http-web", HTTP},
		{"", "HTTP", HTTP},
		{"", "http2", HTTP2},
		{"", "h2c-api", HTTP2},
		{"", "grpc", GRPC},
		{"", "grpc-web", GRPC},
		{"", "https", TCP},
		{"", "httpx", TCP},
		{"", "", TCP},
		{"", "mysql", TCP},
		{"http", "grpc", HTTP}, // appProtocol first
		{"kubernetes.io/h2c", "tcp", HTTP2},
		{"grpc", "", GRPC},
		{"tcp", "http", TCP},
		{"kubernetes.io/ws", "http", TCP}, // an appProtocol we do not speak
	} {
		if got := DetectProtocol(tc.app, tc.name); got != tc.want {
			t.Errorf("DetectProtocol(%q, %q) = %v, want %v", tc.app, tc.name, got, tc.want)
		}
	}
}

// base is a fronted Service "ns/web" (VIP 10.96.0.10, ports http 80 and
// tcp 5432, grpc 9000) and a backend "ns/v2"; routes are appended per test.
const base = `
services:
- namespace: ns
  name: web
  waypoint: ns/wp
  vips: ["10.96.0.10"]
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: db, port: 5432}
  - {name: api, port: 9000, appProtocol: grpc}
  endpoints:
  - {ip: 10.0.0.1, ready: true, enrolled: true, identity: "spiffe://cluster.local/ns/ns/sa/web"}
- namespace: ns
  name: v2
  vips: ["10.96.0.11"]
  ports: [{name: http, port: 80, targetPortName: web}]
  endpoints:
  - {ip: 10.0.0.2, ready: true, ports: {web: 8081}}
`

func compileYAML(t *testing.T, routes string) (*State, error) {
	t.Helper()
	cfg, err := ParseStatic([]byte(base + routes))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return Compile(cfg, "ns/wp")
}

func TestCompileDefaults(t *testing.T) {
	st, err := compileYAML(t, "")
	if err != nil {
		t.Fatal(err)
	}
	p, ok := st.Lookup(netip.MustParseAddrPort("10.96.0.10:80"))
	if !ok || p.Protocol != HTTP || p.Service.Key() != "ns/web" {
		t.Fatalf("lookup 10.96.0.10:80 = %+v, %v", p, ok)
	}
	if _, ok := st.Lookup(netip.MustParseAddrPort("10.96.0.11:80")); ok {
		t.Error("ns/v2 is not fronted by ns/wp but Lookup found it")
	}
	if db, _ := st.Lookup(netip.MustParseAddrPort("10.96.0.10:5432")); db.Protocol != TCP || db.Routes != nil {
		t.Errorf("db port: protocol %v routes %v, want TCP without routes", db.Protocol, db.Routes)
	}
	rule, _ := p.Routes.Match("GET", "/anything", http.Header{}, nil)
	if rule == nil || rule.Route != "default" || len(rule.Backends) != 1 || rule.Backends[0].Port != p {
		t.Fatalf("default rule = %+v", rule)
	}
	if n, _ := p.EndpointPort(p.Service.Endpoints[0]); n != 8080 {
		t.Errorf("target port %d, want 8080", n)
	}
	v2, _ := st.Service("ns/v2")
	if n, ok := v2.Ports[0].EndpointPort(v2.Endpoints[0]); !ok || n != 8081 {
		t.Errorf("named target port = %d %v, want 8081", n, ok)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, routes string
		want         []string // substrings of the error
	}{
		{"bad regex", `
routes:
- namespace: ns
  name: r
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web}]
  rules:
  - matches: [{path: {type: MATCH_TYPE_REGULAR_EXPRESSION, value: "/a("}}]
    backends: [{namespace: ns, name: v2, port: 80}]
`, []string{"routes[0] (ns/r).rules[0].matches[0].path: regular expression \"/a(\""}},
		{"negative weight and bad retry", `
routes:
- namespace: ns
  name: r
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web, port: 80}]
  rules:
  - backends: [{namespace: ns, name: v2, port: 80, weight: -1}]
    retry: {attempts: 11, codes: [200]}
`, []string{"backends[0]: weight -1", "retry.attempts 11", "retry.codes: 200"}},
		{"unknown parent and port", `
routes:
- namespace: ns
  name: r
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: nope}, {namespace: ns, name: web, port: 81}]
`, []string{"parents[0]: Service ns/nope is not in the configuration", "parents[1]: Service ns/web has no port 81"}},
		{"route on a TCP port", `
routes:
- namespace: ns
  name: r
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web, port: 5432}]
`, []string{"port 5432 is TCP"}},
		{"prefix rewrite without prefix match", `
routes:
- namespace: ns
  name: r
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web, port: 80}]
  rules:
  - matches: [{path: {type: MATCH_TYPE_EXACT, value: /a}}]
    filters:
    - urlRewrite: {path: {replacePrefixMatch: /b}}
    - requestRedirect: {statusCode: 200}
`, []string{"replacePrefixMatch needs a PathPrefix match", "RequestRedirect with another", "statusCode 200"}},
		{"headers and method", `
routes:
- namespace: ns
  name: r
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web, port: 80}]
  rules:
  - matches: [{method: FETCH, headers: [{name: "bad name", value: x}, {name: X-A, value: "1"}, {name: x-a, value: "2"}]}]
    filters:
    - requestHeaderModifier: {set: [{name: Connection, value: close}], add: [{name: x-b, value: "a\nb"}]}
`, []string{"method \"FETCH\"", "name \"bad name\"", "X-A matched twice", "\"Connection\" is connection-specific", "value of \"x-b\""}},
		{"grpc match on an HTTPRoute and timeouts", `
routes:
- namespace: ns
  name: r
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web, port: 80}]
  rules:
  - matches: [{grpc: {service: a.B}}]
    timeouts: {requestMs: 100, backendRequestMs: 200}
`, []string{"grpc is a GRPCRoute match", "backendRequest 200ms longer than request 100ms"}},
		{"GRPCRoute with a path", `
routes:
- namespace: ns
  name: g
  kind: ROUTE_KIND_GRPC
  parents: [{namespace: ns, name: web, port: 9000}]
  rules:
  - matches: [{path: {value: /x}}, {grpc: {type: MATCH_TYPE_REGULAR_EXPRESSION, method: "*"}}]
`, []string{"path, queryParams and method are HTTPRoute matches", "grpc.method: regular expression"}},
		{"kind", `
routes:
- {namespace: ns, name: r, parents: [{namespace: ns, name: web}]}
`, []string{"kind: must be HTTP or GRPC"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileYAML(t, tc.routes)
			if err == nil {
				t.Fatal("compiled")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	if _, err := ParseStatic([]byte("services: [{namespace: a, nmae: b}]")); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Errorf("unknown field: err = %v", err)
	}
	bad := &meshv1.WaypointConfig{Services: []*meshv1.Service{{Namespace: "a", Name: "b", Vips: []string{"x"},
		Ports: []*meshv1.ServicePort{{Port: 70000}}, Endpoints: []*meshv1.Endpoint{{Ip: "1.2.3.4", Enrolled: true, Identity: "nope"}}}}}
	_, err := Compile(bad, "a/wp")
	for _, w := range []string{"vips[0]: \"x\"", "port 70000", "endpoints[0]: identity"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
}

// precedence holds rules whose route label says which should win.
const precedence = `
routes:
- namespace: ns
  name: b-newer
  createdUnix: 200
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web, port: 80}]
  rules:
  - name: prefix-api-tie-newer
    matches: [{path: {value: /api}}]
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: exact
    matches: [{path: {type: MATCH_TYPE_EXACT, value: /api/v1}}]
    backends: [{namespace: ns, name: v2, port: 80}]
- namespace: ns
  name: c-old
  createdUnix: 100
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web}]
  rules:
  - name: root
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: prefix-api
    matches: [{path: {value: /api/}}]
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: prefix-api-v1
    matches: [{path: {value: /api/v1}}]
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: prefix-api-method
    matches: [{path: {value: /api}, method: POST}]
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: prefix-api-header
    matches: [{path: {value: /api}, headers: [{name: x-canary, value: "yes"}]}]
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: prefix-api-2headers
    matches: [{path: {value: /api}, headers: [{name: x-canary, value: "yes"}, {name: x-user, type: MATCH_TYPE_REGULAR_EXPRESSION, value: "a.*"}]}]
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: prefix-api-query
    matches: [{path: {value: /api}, queryParams: [{name: debug, value: "1"}]}]
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: regex
    matches: [{path: {type: MATCH_TYPE_REGULAR_EXPRESSION, value: "/api/v[0-9]+/items"}}]
    backends: [{namespace: ns, name: v2, port: 80}]
- namespace: ns
  name: a-same-age
  createdUnix: 100
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web}]
  rules:
  - name: other-wins-by-name
    matches: [{path: {value: /other}}]
    backends: [{namespace: ns, name: v2, port: 80}]
- namespace: ns
  name: d
  createdUnix: 100
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web}]
  rules:
  - name: other-loses-by-name
    matches: [{path: {value: /other}}]
    backends: [{namespace: ns, name: v2, port: 80}]
  - name: first-rule
    matches: [{path: {value: /dup}}]
  - name: second-rule
    matches: [{path: {value: /dup}}]
- namespace: ns
  name: g
  kind: ROUTE_KIND_GRPC
  parents: [{namespace: ns, name: web, port: 9000}]
  rules:
  - name: service
    matches: [{grpc: {service: pkg.Echo}}]
  - name: service-method
    matches: [{grpc: {service: pkg.Echo, method: Stream}}]
  - name: method-regex
    matches: [{grpc: {type: MATCH_TYPE_REGULAR_EXPRESSION, method: "Get.*"}}]
  - name: service-header
    matches: [{grpc: {service: pkg.Echo}, headers: [{name: x-v, value: "2"}]}]
`

func TestMatchPrecedence(t *testing.T) {
	st, err := compileYAML(t, precedence)
	if err != nil {
		t.Fatal(err)
	}
	web, _ := st.Lookup(netip.MustParseAddrPort("10.96.0.10:80"))
	api, _ := st.Lookup(netip.MustParseAddrPort("10.96.0.10:9000"))
	for _, tc := range []struct {
		port          *Port
		method, path  string
		header, query string // "k=v" or empty
		want          string // rule name, "" for no match
	}{
		{web, "GET", "/", "", "", "ns/c-old#root"},
		{web, "GET", "/api/v1", "", "", "ns/b-newer#exact"},
		{web, "GET", "/api/v1/x", "", "", "ns/c-old#prefix-api-v1"},   // longest prefix
		{web, "GET", "/api/v10", "", "", "ns/c-old#prefix-api"},       // element-wise: not /api/v1
		{web, "GET", "/api", "", "", "ns/c-old#prefix-api"},           // trailing / ignored; older route wins the tie
		{web, "GET", "/apix", "", "", "ns/c-old#root"},                // not a path element
		{web, "POST", "/api/x", "", "", "ns/c-old#prefix-api-method"}, // method beats headers
		{web, "POST", "/api/x", "X-Canary=yes", "", "ns/c-old#prefix-api-method"},
		{web, "GET", "/api/x", "X-Canary=yes", "", "ns/c-old#prefix-api-header"},
		{web, "GET", "/api/x", "X-Canary=no", "debug=1", "ns/c-old#prefix-api-query"}, // headers beat query, but must match
		{web, "GET", "/api/x", "X-Canary=yes", "debug=1", "ns/c-old#prefix-api-header"},
		{web, "GET", "/api/v2/items", "", "", "ns/c-old#prefix-api"}, // a prefix beats a regex
		{web, "GET", "/x/v2/items", "", "", "ns/c-old#root"},
		{web, "GET", "/other/1", "", "", "ns/a-same-age#other-wins-by-name"},
		{web, "GET", "/dup", "", "", "ns/d#first-rule"},
		{api, "POST", "/pkg.Echo/Stream", "", "", "ns/g#service-method"},
		{api, "POST", "/pkg.Echo/Unary", "", "", "ns/g#service"},
		{api, "POST", "/pkg.Echo/Unary", "X-V=2", "", "ns/g#service-header"},
		{api, "POST", "/pkg.Echo/Stream", "X-V=2", "", "ns/g#service-method"}, // service chars, then method chars, then headers
		{api, "POST", "/other.Svc/GetThing", "", "", "ns/g#method-regex"},
		{api, "POST", "/other.Svc/Put", "", "", "ns/c-old#root"}, // HTTPRoutes after GRPCRoutes
	} {
		h := http.Header{}
		if k, v, ok := strings.Cut(tc.header, "="); ok {
			h.Set(k, v)
		}
		q, _ := url.ParseQuery(tc.query)
		rule, _ := tc.port.Routes.Match(tc.method, tc.path, h, q)
		got := ""
		if rule != nil {
			got = rule.Route
		}
		if got != tc.want {
			t.Errorf("%d %s %s [%s] ?%s: rule %q, want %q", tc.port.Number, tc.method, tc.path, tc.header, tc.query, got, tc.want)
		}
	}
	// A header match with the regex and the exact header both required.
	h := http.Header{"X-Canary": {"yes"}, "X-User": {"alice"}}
	if rule, _ := web.Routes.Match("GET", "/api/x", h, nil); rule == nil || rule.Route != "ns/c-old#prefix-api-2headers" {
		t.Errorf("two headers: %v", rule)
	}
	h.Set("X-User", "bob")
	if rule, _ := web.Routes.Match("GET", "/api/x", h, nil); rule == nil || rule.Route != "ns/c-old#prefix-api-header" {
		t.Errorf("regex header not met: %v", rule)
	}
}

func TestNoMatchIs404(t *testing.T) {
	st, err := compileYAML(t, `
routes:
- namespace: ns
  name: r
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: ns, name: web, port: 80}]
  rules:
  - matches: [{path: {type: MATCH_TYPE_EXACT, value: /only}}]
    backends: [{namespace: ns, name: v2, port: 80}]
`)
	if err != nil {
		t.Fatal(err)
	}
	web, _ := st.Lookup(netip.MustParseAddrPort("10.96.0.10:80"))
	if rule, _ := web.Routes.Match("GET", "/other", http.Header{}, nil); rule != nil {
		t.Errorf("matched %s", rule.Route)
	}
	// The gRPC port has no route of its own: the default.
	api, _ := st.Lookup(netip.MustParseAddrPort("10.96.0.10:9000"))
	if rule, _ := api.Routes.Match("POST", "/a.B/C", http.Header{}, nil); rule == nil || rule.Route != "default" {
		t.Errorf("port without routes: %v", rule)
	}
}

func TestPathModifier(t *testing.T) {
	pre := func(p string) *Match { return &Match{PathType: PathPrefix, Path: p} }
	for _, tc := range []struct {
		pm   PathModifier
		m    *Match
		in   string
		want string
	}{
		{PathModifier{Value: "/full"}, pre("/a"), "/a/b", "/full"},
		{PathModifier{Prefix: true, Value: "/one"}, pre("/prefix/one"), "/prefix/one/two", "/one/two"},
		{PathModifier{Prefix: true, Value: "/one"}, pre("/prefix/one"), "/prefix/one", "/one"},
		{PathModifier{Prefix: true, Value: "/one"}, pre("/prefix/one"), "/prefix/one/", "/one/"},
		{PathModifier{Prefix: true, Value: "/"}, pre("/strip"), "/strip/three", "/three"},
		{PathModifier{Prefix: true, Value: "/"}, pre("/strip"), "/strip", "/"},
		{PathModifier{Prefix: true, Value: "/new/"}, pre("/old"), "/old/x", "/new/x"},
		{PathModifier{Prefix: true, Value: "/api"}, pre("/"), "/foo", "/api/foo"},
		{PathModifier{Prefix: true, Value: "/x"}, &Match{PathType: Exact, Path: "/a"}, "/a", "/a"},
	} {
		if got := tc.pm.Apply(tc.m, tc.in); got != tc.want {
			t.Errorf("%+v on %q (match %q) = %q, want %q", tc.pm, tc.in, tc.m.Path, got, tc.want)
		}
	}
}

func TestRedirectLocation(t *testing.T) {
	pre := &Match{PathType: PathPrefix, Path: "/old"}
	for _, tc := range []struct {
		r                 Redirect
		scheme, host, pth string
		q                 string
		want              string
	}{
		{Redirect{}, "http", "web.ns:8080", "/old/a", "x=1", "http://web.ns:8080/old/a?x=1"},
		{Redirect{Scheme: "https"}, "http", "web.ns:8080", "/a", "", "https://web.ns/a"},
		{Redirect{Scheme: "https", Port: 8443}, "http", "web.ns", "/a", "", "https://web.ns:8443/a"},
		{Redirect{Hostname: "other", Port: 80}, "http", "web.ns:8080", "/a", "", "http://other/a"},
		{Redirect{Path: &PathModifier{Prefix: true, Value: "/new"}}, "http", "web.ns", "/old/a", "", "http://web.ns/new/a"},
		{Redirect{Hostname: "fd00::1"}, "http", "web", "/", "", "http://[fd00::1]/"},
	} {
		if got := tc.r.Location(pre, tc.scheme, tc.host, tc.pth, tc.q); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestHeaderModifier(t *testing.T) {
	h := http.Header{"A": {"1"}, "B": {"1"}, "C": {"1"}}
	(&HeaderModifier{Set: []HTTPHeader{{"A", "2"}}, Add: []HTTPHeader{{"B", "2"}, {"D", "1"}}, Remove: []string{"C"}}).Apply(h)
	want := http.Header{"A": {"2"}, "B": {"1", "2"}, "D": {"1"}}
	if len(h) != len(want) {
		t.Fatalf("%v, want %v", h, want)
	}
	for k, vs := range want {
		if strings.Join(h[k], ",") != strings.Join(vs, ",") {
			t.Errorf("%s: %v, want %v", k, h[k], vs)
		}
	}
}

func TestPickBackend(t *testing.T) {
	p := &Port{}
	b := func(w int32) Backend { return Backend{Port: p, Weight: w} }
	rng := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int64) int64 { return rng.Int64N(n) }
	if _, err := PickBackend([]Backend{b(0), b(0)}, rnd); err != ErrNoBackend {
		t.Errorf("all zero: %v, want ErrNoBackend", err)
	}
	if _, err := PickBackend(nil, rnd); err != ErrNoBackend {
		t.Errorf("none: %v, want ErrNoBackend", err)
	}
	// Weight 0 never picked, even on every value rnd can give.
	bs := []Backend{b(0), b(3), b(0), b(1), b(0)}
	for x := range int64(4) {
		got, err := PickBackend(bs, func(int64) int64 { return x })
		if err != nil || got.Weight == 0 {
			t.Fatalf("rnd %d: %+v %v", x, got, err)
		}
	}
	// 90/10 over 100,000 picks, within 5 sigma.
	bs = []Backend{b(90), b(10)}
	const n = 100_000
	first := 0
	for range n {
		got, _ := PickBackend(bs, rnd)
		if got == &bs[0] {
			first++
		}
	}
	sigma := math.Sqrt(n * 0.9 * 0.1)
	if d := math.Abs(float64(first) - 0.9*n); d > 5*sigma {
		t.Errorf("90/10: %d of %d to the first, off by %.0f > 5 sigma (%.0f)", first, n, d, 5*sigma)
	}
	// An unresolved backend answers for its share.
	bs = []Backend{{Weight: 1}, b(1)}
	if _, err := PickBackend(bs, func(int64) int64 { return 0 }); err != ErrNoBackend {
		t.Errorf("unresolved: %v", err)
	}
}
