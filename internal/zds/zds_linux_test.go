package zds

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netns"
)

// The test binary switches network namespaces on other threads only.
func init() { runtime.LockOSThread() }

// tunnel is a stand-in ztunnel: for each pod it opens a listener inside the
// pod's netns, as the real one does, and reports what it was told.
type tunnel struct {
	mu     sync.Mutex
	events chan string
	lns    map[string]net.Listener
}

func newTunnel() *tunnel {
	return &tunnel{events: make(chan string, 100), lns: map[string]net.Listener{}}
}

func (t *tunnel) AddPod(ctx context.Context, pod Pod, ns *os.File) error {
	defer ns.Close()
	if pod.UID == "refused" {
		t.events <- "add refused"
		return errors.New("no certificate for this pod")
	}
	var ln net.Listener
	err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	})
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "tunnel for %s\n", pod.UID)
			c.Close()
		}
	}()
	t.mu.Lock()
	if old := t.lns[pod.UID]; old != nil {
		old.Close()
	}
	t.lns[pod.UID] = ln
	t.mu.Unlock()
	ev := fmt.Sprintf("add %s %s/%s %v", pod.UID, pod.Namespace, pod.Name, pod.IPs)
	if pod.ServiceAccount != "" || pod.Labels != nil {
		ev += fmt.Sprintf(" sa=%s labels=%v", pod.ServiceAccount, pod.Labels)
	}
	t.events <- ev
	return nil
}

func (t *tunnel) DeletePod(ctx context.Context, uid string) error {
	t.mu.Lock()
	if ln := t.lns[uid]; ln != nil {
		ln.Close()
		delete(t.lns, uid)
	}
	t.mu.Unlock()
	t.events <- "delete " + uid
	return nil
}

func (t *tunnel) SnapshotSent(ctx context.Context) error {
	t.events <- "snapshot-sent"
	return nil
}

func (t *tunnel) port(uid string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lns[uid].Addr().(*net.TCPAddr).Port
}

func (t *tunnel) expect(tb testing.TB, want ...string) {
	tb.Helper()
	for _, w := range want {
		select {
		case got := <-t.events:
			if got != w {
				tb.Fatalf("ztunnel got %q, want %q", got, w)
			}
		case <-time.After(10 * time.Second):
			tb.Fatalf("ztunnel: no %q", w)
		}
	}
}

func addNetns(tb testing.TB, name string) string {
	tb.Helper()
	ns, err := netns.Add(name)
	if err != nil {
		tb.Fatal(err)
	}
	ns.Close()
	tb.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			tb.Error(err)
		}
	})
	return filepath.Join(netns.RunDir, name)
}

// dialIn connects to 127.0.0.1:port inside the netns at path.
func dialIn(path string, port int) (string, error) {
	ns, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer ns.Close()
	var line string
	err = netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func TestSnapshotDeltasReplay(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("creates network namespaces: needs root, skipped under -short")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	nsA := addNetns(t, fmt.Sprintf("wtest-zds-%d-a", os.Getpid()))
	nsB := addNetns(t, fmt.Sprintf("wtest-zds-%d-b", os.Getpid()))

	startServer := func(path string) (*Server, func()) {
		srv, err := Listen(path, ServerOptions{Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(sctx) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				if err := <-served; err != nil {
					t.Errorf("Serve: %v", err)
				}
			})
		}
		t.Cleanup(stop)
		return srv, stop
	}
	srv, stopServer := startServer(filepath.Join(t.TempDir(), "ztunnel.sock"))

	podA := Pod{UID: "uid-a", Namespace: "demo", Name: "a", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.2")}}
	podB := Pod{UID: "uid-b", Namespace: "demo", Name: "b", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.3"), netip.MustParseAddr("fd00::3")},
		ServiceAccount: "b-sa", Labels: map[string]string{"app": "b"}}
	// Before any ztunnel: kept for its snapshot.
	if err := srv.AddPod(ctx, podA, nsA); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddPod(ctx, Pod{UID: "x"}, "/proc/self/status"); err == nil {
		t.Error("AddPod took a path that is not a netns")
	}

	var connects atomic.Int32
	startClient := func(tun *tunnel) context.CancelFunc {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		c := &Client{Path: srv.Addr(), Handler: tun, Logger: log, Backoff: 20 * time.Millisecond, OnConnect: func() { connects.Add(1) }}
		go func() { done <- c.Run(cctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("client Run: %v", err)
			}
		}
	}
	tun := newTunnel()
	stop := startClient(tun)
	tun.expect(t, "add uid-a demo/a [10.244.1.2]", "snapshot-sent")
	waitConnected(t, srv)
	// The ztunnel's listener is inside the pod's netns.
	if got, err := dialIn(nsA, tun.port("uid-a")); err != nil || got != "tunnel for uid-a" {
		t.Errorf("dial the tunnel in pod a's netns: %q, %v", got, err)
	}

	// Deltas, each acked before AddPod/DeletePod return.
	if err := srv.AddPod(ctx, podB, nsB); err != nil {
		t.Fatal(err)
	}
	tun.expect(t, "add uid-b demo/b [10.244.1.3 fd00::3] sa=b-sa labels=map[app:b]")
	if got, err := dialIn(nsB, tun.port("uid-b")); err != nil || got != "tunnel for uid-b" {
		t.Errorf("dial the tunnel in pod b's netns: %q, %v", got, err)
	}
	if err := srv.DeletePod(ctx, "uid-a"); err != nil {
		t.Fatal(err)
	}
	tun.expect(t, "delete uid-a")
	if err := srv.DeletePod(ctx, "uid-a"); err != nil { // unknown: nothing sent
		t.Fatal(err)
	}
	err := srv.AddPod(ctx, Pod{UID: "refused"}, nsA)
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "no certificate for this pod") {
		t.Errorf("refused pod: %v, want ErrRejected with the ztunnel's reason", err)
	}
	tun.expect(t, "add refused")

	// A restarted ztunnel gets everything again.
	stop()
	tun2 := newTunnel()
	stop = startClient(tun2)
	defer stop()
	tun2.expect(t, "add refused", "add uid-b demo/b [10.244.1.3 fd00::3] sa=b-sa labels=map[app:b]", "snapshot-sent")
	if got, err := dialIn(nsB, tun2.port("uid-b")); err != nil || got != "tunnel for uid-b" {
		t.Errorf("after reconnect: %q, %v", got, err)
	}
	if err := srv.DeletePod(ctx, "refused"); err != nil {
		t.Fatal(err)
	}
	tun2.expect(t, "delete refused")

	// A restarted agent (a new server on the same path) replays what it
	// knows; the ztunnel drops the rest at snapshot-sent.
	stopServer()
	srv, _ = startServer(srv.Addr())
	if err := srv.AddPod(ctx, podA, nsA); err != nil {
		t.Fatal(err)
	}
	tun2.expect(t, "add uid-a demo/a [10.244.1.2]", "snapshot-sent")
	waitConnected(t, srv)
	// OnConnect came before each snapshot: first client, second, its reconnect.
	if n := connects.Load(); n != 3 {
		t.Errorf("OnConnect called %d times, want 3", n)
	}
}

