package ztunnel

import "context"

// PodSource tells the ztunnel which local pods to serve. Today: the static
// configuration (StaticPods); later the node agent's netns hand-off.
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
