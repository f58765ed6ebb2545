package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/internal/netns/netnstest"
	"github.com/warrenmesh/warren/test/bench/iperfjson"
)

// TestTopology builds the benchmark's namespaces, pushes a second of iperf3 from the client pod
// to the server pod across both nodes, and checks that Close leaves nothing behind.
func TestTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("creates network namespaces and runs iperf3: not under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("creates network namespaces: needs root")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed (hack/deps.sh installs it)")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	topo, err := NewTopology(ctx, log, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()

	srv, err := topo.Start(topo.Server, "iperf3", "iperf3", "-s", "-B", serverIP, "-p", "5201")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitListening(ctx, iperfPort); err != nil {
		t.Fatal(err)
	}
	env := &Env{Topo: topo, Dir: t.TempDir(), Log: log}
	out, err := client(ctx, env, "iperf3", "-c", serverIP, "-p", "5201", "-t", "1", "-J")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := iperfjson.Parse(out); err != nil || r.Bytes == 0 {
		t.Fatalf("iperf3 across the nodes: %+v, %v", r, err)
	}

	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", srv.PID)); err == nil {
		t.Errorf("iperf3 (pid %d) still runs after Close", srv.PID)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("%s%d-", nsPrefix, os.Getpid())) {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
}

// TestHAProxyPairMTLS checks that the peer Warren is measured against really does what the
// report says: TLS 1.3 with AES-128-GCM between the nodes, and no way in without a client
// certificate from the benchmark's CA.
func TestHAProxyPairMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("creates network namespaces and runs HAProxy: not under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("creates network namespaces: needs root")
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skip("haproxy not installed (hack/deps.sh installs it)")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	dir := t.TempDir()
	topo, err := NewTopology(ctx, log, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	h := &haproxyPair{}
	defer h.Teardown()
	if _, err := h.Setup(ctx, &Env{Topo: topo, Dir: dir, Log: log}); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(dir, "haproxy", "ca.pem"))
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("ca.pem: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "haproxy", "node1.pem"), filepath.Join(dir, "haproxy", "node1.pem"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		certs   []tls.Certificate
		refused bool
	}{
		{"with node1's certificate", []tls.Certificate{cert}, false},
		{"without a client certificate", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := dialIn(topo.Node1, fmt.Sprintf("%s:%d", node2Link, haproxyTLSHTTP))
			if err != nil {
				t.Fatal(err)
			}
			c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "node2.wbench", Certificates: tt.certs})
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := c.Handshake(); err != nil {
				t.Fatal(err)
			}
			if st := c.ConnectionState(); st.Version != tls.VersionTLS13 || st.CipherSuite != tls.TLS_AES_128_GCM_SHA256 {
				t.Errorf("negotiated %s, %s; want TLS 1.3, TLS_AES_128_GCM_SHA256",
					tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
			}
			// In TLS 1.3 the server judges the client certificate after the client's handshake
			// is done: a refusal arrives as an alert on the first read. With a certificate, the
			// read ends when HAProxy finds no server pod listening (none is started here).
			_, err = c.Read(make([]byte, 1))
			t.Logf("first read: %v", err)
			gotRefused := err != nil && strings.Contains(err.Error(), "certificate required")
			if gotRefused != tt.refused {
				t.Errorf("read: %v; want refused=%v", err, tt.refused)
			}
		})
	}
}

// dialIn opens a TCP connection from inside network namespace ns. The socket belongs to the
// namespace it was created in, so only the dial needs the thread switched.
func dialIn(ns, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("setns %s: %w", ns, err)
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
		// The thread is stuck in the wrong namespace: keep it locked so that it dies with
		// this goroutine instead of serving others.
		runtime.LockOSThread()
		return nil, errors.Join(err, fmt.Errorf("setns back: %w", rerr))
	}
	return conn, err
}

// TestWarrenL4 sets the warren-l4 scenario up and sends bytes from the client pod to the server
// pod through it: the kernel redirects the client's plain connect() into the ztunnels.
func TestWarrenL4(t *testing.T) {
	netnstest.RequireKernel(t, "creates network namespaces, attaches eBPF programs and builds the ztunnel")
	// Processes die with the thread that started them (Pdeathsig), and the helpers that enter
	// namespaces end the threads they use: keep this goroutine, which starts the ztunnels, on
	// a thread of its own, as bench's main goroutine is.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir := t.TempDir()
	topo, err := NewTopology(ctx, log, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	w := &warrenL4{}
	defer func() {
		if err := w.Teardown(); err != nil {
			t.Error(err)
		}
	}()
	target, err := w.Setup(ctx, &Env{Topo: topo, Dir: dir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Proxies()) != 2 {
		t.Fatalf("proxies %v", w.Proxies())
	}
	server, err := os.Open("/run/netns/" + topo.Server)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	var ln net.Listener
	if err := netns.Do(server, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", serverIP, target.HTTPPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := dialIn(topo.Client, fmt.Sprintf("%s:%d", target.Host, target.HTTPPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(c, "through two ztunnels")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "through two ztunnels\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
}