func waitConnected(tb testing.TB, s *Server) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !s.Connected() {
		if time.Now().After(deadline) {
			tb.Fatal("ztunnel not connected")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBadHello(t *testing.T) {
	srv, err := Listen(filepath.Join(t.TempDir(), "z.sock"), ServerOptions{AckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: srv.Addr(), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := send(c, Message{Type: TypeHello, Version: 99}, nil); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := recv(c); err == nil {
		t.Error("the agent answered a hello of an unknown version")
	}
	if srv.Connected() {
		t.Error("connected after a bad hello")
	}
}

// TestSuperseded: a second ztunnel (a rollout's new pod) takes over once its
// snapshot is acked; the first is told so, returns ErrSuperseded and does
// not connect again, so it cannot take the pods back.
func TestSuperseded(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("creates network namespaces: needs root, skipped under -short")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	nsA := addNetns(t, fmt.Sprintf("wtest-zds-%d-sup", os.Getpid()))
	srv, err := Listen(filepath.Join(t.TempDir(), "ztunnel.sock"), ServerOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	t.Cleanup(func() { cancel(); <-served })
	if err := srv.AddPod(ctx, Pod{UID: "uid-a", Namespace: "demo", Name: "a"}, nsA); err != nil {
		t.Fatal(err)
	}

	var connects [2]atomic.Int32
	start := func(i int, tun *tunnel) (done chan error, stop context.CancelFunc) {
		cctx, cancel := context.WithCancel(ctx)
		done = make(chan error, 1)
		c := &Client{Path: srv.Addr(), Handler: tun, Logger: log, Backoff: 10 * time.Millisecond, OnConnect: func() { connects[i].Add(1) }}
		go func() { done <- c.Run(cctx) }()
		return done, cancel
	}
	old := newTunnel()
	oldDone, stopOld := start(0, old)
	defer stopOld()
	old.expect(t, "add uid-a demo/a []", "snapshot-sent")
	waitConnected(t, srv)

	tun := newTunnel()
	done, stop := start(1, tun)
	defer stop()
	tun.expect(t, "add uid-a demo/a []", "snapshot-sent")
	select {
	case err := <-oldDone:
		if !errors.Is(err, ErrSuperseded) {
			t.Errorf("superseded client's Run: %v, want ErrSuperseded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the superseded client still runs")
	}
	// Long enough for several reconnects at a 10 ms backoff, had there been any.
	time.Sleep(200 * time.Millisecond)
	if n := connects[0].Load(); n != 1 {
		t.Errorf("the superseded client connected %d times, want 1", n)
	}
	// Deltas go to the new ztunnel only.
	if err := srv.DeletePod(ctx, "uid-a"); err != nil {
		t.Fatal(err)
	}
	tun.expect(t, "delete uid-a")
	select {
	case ev := <-old.events:
		t.Errorf("the superseded ztunnel got %q", ev)
	default:
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("client Run: %v", err)
	}
}

// TestNoReconnect: once NoReconnect is closed the client keeps its
// connection (deltas still come) but does not connect again when it ends.
func TestNoReconnect(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("creates network namespaces: needs root, skipped under -short")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	ns := addNetns(t, fmt.Sprintf("wtest-zds-%d-norec", os.Getpid()))
	srv, err := Listen(filepath.Join(t.TempDir(), "ztunnel.sock"), ServerOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	var connects atomic.Int32
	last := make(chan struct{})
	tun := newTunnel()
	c := &Client{Path: srv.Addr(), Handler: tun, Logger: log, Backoff: 10 * time.Millisecond, OnConnect: func() { connects.Add(1) }, NoReconnect: last}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	tun.expect(t, "snapshot-sent")
	waitConnected(t, srv)
	close(last)
	if err := srv.AddPod(ctx, Pod{UID: "uid-a", Namespace: "demo", Name: "a"}, ns); err != nil {
		t.Fatal(err)
	}
	tun.expect(t, "add uid-a demo/a []")
	srv.Close()
	<-served
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run still runs after its last connection ended")
	}
	if n := connects.Load(); n != 1 {
		t.Errorf("connected %d times, want 1", n)
	}
}
