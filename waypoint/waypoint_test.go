package waypoint

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const vip = "10.96.0.10"

func TestHTTPRouting(t *testing.T) {
	h := newHarness(t)
	c := h.httpClient(vip+":80", false)

	// Header match: the canary goes to v2; without the header no rule
	// matches. A longer path prefix beats a header match: /v1 with the
	// header goes to v1.
	code, _, e := get(t, c, "/shop", http.Header{"X-Canary": {"yes"}})
	if code != 200 || e.Pod != "web-v2-a" {
		t.Fatalf("canary: %d from %q", code, e.Pod)
	}
	if code, _, e := get(t, c, "/shop", http.Header{"X-Canary": {"no"}}); code != 404 {
		t.Fatalf("no canary: %d from %q", code, e.Pod)
	}
	if code, _, e := get(t, c, "/v1/x", http.Header{"X-Canary": {"yes"}}); code != 200 || !strings.HasPrefix(e.Pod, "web-v1-") {
		t.Fatalf("canary on /v1: %d from %q, want v1 (path prefix beats headers)", code, e.Pod)
	}
	code, hdr, e := get(t, c, "/v1/x?q=1", nil)
	if code != 200 || !strings.HasPrefix(e.Pod, "web-v1-") || e.Path != "/v1/x" || e.Query != "q=1" || e.Host != "web.shop" {
		t.Fatalf("v1: %d %+v", code, e)
	}
	if hdr.Get("X-Hop") != "" {
		t.Errorf("a header the backend named in Connection reached the caller")
	}
	// The upstream tunnel: opened as the waypoint (the pod's ztunnel only
	// accepts it), to the endpoint, carrying the caller.
	p := h.pods[netip.MustParseAddr(map[string]string{"web-v1-a": "10.1.0.1", "web-v1-b": "10.1.0.2"}[e.Pod])]
	last := p.lastConnect()
	if last.Peer != waypointID || last.Authority != netip.MustParseAddrPort(p.ip.String()+":8080") {
		t.Errorf("upstream CONNECT: peer %v authority %v", last.Peer, last.Authority)
	}
	if got := last.Header.Get("Forwarded"); got != "for=127.0.0.1" {
		t.Errorf("Forwarded = %q", got)
	}
	if got := last.Header.Get("X-Warren-Caller"); got != callerID.String() {
		t.Errorf("X-Warren-Caller = %q", got)
	}

	// Rewrite and header filters.
	code, hdr, e = get(t, c, "/api/items?x=1", http.Header{"X-Secret": {"s"}, "X-Keep": {"k"}})
	if code != 200 || e.Path != "/v2/items" || e.Host != "backend.internal" || e.Query != "x=1" {
		t.Errorf("rewrite: %d path %q host %q query %q", code, e.Path, e.Host, e.Query)
	}
	if e.Header.Get("X-Added") != "1" || e.Header.Get("X-Secret") != "" || e.Header.Get("X-Keep") != "k" {
		t.Errorf("request headers at the backend: %v", e.Header)
	}
	if hdr.Get("X-Route") != "rewrite" {
		t.Errorf("response header filter: %v", hdr)
	}
	// The rewrite rule needs GET: a POST to /api matches nothing.
	res, err := c.Post("http://web.shop/api/items", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body) // read to its end: the connection stays open
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("POST /api: %d, want 404", res.StatusCode)
	}

	for _, tc := range []struct {
		path     string
		code     int
		body     string
		location string
	}{
		{"/nothing", 404, "no route\n", ""},
		{"/old?a=b", 301, "", "http://new.example/new?a=b"},
		{"/zero", 500, "no backend\n", ""},
		{"/down", 503, "no healthy upstream\n", ""},
	} {
		code, hdr, e := get(t, c, tc.path, nil)
		if code != tc.code || e.Body != tc.body || hdr.Get("Location") != tc.location {
			t.Errorf("%s: %d %q location %q, want %d %q %q", tc.path, code, e.Body, hdr.Get("Location"), tc.code, tc.body, tc.location)
		}
	}

	// A request body reaches the backend whole.
	big := strings.Repeat("b", 1<<20)
	res, err = c.Post("http://web.shop/upload", "text/plain", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	io.Copy(&body, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(body.String(), `"Body":"`+big+`"`) {
		t.Errorf("upload: %d, %d bytes back", res.StatusCode, body.Len())
	}

	// Keep-alive: all of the above went over one tunnel to the waypoint,
	// and upstream connections are pooled, not one per request: once each
	// v1 endpoint has one, 50 more requests open none.
	connects := func() (n int64) {
		for _, p := range h.pods {
			n += p.connects.Load()
		}
		return n
	}
	for range 20 {
		if code, _, _ := get(t, c, "/v1/warm", nil); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if h.pods[netip.MustParseAddr("10.1.0.1")].connects.Load() == 0 || h.pods[netip.MustParseAddr("10.1.0.2")].connects.Load() == 0 {
		t.Fatal("20 requests did not reach both v1 endpoints")
	}
	before, up := h.tunnels.Load(), connects()
	for range 50 {
		if code, _, _ := get(t, c, "/v1/again", nil); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if n := h.tunnels.Load() - before; n != 0 {
		t.Errorf("%d new tunnels to the waypoint for 50 sequential requests, want 0", n)
	}
	if n := connects() - up; n > 0 {
		t.Errorf("%d new upstream tunnels for 50 sequential requests, want 0 (pooled)", n)
	}
	if h.tunnels.Load() != 1 {
		t.Errorf("%d tunnels to the waypoint for the whole test, want 1 (keep-alive)", h.tunnels.Load())
	}
}

// TestWeights sends 2,000 requests to a 90/10 split.
func TestWeights(t *testing.T) {
	h := newHarness(t)
	c := h.httpClient(vip+":80", false)
	const n = 2000
	var v1, v2, other atomic.Int64
	parallel(t, n, 8, func(int) {
		code, _, e := get(t, c, "/split", nil)
		switch {
		case code != 200:
			other.Add(1)
		case e.Pod == "web-v2-a":
			v2.Add(1)
		case strings.HasPrefix(e.Pod, "web-v1-"):
			v1.Add(1)
		default:
			other.Add(1)
		}
	})
	sigma := math.Sqrt(n * 0.1 * 0.9)
	t.Logf("90/10 split over %d requests: v1 %d, v2 %d (expected 200 ± %.1f per sigma)", n, v1.Load(), v2.Load(), sigma)
	if other.Load() != 0 {
		t.Fatalf("%d requests failed", other.Load())
	}
	if d := math.Abs(float64(v2.Load()) - 0.1*n); d > 5*sigma {
		t.Errorf("v2 got %d of %d: %.0f off, beyond 5 sigma (%.0f)", v2.Load(), n, d, 5*sigma)
	}
	// Both v1 pods share v1's part (power of two choices).
	a, b := h.pods[netip.MustParseAddr("10.1.0.1")].served.Load(), h.pods[netip.MustParseAddr("10.1.0.2")].served.Load()
	if a < 400 || b < 400 {
		t.Errorf("v1 pods served %d and %d of %d", a, b, v1.Load())
	}
}

// TestRetry: a backend failing 30 % of its requests with 503, behind a
// rule retrying 503 five times, fails fewer than 0.5 % of 2,000 requests.
func TestRetry(t *testing.T) {
	h := newHarness(t)
	c := h.httpClient(vip+":80", false)
	const n = 2000
	var ok, failed atomic.Int64
	parallel(t, n, 8, func(int) {
		if code, _, _ := get(t, c, "/flaky", nil); code == 200 {
			ok.Add(1)
		} else {
			failed.Add(1)
		}
	})
	var served, flaky int64
	for _, p := range h.pods {
		served += p.served.Load()
		flaky += p.flaky.Load()
	}
	rate := float64(ok.Load()) / n
	t.Logf("retry: %d of %d succeeded (%.2f %%); backends answered %d attempts, %d of them 503 (%.1f %%)",
		ok.Load(), n, 100*rate, served, flaky, 100*float64(flaky)/float64(served))
	if rate < 0.995 {
		t.Errorf("success rate %.4f < 0.995", rate)
	}
	// The backends did fail about 30 % of attempts (binomial, 5 sigma).
	if f := float64(flaky) / float64(served); math.Abs(f-0.3) > 5*math.Sqrt(0.3*0.7/float64(served)) {
		t.Errorf("backends failed %.3f of attempts, not about 0.3: the test is not testing retries", f)
	}
	// Each request went out at most six times.
	if served > n*6 {
		t.Errorf("%d attempts for %d requests", served, n)
	}

	// Bodies are replayed whole on retries.
	const posts = 300
	var bad, lost atomic.Int64
	parallel(t, posts, 4, func(i int) {
		body := strings.Repeat(fmt.Sprintf("%04d", i), 2048)
		res, err := c.Post("http://web.shop/flaky", "text/plain", strings.NewReader(body))
		if err != nil {
			bad.Add(1)
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		switch {
		case res.StatusCode != 200:
			lost.Add(1)
		case !strings.Contains(string(b), `"Body":"`+body+`"`):
			bad.Add(1)
		}
	})
	t.Logf("retry with 8 KiB bodies: %d of %d failed after retries, %d corrupted", lost.Load(), posts, bad.Load())
	if bad.Load() != 0 || lost.Load() > 3 {
		t.Errorf("bodies: %d corrupted, %d failed", bad.Load(), lost.Load())
	}
}

// TestTimeout: a backend that never answers, behind a 300 ms route
// timeout: 504 in about that time, and the backend sees the request end.
func TestTimeout(t *testing.T) {
	h := newHarness(t)
	c := h.httpClient(vip+":80", false)
	start := time.Now()
	code, _, e := get(t, c, "/slow", nil)
	took := time.Since(start)
	if code != http.StatusGatewayTimeout || e.Body != "upstream request timeout\n" {
		t.Fatalf("%d %q, want 504", code, e.Body)
	}
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("504 after %v, want 300ms (plus margin)", took)
	}
	waitFor(t, "the backend to see the request cancelled", func() bool {
		var n int64
		for _, p := range h.pods {
			n += p.cancelled.Load()
		}
		return n == 1
	})
	// The waypoint goes on serving.
	if code, _, _ := get(t, c, "/v1/after", nil); code != 200 {
		t.Errorf("after the timeout: %d", code)
	}
}

// TestH2C: HTTP/2 with prior knowledge from the caller; HTTP/1.1 or h2c to
// the backend as its port says.
func TestH2C(t *testing.T) {
	h := newHarness(t)
	c := h.httpClient(vip+":81", true)
	for _, tc := range []struct {
		path  string
		proto int
	}{{"/v1/a", 1}, {"/h2/b", 2}} {
		req, _ := http.NewRequest(http.MethodGet, "http://web.shop"+tc.path, nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 || res.StatusCode != 200 || !strings.Contains(string(b), fmt.Sprintf(`"Proto":%d`, tc.proto)) {
			t.Errorf("%s: caller got HTTP/%d %d, backend saw %s; want HTTP/2 and backend HTTP/%d", tc.path, res.ProtoMajor, res.StatusCode, b, tc.proto)
		}
	}
	if code, _, e := get(t, c, "/c", http.Header{"X-Canary": {"yes"}}); code != 200 || e.Pod != "web-v2-a" {
		t.Errorf("h2 canary: %d %q", code, e.Pod)
	}
}

func TestGRPC(t *testing.T) {
	h := newHarness(t)
	tc := h.grpcClient(vip + ":9000")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Unary with initial and trailing metadata.
	var hdr, trl metadata.MD
	mctx := metadata.AppendToOutgoingContext(ctx, "x-echo-initial", "hello", "x-echo-trailing-bin", string([]byte{0, 1, 2}))
	res, err := tc.UnaryCall(mctx, &testpb.SimpleRequest{ResponseSize: 314159, Payload: &testpb.Payload{Body: make([]byte, 271828)}}, grpc.Header(&hdr), grpc.Trailer(&trl))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetPayload().GetBody()) != 314159 || !strings.HasPrefix(res.GetServerId(), "web-v1-") {
		t.Errorf("unary: %d bytes from %q", len(res.GetPayload().GetBody()), res.GetServerId())
	}
	if got := hdr.Get("x-echo-initial"); len(got) != 1 || got[0] != "hello" {
		t.Errorf("initial metadata %v", hdr)
	}
	if got := trl.Get("x-echo-trailing-bin"); len(got) != 1 || got[0] != string([]byte{0, 1, 2}) {
		t.Errorf("trailing metadata %v", trl)
	}

	// Server streaming: every message, then the trailers.
	sizes := []int32{31415, 9, 2653, 58979}
	var params []*testpb.ResponseParameters
	for _, s := range sizes {
		params = append(params, &testpb.ResponseParameters{Size: s})
	}
	stream, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sizes {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if len(m.GetPayload().GetBody()) != int(s) {
			t.Errorf("message %d: %d bytes, want %d", i, len(m.GetPayload().GetBody()), s)
		}
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("end of stream: %v", err)
	}
	if got := stream.Trailer().Get("x-sent"); len(got) != 1 || got[0] != "4" {
		t.Errorf("stream trailer %v", stream.Trailer())
	}

	// Ping-pong: each response comes before the next request is sent, so
	// the waypoint must stream both ways.
	duplex, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sizes {
		if err := duplex.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: s}}}); err != nil {
			t.Fatal(err)
		}
		m, err := duplex.Recv()
		if err != nil || len(m.GetPayload().GetBody()) != int(s) {
			t.Fatalf("ping-pong %d: %v", i, err)
		}
	}
	duplex.CloseSend()
	if _, err := duplex.Recv(); err != io.EOF {
		t.Errorf("ping-pong end: %v", err)
	}

	// Client streaming, and statuses through the waypoint.
	up, err := tc.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sizes {
		up.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, s)}})
	}
	if r, err := up.CloseAndRecv(); err != nil || r.GetAggregatedPayloadSize() != 31415+9+2653+58979 {
		t.Errorf("client streaming: %v %v", r, err)
	}
	// The route's 300 ms timeout ends a stream the client leaves open:
	// DEADLINE_EXCEEDED from the waypoint, and the backend sees it end.
	start := time.Now()
	slow, err := tc.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	err = slow.RecvMsg(new(testpb.StreamingInputCallResponse))
	took := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("open stream past the route timeout: %v, want DEADLINE_EXCEEDED", err)
	}
	if took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("stream ended after %v, want 300ms (plus margin)", took)
	}
	waitFor(t, "the backend to see the stream end", func() bool {
		var n int64
		for _, p := range h.pods {
			n += p.cancelled.Load()
		}
		return n == 1
	})

	_, err = tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
	if s, _ := status.FromError(err); s.Code() != codes.NotFound || s.Message() != "nope" {
		t.Errorf("status through the waypoint: %v", err)
	}
	// A method no route matches: the waypoint answers UNIMPLEMENTED itself.
	_, err = tc.UnimplementedCall(ctx, &testpb.Empty{})
	if s, _ := status.FromError(err); s.Code() != codes.Unimplemented {
		t.Errorf("unrouted method: %v", err)
	}
}

