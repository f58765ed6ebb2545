package observe

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"log/slog"

	"google.golang.org/protobuf/proto"

	flowv1 "github.com/warrenmesh/warren/api/proto/flow/v1"
	"github.com/warrenmesh/warren/nodeagent"
)

func TestFilterFromFlags(t *testing.T) {
	f, err := FilterFromFlags("shop", "web-1", "shop/", "10.0.0.7", []string{"closed,reset", "FAILED"})
	if err != nil {
		t.Fatal(err)
	}
	want := []flowv1.Verdict{flowv1.Verdict_CLOSED, flowv1.Verdict_RESET, flowv1.Verdict_FAILED}
	if f.Namespace != "shop" || f.Pod != "web-1" || f.From != "shop/" || f.To != "10.0.0.7" || len(f.Verdicts) != 3 {
		t.Fatalf("filter %v", f)
	}
	for i, v := range want {
		if f.Verdicts[i] != v {
			t.Errorf("verdict %d: %v, want %v", i, f.Verdicts[i], v)
		}
	}
	for _, bad := range [][]string{{"dropped"}, {"closed,forwarded"}} {
		if _, err := FilterFromFlags("", "", "", "", bad); err == nil {
			t.Errorf("verdicts %v accepted", bad)
		}
	}
	if _, err := FilterFromFlags("", "a/b/c", "", "", nil); err == nil {
		t.Error("pod a/b/c accepted")
	}
	if _, err := Formatter("yaml"); err == nil {
		t.Error("output yaml accepted")
	}
}

var sample = &flowv1.FlowEvent{
	TimeUnixNano:  time.Date(2026, 1, 2, 15, 4, 5, 123_000_000, time.Local).UnixNano(),
	Node:          "node-1",
	Verdict:       flowv1.Verdict_CLOSED,
	Hop:           "app",
	Source:        &flowv1.Endpoint{Ip: "10.244.1.5", Port: 43210, Namespace: "shop", Pod: "web-1", Workload: "web"},
	Destination:   &flowv1.Endpoint{Ip: "10.96.0.20", Port: 80},
	Via:           "127.0.0.1:15001",
	BytesSent:     1536,
	BytesReceived: 3 << 20,
	SrttUs:        250,
	Retransmits:   2,
	DurationNanos: int64(1500 * time.Millisecond),
}

func TestTable(t *testing.T) {
	line := Table{}.Format(sample)
	fields := strings.Fields(line)
	want := []string{"15:04:05.123", "node-1", "CLOSED", "app", "shop/web-1", "10.96.0.20:80", "1.5", "KiB", "3.0", "MiB", "250µs", "2", "1.5s"}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("table line:\n%q\nwant fields %q", line, want)
	}
	h := Table{}.Header()
	if got := strings.Index(line, "shop/web-1"); got != strings.Index(h, "SOURCE") {
		t.Errorf("SOURCE column at %d, value at %d", strings.Index(h, "SOURCE"), got)
	}
	if got := strings.Index(line, "10.96.0.20:80"); got != strings.Index(h, "DESTINATION") {
		t.Errorf("DESTINATION column at %d, value at %d", strings.Index(h, "DESTINATION"), got)
	}
}

