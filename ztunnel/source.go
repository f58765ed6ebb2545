package ztunnel

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/warrenmesh/warren/internal/zds"
)

// PodSource tells the ztunnel which local pods to serve: the static
// configuration (StaticPods, for tests and benchmarks) or the node agent's
// netns hand-off (ZDSPods, a real node).
type PodSource interface {
	// Run adds the pods it knows, calls Synced once the first full set is
	// added, then adds and removes pods as they change, until ctx ends.
	Run(ctx context.Context, h PodHandler) error
}

// PodHandler is what a PodSource drives; the Tunnel implements it.
type PodHandler interface {
	AddPod(ctx context.Context, pod LocalPod) error
	RemovePod(ctx context.Context, uid string) error
	Synced()
}

// StaticPods is a PodSource with a fixed set of pods.
type StaticPods []LocalPod

// Run implements PodSource.
func (s StaticPods) Run(ctx context.Context, h PodHandler) error {
	for _, p := range s {
		if err := h.AddPod(ctx, p); err != nil {
			return err
		}
	}
	h.Synced()
	<-ctx.Done()
	return nil
}

// ZDSPods is the PodSource of a real node: the node agent's zds socket
// (package zds). Each pod comes with its netns as a descriptor; the handler's
// AddPod has opened the pod's listeners when the agent gets its ack, and its
// error is the refusal's reason. Every connection starts with a snapshot:
// pods the ztunnel serves that it does not name are removed when it ends.
type ZDSPods struct {
	// Path is the agent's socket; zds.DefaultPath if empty.
	Path string
	// Backoff between reconnects; zds.Client's default if zero.
	Backoff time.Duration
	// HandoverWait is how long the pods stay served once ctx ends, waiting
	// for a successor to take them over (the agent then says this ztunnel
	// was superseded: Run returns zds.ErrSuperseded); it no longer
	// reconnects meanwhile. 0: Run returns when ctx ends.
	HandoverWait time.Duration
	Logger       *slog.Logger
}

// Run implements PodSource; it returns when ctx ends (see HandoverWait).
func (z ZDSPods) Run(ctx context.Context, h PodHandler) error {
	log := z.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &zdsHandler{h: h, log: log, known: map[string]bool{}}
	// The session outlives ctx by HandoverWait at most.
	zctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if z.HandoverWait > 0 {
			log.Info("stopping: serving until a successor takes the pods over", "wait", z.HandoverWait)
			t := time.NewTimer(z.HandoverWait)
			defer t.Stop()
			select {
			case <-t.C:
				log.Info("no successor came; stopping")
			case <-zctx.Done():
			}
		}
		cancel()
	})
	defer stop()
	c := &zds.Client{Path: z.Path, Handler: a, Backoff: z.Backoff, Logger: log, OnConnect: a.connected, NoReconnect: ctx.Done()}
	return c.Run(zctx)
}

// zdsHandler adapts a PodHandler to zds.Handler. zds.Client calls it from
// one goroutine, OnConnect included, so it needs no lock.
type zdsHandler struct {
	h      PodHandler
	log    *slog.Logger
	known  map[string]bool // pods served
	seen   map[string]bool // pods the current snapshot named; nil between snapshots
	synced bool
}

func (a *zdsHandler) connected() { a.seen = map[string]bool{} }

// AddPod implements zds.Handler. The tunnel's thread keeps the netns once
// the pod is served, so the descriptor is closed on return either way.
func (a *zdsHandler) AddPod(ctx context.Context, pod zds.Pod, netns *os.File) error {
	defer netns.Close()
	if a.seen != nil {
		a.seen[pod.UID] = true
	}
	lp := LocalPod{
		UID:       pod.UID,
		NetnsFile: netns,
		Workload: Workload{
			Name: pod.Name, Namespace: pod.Namespace, ServiceAccount: pod.ServiceAccount,
			IPs: pod.IPs, Labels: pod.Labels, Enrolled: true,
		},
	}
	if err := a.h.AddPod(ctx, lp); err != nil {
		// A replaced pod's old listeners are gone too (Tunnel.AddPod).
		delete(a.known, pod.UID)
		a.log.Warn("pod refused", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID, "err", err)
		return err
	}
	a.known[pod.UID] = true
	return nil
}

// DeletePod implements zds.Handler.
func (a *zdsHandler) DeletePod(ctx context.Context, uid string) error {
	delete(a.known, uid)
	return a.h.RemovePod(ctx, uid)
}

// SnapshotSent implements zds.Handler: the snapshot replaces the set.
func (a *zdsHandler) SnapshotSent(ctx context.Context) error {
	if a.seen != nil {
		for uid := range a.known {
			if !a.seen[uid] {
				a.log.Info("pod not in the agent's snapshot, removed", "uid", uid)
				delete(a.known, uid)
				if err := a.h.RemovePod(ctx, uid); err != nil {
					return err
				}
			}
		}
	}
	a.seen = nil
	if !a.synced {
		a.synced = true
		a.h.Synced()
	}
	return nil
}
