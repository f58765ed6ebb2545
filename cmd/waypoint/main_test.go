package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/hbone"
	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/internal/identity/identitytest"
	"github.com/warrenmesh/warren/waypoint"
)

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStaticMode runs the command on a static file: ready, a request from
// a caller's HBONE pool through it to a backend outside the mesh, metrics
// and the config dump on the side ports; then it stops with its context.
func TestStaticMode(t *testing.T) {
	dir := t.TempDir()
	ca := identitytest.NewCA(t)
	wpID := identity.New("shop", "waypoint")
	cert := ca.Issue(t, wpID)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Cert.Raw)
	writePEM(t, filepath.Join(dir, "cert.pem"), "CERTIFICATE", cert.Certificate[0])
	kd, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "key.pem"), "EC PRIVATE KEY", kd)

	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend saw %s %s", r.Method, r.URL.Path)
	})}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(bl)
	t.Cleanup(func() { backend.Close() })
	cfg := fmt.Sprintf(`
services:
- namespace: shop
  name: web
  waypoint: shop/wp
  vips: ["10.96.0.10"]
  ports: [{name: http, port: 80, targetPort: %d}]
  endpoints: [{ip: 127.0.0.1, ready: true}]
routes:
- namespace: shop
  name: web
  kind: ROUTE_KIND_HTTP
  parents: [{namespace: shop, name: web}]
  rules:
  - matches: [{path: {value: /app}}]
    backends: [{namespace: shop, name: web, port: 80}]
`, bl.Addr().(*net.TCPAddr).Port)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	type addrs struct {
		hbone net.Addr
		side  waypoint.Addrs
	}
	got := make(chan addrs, 1)
	listening = func(h net.Addr, s waypoint.Addrs) { got <- addrs{h, s} }
	t.Cleanup(func() { listening = nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runArgs(ctx, []string{"--name", "shop/wp", "--config", filepath.Join(dir, "config.yaml"),
			"--cert", filepath.Join(dir, "cert.pem"), "--key", filepath.Join(dir, "key.pem"), "--ca-bundle", filepath.Join(dir, "ca.pem"),
			"--hbone-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--ready-addr", "127.0.0.1:0",
			"--drain-grace", "1s", "--log-level", "error"})
	}()
	var a addrs
	select {
	case a = <-got:
	case err := <-done:
		t.Fatalf("runArgs: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not listening after 20s")
	}
	httpGet := func(url string) (int, string) { t.Helper(); return fetch(t, http.DefaultClient, url) }
	if code, _ := httpGet("http://" + a.side.Ready + "/healthz/ready"); code != 200 {
		t.Errorf("ready: %d", code)
	}

	callerCerts := identity.NewCertSource(ca.Issue(t, identity.New("shop", "frontend")))
	pool, err := hbone.NewPool(hbone.PoolOptions{TLSConfig: func(k hbone.Key) (*tls.Config, error) {
		return identity.ClientConfig(identity.TLSOptions{Certs: callerCerts, Roots: ca.Roots(), Authorize: identity.ExpectID(k.Dst)})
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	hboneAddr := a.hbone.(*net.TCPAddr).AddrPort()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return pool.Dial(ctx, hbone.Key{Src: identity.New("shop", "frontend"), Dst: wpID, Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), hboneAddr.Port())}, "10.96.0.10:80", nil)
	}}}
	defer client.CloseIdleConnections()
	if code, body := fetch(t, client, "http://web.shop/app/x"); code != 200 || body != "backend saw GET /app/x" {
		t.Errorf("through the waypoint: %d %q", code, body)
	}
	if code, _ := fetch(t, client, "http://web.shop/other"); code != 404 {
		t.Errorf("no route: %d", code)
	}
	code, metrics := httpGet("http://" + a.side.Metrics + "/metrics")
	if code != 200 || !strings.Contains(metrics, `warren_requests_total{destination_namespace="unknown",destination_principal="unknown",destination_service="shop/web",destination_workload="unknown",grpc_status="-",request_method="GET",response_code="200",route="shop/web#0",source_namespace="shop",source_principal="spiffe://cluster.local/ns/shop/sa/frontend",source_workload="unknown"} 1`) {
		t.Errorf("metrics: %d\n%s", code, grepLines(metrics, "warren_requests_total"))
	}
	if code, dump := httpGet("http://" + a.side.Admin + "/config_dump"); code != 200 || !strings.Contains(dump, "shop/wp") {
		t.Errorf("config dump: %d %s", code, dump)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runArgs after cancel: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop")
	}
}

func fetch(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestFlagsRequired(t *testing.T) {
	err := runArgs(context.Background(), []string{"--name", "a/b"})
	if err == nil || !strings.Contains(err.Error(), "--config is required") {
		t.Errorf("err = %v", err)
	}
}
