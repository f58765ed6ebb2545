package waypoint

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/identity/identitytest"
	"github.com/warrenmesh/warren/waypoint/model"
)

var (
	callerID   = identity.New("shop", "frontend")
	waypointID = identity.New("shop", "waypoint")
	v1ID       = identity.New("shop", "web-v1")
	v2ID       = identity.New("shop", "web-v2")
)

// Target ports of the pods' apps, as the Services map them.
const (
	httpPort = 8080
	grpcPort = 9090
	tcpPort  = 7000
)

// config is the mesh the harness serves: Service shop/web fronted by the
// waypoint shop/wp, whose routes send to shop/web-v1 (pods v1-a, v1-b) and
// shop/web-v2 (pod v2-a).
const config = `
workloads:
- {uid: frontend-1, namespace: shop, name: frontend-1, ips: ["127.0.0.1"], identity: "spiffe://cluster.local/ns/shop/sa/frontend"}
- {uid: v1-a, namespace: shop, name: web-v1-a, ips: ["10.1.0.1"]}
- {uid: v1-b, namespace: shop, name: web-v1-b, ips: ["10.1.0.2"]}
- {uid: v2-a, namespace: shop, name: web-v2-a, ips: ["10.1.0.3"]}
services:
- namespace: shop
  name: web
  waypoint: shop/wp
  vips: ["10.96.0.10"]
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: http2-api, port: 81, targetPort: 8080}
  - {name: grpc, port: 9000, targetPort: 9090}
  - {name: echo, port: 5000, targetPort: 7000}
  endpoints: &all
  - {ip: 10.1.0.1, ready: true, enrolled: true, identity: "spiffe://cluster.local/ns/shop/sa/web-v1", workloadUid: v1-a}
  - {ip: 10.1.0.2, ready: true, enrolled: true, identity: "spiffe://cluster.local/ns/shop/sa/web-v1", workloadUid: v1-b}
  - {ip: 10.1.0.3, ready: true, enrolled: true, identity: "spiffe://cluster.local/ns/shop/sa/web-v2", workloadUid: v2-a}
- namespace: shop
  name: web-v1
  vips: ["10.96.0.11"]
  ports: &ports
  - {name: http, port: 80, targetPort: 8080}
  - {name: http2, port: 81, targetPort: 8080}
  - {name: grpc, port: 9000, targetPort: 9090}
  endpoints:
  - {ip: 10.1.0.1, ready: true, enrolled: true, identity: "spiffe://cluster.local/ns/shop/sa/web-v1", workloadUid: v1-a}
  - {ip: 10.1.0.2, ready: true, enrolled: true, identity: "spiffe://cluster.local/ns/shop/sa/web-v1", workloadUid: v1-b}
- namespace: shop
  name: web-v2
  vips: ["10.96.0.12"]
  ports: *ports
  endpoints:
  - {ip: 10.1.0.3, ready: true, enrolled: true, identity: "spiffe://cluster.local/ns/shop/sa/web-v2", workloadUid: v2-a}
- namespace: shop
  name: down
  vips: ["10.96.0.13"]
  ports: *ports
  endpoints:
  - {ip: 10.1.0.9, ready: false, enrolled: true, identity: "spiffe://cluster.local/ns/shop/sa/down"}
routes:
- namespace: shop
  name: web
  kind: ROUTE_KIND_HTTP
  createdUnix: 1000
  parents: [{namespace: shop, name: web, port: 80}, {namespace: shop, name: web, port: 81}]
  rules:
  - name: canary
    matches: [{headers: [{name: x-canary, value: "yes"}]}]
    backends: [{namespace: shop, name: web-v2, port: 80}]
  - name: split
    matches: [{path: {value: /split}}]
    backends: [{namespace: shop, name: web-v1, port: 80, weight: 90}, {namespace: shop, name: web-v2, port: 80, weight: 10}]
  - name: flaky
    matches: [{path: {value: /flaky}}]
    backends: [{namespace: shop, name: web-v1, port: 80}]
    retry: {attempts: 5, codes: [503], backoffMs: 1}
  - name: slow
    matches: [{path: {value: /slow}}]
    backends: [{namespace: shop, name: web-v1, port: 80}]
    timeouts: {requestMs: 300}
  - name: redirect
    matches: [{path: {type: MATCH_TYPE_EXACT, value: /old}}]
    filters: [{requestRedirect: {hostname: new.example, path: {replaceFullPath: /new}, statusCode: 301}}]
  - name: rewrite
    matches: [{path: {value: /api}, method: GET}]
    filters:
    - urlRewrite: {hostname: backend.internal, path: {replacePrefixMatch: /v2}}
    - requestHeaderModifier: {set: [{name: x-added, value: "1"}], remove: [x-secret]}
    - responseHeaderModifier: {add: [{name: x-route, value: rewrite}]}
    backends: [{namespace: shop, name: web-v1, port: 80}]
  - name: zero
    matches: [{path: {value: /zero}}]
    backends: [{namespace: shop, name: web-v2, port: 80, weight: 0}]
  - name: down
    matches: [{path: {value: /down}}]
    backends: [{namespace: shop, name: down, port: 80}]
  - name: h2
    matches: [{path: {value: /h2}}]
    backends: [{namespace: shop, name: web-v1, port: 81}]
  - name: v1
    matches: [{path: {value: /v1}}, {path: {value: /ws}}, {path: {value: /upload}}]
    backends: [{namespace: shop, name: web-v1, port: 80}]
- namespace: shop
  name: grpc
  kind: ROUTE_KIND_GRPC
  parents: [{namespace: shop, name: web, port: 9000}]
  rules:
  - matches: [{grpc: {service: grpc.testing.TestService}}]
    backends: [{namespace: shop, name: web-v1, port: 9000}]
  - name: slow
    matches: [{grpc: {service: grpc.testing.TestService, method: StreamingInputCall}}]
    backends: [{namespace: shop, name: web-v1, port: 9000}]
    timeouts: {requestMs: 300}
`