func TestEndpointAndBytes(t *testing.T) {
	for _, c := range []struct {
		ep   *flowv1.Endpoint
		port bool
		want string
	}{
		{&flowv1.Endpoint{Ip: "10.0.0.1", Port: 80}, true, "10.0.0.1:80"},
		{&flowv1.Endpoint{Ip: "10.0.0.1", Port: 80}, false, "10.0.0.1"},
		{&flowv1.Endpoint{Ip: "fd00::1", Port: 443}, true, "[fd00::1]:443"},
		{&flowv1.Endpoint{Ip: "10.0.0.1", Port: 8080, Namespace: "db", Pod: "pg-0"}, true, "db/pg-0:8080"},
		{&flowv1.Endpoint{Ip: "10.96.154.233", Port: 80, Namespace: "shop", Service: "web"}, true, "shop/web:80"},
		{&flowv1.Endpoint{Ip: "fd00:10:96::1", Port: 443, Namespace: "shop", Service: "web"}, true, "shop/web:443"},
		{nil, true, "?"},
	} {
		if got := Endpoint(c.ep, c.port); got != c.want {
			t.Errorf("Endpoint(%v) = %q, want %q", c.ep, got, c.want)
		}
	}
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 30: "5.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// A destination that is a Service's cluster IP shows as namespace/service:port.
func TestTableService(t *testing.T) {
	e := proto.Clone(sample).(*flowv1.FlowEvent)
	e.Destination = &flowv1.Endpoint{Ip: "10.96.154.233", Port: 80, Namespace: "db", Service: "pg"}
	line := Table{}.Format(e)
	if got, want := strings.Fields(line)[5], "db/pg:80"; got != want {
		t.Errorf("destination %q, want %q: %q", got, want, line)
	}
	if got := strings.Index(line, "db/pg:80"); got != strings.Index(Table{}.Header(), "DESTINATION") {
		t.Errorf("DESTINATION column at %d, value at %d", strings.Index(Table{}.Header(), "DESTINATION"), got)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(JSON{}.Format(e)), &m); err != nil {
		t.Fatal(err)
	}
	dst := m["destination"].(map[string]any)
	if dst["service"] != "pg" || dst["namespace"] != "db" || dst["ip"] != "10.96.154.233" || dst["pod"] != nil {
		t.Errorf("json destination: %v", dst)
	}
}

func TestJSON(t *testing.T) {
	line := JSON{}.Format(sample)
	if strings.Contains(line, "\n") {
		t.Fatalf("not one line: %q", line)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	if m["verdict"] != "CLOSED" || m["via"] != "127.0.0.1:15001" || m["bytes_received"] != "3145728" ||
		m["source"].(map[string]any)["pod"] != "web-1" {
		t.Errorf("json: %s", line)
	}
}

// source is a FlowSource fed by the test.
type source struct {
	mu   sync.Mutex
	subs []func(*nodeagent.FlowEvent) bool
	chs  []chan nodeagent.FlowEvent
}

func (s *source) Subscribe(filter func(*nodeagent.FlowEvent) bool) (<-chan nodeagent.FlowEvent, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan nodeagent.FlowEvent, 16)
	s.subs, s.chs = append(s.subs, filter), append(s.chs, ch)
	return ch, func() {}
}

func (s *source) publish(e nodeagent.FlowEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.subs {
		if f == nil || f(&e) {
			s.chs[i] <- e
		}
	}
}

func (s *source) subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// Stream against the agent's real flow server: the filter travels to the
// server, which sends only what matches.
func TestStream(t *testing.T) {
	src := &source{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- nodeagent.ServeFlows(ctx, addr, &nodeagent.FlowServer{Node: "n1", Source: src}, slog.New(slog.DiscardHandler))
	}()
	out := make(chan *flowv1.FlowEvent, 4)
	streamErr := make(chan error, 1)
	filter, _ := FilterFromFlags("shop", "", "", "db/", []string{"closed"})
	deadline := time.Now().Add(10 * time.Second)
	go func() {
		for time.Now().Before(deadline) { // until the server listens
			if err := Stream(ctx, addr, filter, out); ctx.Err() != nil || err == nil {
				streamErr <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for src.subscribers() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no subscriber")
		}
		time.Sleep(10 * time.Millisecond)
	}
	shop := nodeagent.PodMeta{Namespace: "shop", Name: "web-1", Workload: "web"}
	base := nodeagent.FlowEvent{Kind: nodeagent.FlowEnd, End: nodeagent.EndClosed, Hop: nodeagent.HopApp,
		SourceIP: netip.MustParseAddr("10.244.1.5"), Local: netip.MustParseAddrPort("127.0.0.1:40000"),
		Remote: netip.MustParseAddrPort("127.0.0.1:15001"), Destination: netip.MustParseAddrPort("10.96.0.20:80"),
		DestinationPod: nodeagent.PodMeta{Namespace: "db", Service: "pg"}, Start: time.Now(), Time: time.Now(), BytesSent: 10}
	other := base
	other.BytesSent = 1 // not in namespace shop
	reset := base
	reset.SourcePod, reset.End, reset.BytesSent = shop, nodeagent.EndReset, 2
	toPod := base
	toPod.SourcePod, toPod.DestinationPod, toPod.BytesSent = shop, nodeagent.PodMeta{Namespace: "shop", Name: "api-1"}, 4 // not to namespace db
	match := base
	match.SourcePod, match.BytesSent = shop, 3
	for _, e := range []nodeagent.FlowEvent{other, reset, toPod, match} {
		src.publish(e)
	}
	select {
	case e := <-out:
		if e.BytesSent != 3 || e.Node != "n1" || e.Source.Pod != "web-1" || e.Source.Ip != "10.244.1.5" || e.Source.Port != 40000 ||
			e.Destination.Ip != "10.96.0.20" || e.Destination.Service != "pg" || e.Destination.Namespace != "db" || e.Via != "127.0.0.1:15001" || e.Verdict != flowv1.Verdict_CLOSED {
			t.Errorf("streamed %v, want only the closed flow of namespace shop to Service db/pg", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	if err := <-streamErr; err != nil {
		t.Errorf("Stream: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("ServeFlows: %v", err)
	}
}
