package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/warrenmesh/warren/internal/identity"
)

// rawClient is a hand-driven HTTP/2 client with a valid mesh certificate, for
// sending what a well-behaved client would not.
type rawClient struct {
	t    *testing.T
	tc   *tls.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

func newRawClient(t *testing.T, m *mesh, preface bool) *rawClient {
	t.Helper()
	cc, err := identity.ClientConfig(identity.TLSOptions{
		Certs: identity.NewCertSource(m.ca.Issue(t, clientID)), Roots: m.ca.Roots(), Authorize: identity.ExpectID(serverID)})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", m.addr.String(), cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawClient{t: t, tc: tc, fr: http2.NewFramer(tc, tc)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.henc = hpack.NewEncoder(&rc.hbuf)
	if preface {
		io.WriteString(tc, http2.ClientPreface)
		rc.fr.WriteSettings()
	}
	return rc
}

func (rc *rawClient) headers(id uint32, end bool, kv ...string) {
	rc.hbuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		rc.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		rc.t.Fatal(err)
	}
}

// until reads frames until match returns true; it fails the test at EOF.
func (rc *rawClient) until(what string, match func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
}

func (rc *rawClient) goAway() *http2.GoAwayFrame {
	rc.t.Helper()
	return rc.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
}

func (rc *rawClient) status(id uint32) string {
	rc.t.Helper()
	f := rc.until("response", func(f http2.Frame) bool {
		mh, ok := f.(*http2.MetaHeadersFrame)
		return ok && mh.StreamID == id
	})
	return f.(*http2.MetaHeadersFrame).PseudoValue("status")
}

// closed reports whether the server hung up (after any frames it sent).
func (rc *rawClient) closed() bool {
	for {
		if _, err := rc.fr.ReadFrame(); err != nil {
			return !errors.Is(err, http2.ErrFrameTooLarge)
		}
	}
}