func TestWebSocket(t *testing.T) {
	h := newHarness(t)
	conn := h.tunnel(t, vip+":80")
	cfg, err := websocket.NewConfig("ws://web.shop/ws", "http://web.shop/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("upgrade through the waypoint: %v", err)
	}
	defer ws.Close()
	for i := range 20 {
		msg := fmt.Sprintf("message %d %s", i, strings.Repeat("w", i*1000))
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("echo %d: %v (%d bytes)", i, err, len(got))
		}
	}
}

func TestTCPPassthrough(t *testing.T) {
	h := newHarness(t)
	conn := h.tunnel(t, vip+":5000")
	msg := strings.Repeat("not http at all\r\n", 1000)
	go io.WriteString(conn, msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != msg {
		t.Fatalf("echo: %v", err)
	}
	// A VIP:port the waypoint does not front is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := h.dial(ctx, "10.96.0.99:80"); err == nil {
		c.Close()
		t.Error("tunnel to an unknown service opened")
	}
}

// TestMalformed sends broken HTTP/1.1 over tunnels: each gets a 4xx, and
// the waypoint keeps serving.
func TestMalformed(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"two Content-Lengths", "POST /v1 HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400},
		{"bad Transfer-Encoding", "POST /v1 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"oversized header", "GET /v1 HTTP/1.1\r\nHost: web\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", 431},
		{"no Host", "GET /v1 HTTP/1.1\r\n\r\n", 400},
		{"bad request line", "GET /v1 HTTP/1.1 extra\r\nHost: web\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := h.tunnel(t, vip+":80")
			defer conn.Close()
			go io.WriteString(conn, tc.req)
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			res.Body.Close()
			if res.StatusCode != tc.want {
				t.Errorf("status %d, want %d", res.StatusCode, tc.want)
			}
		})
	}
	c := h.httpClient(vip+":80", false)
	if code, _, _ := get(t, c, "/v1/still", nil); code != 200 {
		t.Errorf("after malformed requests: %d", code)
	}
}

