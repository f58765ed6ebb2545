package hbone

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/warrenmesh/warren/internal/identity"
)

// goClients are HTTP/2 clients that were not written here: net/http's
// Transport limited to HTTP/2, and x/net's http2.Transport (deprecated in
// favour of the former, but what most Go HBONE clients in the wild still use).
func goClients(t *testing.T, m *mesh) map[string]*http.Client {
	cc, err := identity.ClientConfig(identity.TLSOptions{
		Certs: identity.NewCertSource(m.ca.Issue(t, clientID)), Roots: m.ca.Roots(), Authorize: identity.ExpectID(serverID)})
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP2(true)
	std := &http.Transport{TLSClientConfig: cc.Clone(), Protocols: &protos, ForceAttemptHTTP2: true}
	//lint:ignore SA1019 x/net's Transport is the independent client this test is about.
	xnet := &http2.Transport{TLSClientConfig: cc.Clone()}
	t.Cleanup(std.CloseIdleConnections)
	t.Cleanup(xnet.CloseIdleConnections) //lint:ignore SA1019 see above
	return map[string]*http.Client{
		"net/http":    {Transport: std, Timeout: 20 * time.Second},
		"x/net/http2": {Transport: xnet, Timeout: 20 * time.Second},
	}
}

func TestGoHTTP2Clients(t *testing.T) {
	m := newMesh(t, meshOptions{})
	for name, hc := range goClients(t, m) {
		t.Run(name, func(t *testing.T) { testGoClient(t, m, hc) })
	}
}

func testGoClient(t *testing.T, m *mesh, hc *http.Client) {
	m.mu.Lock()
	m.reqs = nil
	m.mu.Unlock()
	echo := echoServer(t)
	srvURL := "https://" + m.addr.String()

	const tunnels = 20
	var wg sync.WaitGroup
	errs := make(chan error, tunnels)
	for i := range tunnels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, pw := io.Pipe()
			req, err := http.NewRequest(http.MethodConnect, srvURL, pr)
			if err != nil {
				errs <- err
				return
			}
			req.Host = echo // the :authority
			req.Header.Set("traceparent", fmt.Sprintf("00-%032x-%016x-01", i+1, i+1))
			// W3C baggage, split over two field lines as a proxy may leave it.
			req.Header.Add("baggage", fmt.Sprintf("tunnel=%d", i))
			req.Header.Add("baggage", "tenant=acme;ttl=30")
			resp, err := hc.Do(req)
			if err != nil {
				errs <- fmt.Errorf("tunnel %d: %w", i, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
				errs <- fmt.Errorf("tunnel %d: status %d over %s", i, resp.StatusCode, resp.Proto)
				return
			}
			msg := bytes.Repeat([]byte{byte(i)}, 64<<10+i)
			go func() {
				pw.Write(msg)
				pw.Close() // END_STREAM: the echo backend closes after echoing
			}()
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("tunnel %d: echoed %d bytes, %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	traces := map[string]bool{}
	for _, r := range m.requests() {
		tp := r.Header.Get("traceparent")
		traces[tp] = true
		var i int
		if _, err := fmt.Sscanf(tp, "00-%032x-", &i); err != nil {
			t.Errorf("traceparent %q: %v", tp, err)
			continue
		}
		want := []string{fmt.Sprintf("tunnel=%d", i-1), "tenant=acme;ttl=30"}
		if got := r.Header.Values("baggage"); !slices.Equal(got, want) {
			t.Errorf("tunnel %d: baggage %q, want %q", i-1, got, want)
		}
	}
	if len(traces) != tunnels {
		t.Errorf("handler saw %d distinct traceparents, want %d", len(traces), tunnels)
	}

	for _, tt := range []struct {
		name, method, host string
		want               int
	}{
		{"GET", http.MethodGet, "", http.StatusMethodNotAllowed},
		{"closed port", http.MethodConnect, closedPort(t), http.StatusServiceUnavailable},
		{"host name authority", http.MethodConnect, "example.com:80", http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tt.method, srvURL+"/", nil)
		if tt.host != "" {
			req.Host = tt.host
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
}

// TestNghttp uses nghttp (Debian nghttp2-client), which sends :scheme and
// :path on CONNECT, as a second independent client.
func TestNghttp(t *testing.T) {
	bin, err := exec.LookPath("nghttp")
	if err != nil {
		t.Skip("nghttp not installed (apt-get install nghttp2-client)")
	}
	m := newMesh(t, meshOptions{})
	echo := echoServer(t)
	dir := t.TempDir()
	cert := m.ca.Issue(t, clientID)
	writePEM(t, dir+"/cert.pem", "CERTIFICATE", cert.Certificate[0])
	writeKey(t, dir+"/key.pem", cert)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-v", "--cert", dir+"/cert.pem", "--key", dir+"/key.pem",
		"-H", ":method: CONNECT", "-H", ":authority: "+echo, "-H", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"-d", "-", "https://"+m.addr.String()+"/")
	cmd.Stdin = strings.NewReader("hello from nghttp")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nghttp: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), ":status: 200") || !strings.Contains(string(out), "hello from nghttp") {
		t.Fatalf("nghttp did not get the echo through the tunnel:\n%s", out)
	}
	reqs := m.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("traceparent") == "" {
		t.Fatalf("handler requests: %+v", reqs)
	}
}