func TestBadInput(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	logs := &logRecorder{}
	m := newMesh(t, meshOptions{
		srvLog:    slog.New(logs),
		srvLimits: Limits{MaxConcurrentStreams: 8, MaxHeaderListSize: 4 << 10},
		handler: func(ctx context.Context, r *Request) (net.Conn, error) {
			if r.Authority.Port() == 7 {
				// A handler that never answers: streams stay half-open.
				select {
				case <-block:
				case <-ctx.Done():
				}
				return nil, errors.New("gave up")
			}
			return dialHandler(ctx, r)
		},
	})
	echo := echoServer(t)

	t.Run("garbage instead of preface", func(t *testing.T) {
		rc := newRawClient(t, m, false)
		io.WriteString(rc.tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if !rc.closed() {
			t.Fatal("connection not closed")
		}
	})
	t.Run("first frame not SETTINGS", func(t *testing.T) {
		rc := newRawClient(t, m, false)
		io.WriteString(rc.tc, http2.ClientPreface)
		rc.fr.WritePing(false, [8]byte{})
		if g := rc.goAway(); g.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("GOAWAY %v", g.ErrCode)
		}
	})
	t.Run("oversized frame", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		rc.headers(1, false, ":method", "CONNECT", ":authority", echo)
		rc.fr.WriteData(1, false, make([]byte, DefaultMaxFrameSize+1))
		if g := rc.goAway(); g.ErrCode != http2.ErrCodeFrameSize {
			t.Fatalf("GOAWAY %v", g.ErrCode)
		}
	})
	t.Run("random bytes after preface", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		rc.tc.Write(bytes.Repeat([]byte{0xff, 0x00, 0x13, 0x37}, 1000))
		if !rc.closed() {
			t.Fatal("connection not closed")
		}
	})
	t.Run("malformed authorities and methods", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		cases := []struct {
			kv   []string
			want string
		}{
			{[]string{":method", "CONNECT", ":authority", "example.com:80"}, "400"},
			{[]string{":method", "CONNECT", ":authority", "10.0.0.1"}, "400"},
			{[]string{":method", "CONNECT", ":authority", "[fe80::1%25eth0]:80"}, "400"},
			{[]string{":method", "CONNECT"}, "400"},
			{[]string{":method", "POST", ":scheme", "https", ":path", "/", ":authority", echo}, "405"},
			{[]string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", echo}, "400"},
			// nghttp's spelling of CONNECT: tolerated.
			{[]string{":method", "CONNECT", ":scheme", "https", ":path", "/", ":authority", echo}, "200"},
		}
		for i, c := range cases {
			id := uint32(2*i + 1)
			rc.headers(id, false, c.kv...)
			if got := rc.status(id); got != c.want {
				t.Errorf("%v: status %s, want %s", c.kv, got, c.want)
			}
		}
	})
	t.Run("header list too large", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		rc.headers(1, false, ":method", "CONNECT", ":authority", echo, "x-big", strings.Repeat("a", 8<<10))
		f := rc.until("refusal", func(f http2.Frame) bool {
			switch f.(type) {
			case *http2.MetaHeadersFrame, *http2.GoAwayFrame, *http2.RSTStreamFrame:
				return true
			}
			return false
		})
		if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.PseudoValue("status") == "200" {
			t.Fatal("oversized header list accepted")
		}
	})
	t.Run("flood of half-open streams", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		for i := range 20 {
			rc.headers(uint32(2*i+1), false, ":method", "CONNECT", ":authority", "127.0.0.1:7")
		}
		refused := 0
		for refused < 12 {
			f := rc.until("REFUSED_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
			if f.(*http2.RSTStreamFrame).ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("RST %v", f.(*http2.RSTStreamFrame).ErrCode)
			}
			refused++
		}
	})
	t.Run("rapid reset", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		go func() {
			// Not rc.headers: the server hangs up mid-flood, and this
			// goroutine must not fail the test for that.
			var hb bytes.Buffer
			henc := hpack.NewEncoder(&hb)
			henc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
			henc.WriteField(hpack.HeaderField{Name: ":authority", Value: "127.0.0.1:7"})
			fr := http2.NewFramer(rc.tc, nil)
			for i := range 5000 {
				id := uint32(2*i + 1)
				if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}) != nil ||
					fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return
				}
			}
		}()
		if g := rc.goAway(); g.ErrCode != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("GOAWAY %v", g.ErrCode)
		}
	})
	t.Run("window overflow", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		rc.fr.WriteWindowUpdate(0, 1<<31-1)
		if g := rc.goAway(); g.ErrCode != http2.ErrCodeFlowControl {
			t.Fatalf("GOAWAY %v", g.ErrCode)
		}
	})
	t.Run("DATA beyond the stream window", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		rc.headers(1, false, ":method", "CONNECT", ":authority", "127.0.0.1:7")
		for range DefaultStreamWindow/DefaultMaxFrameSize + 1 {
			rc.fr.WriteData(1, false, make([]byte, DefaultMaxFrameSize))
		}
		f := rc.until("RST_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
		if f.(*http2.RSTStreamFrame).ErrCode != http2.ErrCodeFlowControl {
			t.Fatalf("RST %v", f.(*http2.RSTStreamFrame).ErrCode)
		}
	})
	t.Run("even stream ID", func(t *testing.T) {
		rc := newRawClient(t, m, true)
		rc.headers(2, false, ":method", "CONNECT", ":authority", echo)
		if g := rc.goAway(); g.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("GOAWAY %v", g.ErrCode)
		}
	})

	// Every refusal left a reason in the log.
	for _, want := range [][]string{
		{"refusing connection", "no HTTP/2 client preface"},
		{"closing connection", "FRAME_SIZE_ERROR"},
		{"closing connection", "ENHANCE_YOUR_CALM"},
		{"closing connection", "FLOW_CONTROL_ERROR"},
		{"refusing stream", "status=400", "not an IP literal"},
		{"refusing stream", "status=405"},
		{"resetting stream", "FLOW_CONTROL"},
	} {
		if !logs.has(want...) {
			t.Errorf("no log line with %q", want)
		}
	}

	// After all that, the server still serves.
	s, err := m.dial(echo)
	if err != nil {
		t.Fatalf("server broken by bad input: %v", err)
	}
	s.Close()
}

func TestWrongALPNRefused(t *testing.T) {
	m := newMesh(t, meshOptions{})
	cc, _ := identity.ClientConfig(identity.TLSOptions{
		Certs: identity.NewCertSource(m.ca.Issue(t, clientID)), Roots: m.ca.Roots(), Authorize: identity.ExpectID(serverID)})
	cc.NextProtos = []string{"http/1.1"}
	tc, err := tls.Dial("tcp", m.addr.String(), cc)
	if err == nil {
		defer tc.Close()
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(tc, http2.ClientPreface)
		if _, err := tc.Read(make([]byte, 1)); err == nil {
			t.Fatal("server spoke to a client without ALPN h2")
		}
	}
}