// TestSmuggling sends Content-Length with Transfer-Encoding: chunked, read
// one way a request with a second one hidden in its body. net/http (and so
// the waypoint) takes the chunked framing and drops Content-Length, as RFC
// 9112 6.3 asks of an intermediary, and re-frames the request upstream: the
// backend sees one request whose body holds the would-be second one, and
// never a request to /smuggled.
func TestSmuggling(t *testing.T) {
	h := newHarness(t)
	conn := h.tunnel(t, vip+":80")
	defer conn.Close()
	hidden := "GET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n"
	req := "POST /v1 HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(hidden), hidden)
	go io.WriteString(conn, req)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 && res.StatusCode != 400 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if res.StatusCode == 200 && (!strings.Contains(string(b), `"Path":"/v1"`) || !strings.Contains(string(b), "GET /smuggled") || strings.Contains(string(b), "Content-Length")) {
		t.Errorf("backend saw %s", b)
	}
	// Nothing more comes back on the connection: no second response.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if res, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("a second response, %d: a request was smuggled", res.StatusCode)
	}
	for _, p := range h.pods {
		if n := p.served.Load(); n > 1 {
			t.Errorf("%s served %d requests", p.name, n)
		}
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t)
	c := h.httpClient(vip+":80", false)
	for range 3 {
		if code, _, _ := get(t, c, "/m", http.Header{"X-Canary": {"yes"}}); code != 200 {
			t.Fatal(code)
		}
	}
	get(t, c, "/nothing", nil)
	res, err := c.Post("http://web.shop/upload", "text/plain", strings.NewReader("12345"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	tc := h.grpcClient(vip + ":9000")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound)}})

	m := h.wp.metrics
	src := []string{"frontend-1", "shop", callerID.String()}
	labels := func(code, grpcStatus, method, route string, dst []string, svc string) []string {
		return append(append(append([]string{code, grpcStatus, method, route}, src...), dst...), svc)
	}
	v2 := []string{"web-v2-a", "shop", v2ID.String()}
	none := []string{unknown, unknown, unknown}
	canary := labels("200", "-", "GET", "shop/web#canary", v2, "shop/web-v2")
	// Requests are recorded when their handler returns, which may be just
	// after the caller read the response.
	waitFor(t, "the metrics", func() bool {
		return testutil.ToFloat64(m.requests.WithLabelValues(canary...)) == 3 &&
			testutil.ToFloat64(m.requests.WithLabelValues(labels("404", "-", "GET", unknown, none, "shop/web")...)) == 1
	})
	if got := testutil.CollectAndCount(m.duration); got < 3 {
		t.Errorf("duration series: %d", got)
	}
	upload := labels("200", "-", "POST", "shop/web#v1", nil, "shop/web-v1")
	var up float64
	for _, dst := range [][]string{{"web-v1-a", "shop", v1ID.String()}, {"web-v1-b", "shop", v1ID.String()}} {
		l := labels("200", "-", "POST", "shop/web#v1", dst, "shop/web-v1")
		up += testutil.ToFloat64(m.reqBytes.WithLabelValues(l...))
		if got := testutil.ToFloat64(m.respBytes.WithLabelValues(l...)); got != 0 && got != float64(n) {
			t.Errorf("response bytes %v, want %d", got, n)
		}
	}
	_ = upload
	if up != 5 {
		t.Errorf("request bytes of the upload: %v, want 5", up)
	}
	var grpcNotFound float64
	for _, dst := range [][]string{{"web-v1-a", "shop", v1ID.String()}, {"web-v1-b", "shop", v1ID.String()}} {
		grpcNotFound += testutil.ToFloat64(m.requests.WithLabelValues(labels("200", "5", "POST", "shop/grpc#0", dst, "shop/web-v1")...))
	}
	if grpcNotFound != 1 {
		t.Errorf("gRPC NOT_FOUND recorded %v times", grpcNotFound)
	}
	// The histogram's count for the canary series.
	if err := testutil.GatherAndCompare(h.wp.Registry(), strings.NewReader(`
# HELP warren_waypoint_config_updates_total Configurations offered to the waypoint, by result (applied, rejected).
# TYPE warren_waypoint_config_updates_total counter
warren_waypoint_config_updates_total{result="applied"} 1
`), "warren_waypoint_config_updates_total"); err != nil {
		t.Error(err)
	}
}

// parallel runs f(0..n-1) on workers goroutines.
func parallel(t testing.TB, n, workers int, f func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