// harness is a waypoint between a caller's HBONE pool and fake destination
// ztunnels (real hbone servers) in front of real backends, all on loopback.
type harness struct {
	t      testing.TB
	ca     *identitytest.CA
	wp     *Waypoint
	wpAddr netip.AddrPort
	caller *hbone.Pool
	pods   map[netip.Addr]*pod
	// tunnels counts the HBONE streams the caller opened to the waypoint.
	tunnels atomic.Int64
}

// pod is an endpoint: its ztunnel and its apps.
type pod struct {
	name string
	ip   netip.Addr
	id   identity.ID
	zt   *hbone.Server
	addr netip.AddrPort // the ztunnel's HBONE listener
	apps map[uint16]string
	// connects counts the CONNECTs its ztunnel accepted; headers keeps
	// the last one's.
	connects atomic.Int64
	mu       sync.Mutex
	last     *hbone.Request
	// flaky: 503s the /flaky handler answered.
	served, flaky atomic.Int64
	cancelled     atomic.Int64 // /slow requests whose context ended
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, ca: identitytest.NewCA(t), pods: map[netip.Addr]*pod{}}
	for _, p := range []struct {
		name, ip string
		id       identity.ID
	}{{"web-v1-a", "10.1.0.1", v1ID}, {"web-v1-b", "10.1.0.2", v1ID}, {"web-v2-a", "10.1.0.3", v2ID}} {
		h.startPod(p.name, netip.MustParseAddr(p.ip), p.id)
	}
	cfg, err := model.ParseStatic([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	h.wp, err = New(Options{
		Self:   "shop/wp",
		Certs:  identity.NewCertSource(h.ca.Issue(t, waypointID)),
		Roots:  h.ca.Roots(),
		Logger: testLogger(t),
		TunnelAddr: func(a netip.Addr) netip.AddrPort {
			if p, ok := h.pods[a]; ok {
				return p.addr
			}
			return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1) // refused
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.wp.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.wpAddr = ln.Addr().(*net.TCPAddr).AddrPort()
	go h.wp.Serve(ln)
	t.Cleanup(func() { h.wp.Close() })

	certs := identity.NewCertSource(h.ca.Issue(t, callerID))
	h.caller, err = hbone.NewPool(hbone.PoolOptions{TLSConfig: func(k hbone.Key) (*tls.Config, error) {
		return identity.ClientConfig(identity.TLSOptions{Certs: certs, Roots: h.ca.Roots(), Authorize: identity.ExpectID(k.Dst)})
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.caller.Close() })
	return h
}

// startPod starts a pod's apps (HTTP/1.1 and h2c, gRPC, TCP echo) and its
// ztunnel, which accepts only the waypoint's identity.
func (h *harness) startPod(name string, ip netip.Addr, id identity.ID) {
	t := h.t
	p := &pod{name: name, ip: ip, id: id, apps: map[uint16]string{}}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	hl := listen()
	p.apps[httpPort] = hl.Addr().String()
	hs := &http.Server{Handler: p.httpHandler(), Protocols: new(http.Protocols)}
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })

	gl := listen()
	p.apps[grpcPort] = gl.Addr().String()
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, &testService{pod: p})
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)

	tl := listen()
	p.apps[tcpPort] = tl.Addr().String()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	sc, err := identity.ServerConfig(identity.TLSOptions{Certs: identity.NewCertSource(h.ca.Issue(t, id)), Roots: h.ca.Roots(), Authorize: identity.ExpectID(waypointID)})
	if err != nil {
		t.Fatal(err)
	}
	p.zt = &hbone.Server{TLSConfig: sc, Handler: func(ctx context.Context, r *hbone.Request) (net.Conn, error) {
		p.connects.Add(1)
		p.mu.Lock()
		p.last = r
		p.mu.Unlock()
		if r.Authority.Addr() != p.ip {
			return nil, hbone.Forbidden(fmt.Errorf("%s is not this pod", r.Authority))
		}
		app, ok := p.apps[r.Authority.Port()]
		if !ok {
			return nil, errors.New("no app on that port")
		}
		return (&net.Dialer{}).DialContext(ctx, "tcp", app)
	}}
	zl := listen()
	p.addr = zl.Addr().(*net.TCPAddr).AddrPort()
	go p.zt.Serve(zl)
	t.Cleanup(func() { p.zt.Close() })
	h.pods[ip] = p
}

