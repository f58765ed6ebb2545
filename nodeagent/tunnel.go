package nodeagent

import (
	"context"

	"github.com/warrenmesh/warren/internal/zds"
)

// ZDSTunnel is the Tunnel of a real node: the zds server the ztunnel connects to.
type ZDSTunnel struct{ Server *zds.Server }

// AddPod implements Tunnel.
func (t ZDSTunnel) AddPod(ctx context.Context, p TunnelPod) error {
	return t.Server.AddPod(ctx, zds.Pod{
		UID: p.UID, Namespace: p.Namespace, Name: p.Name, IPs: p.IPs,
		ServiceAccount: p.ServiceAccount, Labels: p.Labels,
	}, p.Netns)
}

// DeletePod implements Tunnel.
func (t ZDSTunnel) DeletePod(ctx context.Context, uid string) error {
	return t.Server.DeletePod(ctx, uid)
}
