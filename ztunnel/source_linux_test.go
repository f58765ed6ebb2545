package ztunnel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/zds"
)

// recordingHandler is a PodHandler that records what a source does.
type recordingHandler struct {
	events chan string
}

func (r *recordingHandler) AddPod(_ context.Context, p LocalPod) error {
	if p.NetnsFile == nil {
		r.events <- "add without netns " + p.UID
		return errors.New("no netns")
	}
	if p.UID == "refused" {
		r.events <- "add refused"
		return errors.New("no certificate for this pod")
	}
	r.events <- fmt.Sprintf("add %s %s/%s sa=%s labels=%v %v", p.UID, p.Namespace, p.Name, p.ServiceAccount, p.Labels, p.IPs)
	return nil
}

func (r *recordingHandler) RemovePod(_ context.Context, uid string) error {
	r.events <- "remove " + uid
	return nil
}

func (r *recordingHandler) Synced() { r.events <- "synced" }

func (r *recordingHandler) expect(tb testing.TB, want ...string) {
	tb.Helper()
	for _, w := range want {
		select {
		case got := <-r.events:
			if got != w {
				tb.Fatalf("got %q, want %q", got, w)
			}
		case <-time.After(5 * time.Second):
			tb.Fatalf("no %q", w)
		}
	}
}

// TestZDSPods drives ZDSPods from the agent's real zds server, with this
// process's own netns (no root needed): snapshot, deltas, refusals and a
// reconnect whose snapshot replaces the set.
func TestZDSPods(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "ztunnel.sock")
	serve := func() (*zds.Server, func()) {
		srv, err := zds.Listen(sock, zds.ServerOptions{AckTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		return srv, func() {
			srv.Close()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	const self = "/proc/self/ns/net"
	a := zds.Pod{UID: "a", Namespace: "demo", Name: "a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, ServiceAccount: "sa-a", Labels: map[string]string{"app": "a"}}
	b := zds.Pod{UID: "b", Namespace: "demo", Name: "b", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}}
	c := zds.Pod{UID: "c", Namespace: "demo", Name: "c", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.3")}}
	srv, stop := serve()
	for _, p := range []zds.Pod{a, b} {
		if err := srv.AddPod(ctx, p, self); err != nil {
			t.Fatal(err)
		}
	}
	h := &recordingHandler{events: make(chan string, 100)}
	done := make(chan error, 1)
	go func() { done <- ZDSPods{Path: sock, Backoff: 10 * time.Millisecond}.Run(ctx, h) }()
	h.expect(t, "add a demo/a sa=sa-a labels=map[app:a] [10.0.0.1]", "add b demo/b sa= labels=map[] [10.0.0.2]", "synced")

	// Deltas; a refusal reaches the agent with its reason.
	for !srv.Connected() {
		time.Sleep(5 * time.Millisecond)
	}
	if err := srv.DeletePod(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	h.expect(t, "remove b")
	err := srv.AddPod(ctx, zds.Pod{UID: "refused", Namespace: "demo", Name: "r", IPs: c.IPs}, self)
	if !errors.Is(err, zds.ErrRejected) || !strings.Contains(err.Error(), "no certificate for this pod") {
		t.Errorf("refused pod: %v, want ErrRejected with the reason", err)
	}
	h.expect(t, "add refused")

	// A new agent knows only c: a goes at the end of its snapshot; synced only once.
	stop()
	srv, stop = serve()
	defer stop()
	if err := srv.AddPod(ctx, c, self); err != nil {
		t.Fatal(err)
	}
	// The client may reconnect before or after c is added: either order.
	got := map[string]bool{}
	for range 2 {
		select {
		case e := <-h.events:
			got[e] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("after reconnect got only %v", got)
		}
	}
	if !got["add c demo/c sa= labels=map[] [10.0.0.3]"] || !got["remove a"] {
		t.Errorf("after reconnect: %v, want add c and remove a", got)
	}
	select {
	case e := <-h.events:
		t.Errorf("unexpected %q", e)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