func (p *pod) lastConnect() *hbone.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// echo is what the pods' HTTP app answers.
type echo struct {
	Pod, Method, Path, Query, Host string
	Proto                          int
	Header                         http.Header
	Body                           string
}

func (p *pod) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) {
		for {
			var msg string
			if err := websocket.Message.Receive(c, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(c, msg); err != nil {
				return
			}
		}
	}))
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only when the waypoint gives up
		p.cancelled.Add(1)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p.served.Add(1)
		if strings.HasPrefix(r.URL.Path, "/flaky") && rand.Float64() < 0.3 {
			p.flaky.Add(1)
			http.Error(w, "flaky", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Pod", p.name)
		w.Header().Set("Connection", "x-hop") // hop-by-hop: the waypoint drops it
		w.Header().Set("X-Hop", "1")
		json.NewEncoder(w).Encode(echo{Pod: p.name, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			Host: r.Host, Proto: r.ProtoMajor, Header: r.Header, Body: string(body)})
	})
	return mux
}

// testService is grpc.testing.TestService: echo with metadata, streams.
type testService struct {
	testpb.UnimplementedTestServiceServer
	pod *pod
}

func (s *testService) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-echo-initial"); len(v) > 0 {
		grpc.SetHeader(ctx, metadata.Pairs("x-echo-initial", v[0]))
	}
	if v := md.Get("x-echo-trailing-bin"); len(v) > 0 {
		grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailing-bin", v[0]))
	}
	if st := in.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{'x'}, int(in.GetResponseSize()))}, ServerId: s.pod.name}, nil
}

func (s *testService) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, rp := range in.GetResponseParameters() {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, rp.GetSize())}}); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("x-sent", fmt.Sprint(len(in.GetResponseParameters()))))
	return nil
}

func (s *testService) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	n := 0
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)})
		}
		if err != nil {
			s.pod.cancelled.Add(1)
			return err
		}
		n += len(in.GetPayload().GetBody())
	}
}

func (s *testService) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		for _, rp := range in.GetResponseParameters() {
			if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, rp.GetSize())}}); err != nil {
				return err
			}
		}
	}
}

// dial opens a tunnel to the waypoint as the caller's ztunnel would.
func (h *harness) dial(ctx context.Context, authority string) (net.Conn, error) {
	h.tunnels.Add(1)
	return h.caller.Dial(ctx, hbone.Key{Src: callerID, Dst: waypointID, Addr: h.wpAddr}, authority, nil)
}

// tunnel is a tunnel to the waypoint for authority, closed at the test's
// end.
func (h *harness) tunnel(t testing.TB, authority string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := h.dial(ctx, authority)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// httpClient sends every request through tunnels to authority, HTTP/1.1
// or h2c with prior knowledge.
func (h *harness) httpClient(authority string, h2 bool) *http.Client {
	tr := &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return h.dial(ctx, authority) },
		DisableCompression: true,
		Protocols:          new(http.Protocols),
	}
	if h2 {
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (h *harness) grpcClient(authority string) testpb.TestServiceClient {
	cc, err := grpc.NewClient("passthrough:///"+authority,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return h.dial(ctx, authority) }))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// get sends a GET and returns the status, the header and the echo.
func get(t testing.TB, c *http.Client, path string, hdr http.Header) (int, http.Header, echo) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://web.shop"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", path, err)
	}
	var e echo
	if res.Header.Get("X-Pod") != "" {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("GET %s: %v in %q", path, err, b)
		}
	} else {
		e.Body = string(b)
	}
	return res.StatusCode, res.Header, e
}
