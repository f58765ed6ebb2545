package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
)

// agentFlows is the agent's flow side: the collector (bpf/flows), the
// cluster-wide pod index that names flow ends, and the flow stream server.
type agentFlows struct {
	collector *FlowCollector
	pods      *PodIndex
	addr      string // "" for no stream server
	node      string
	log       *slog.Logger
}

// openAgentFlows loads and attaches the flow program next to the redirect
// programs (after Open, so that it shares their pinned maps) and registers
// the kernel flow metrics on reg. cfg.FlowAddr: DefaultFlowAddr if empty, "-"
// for no stream.
func openAgentFlows(cfg AgentConfig, client kubernetes.Interface, reg prometheus.Registerer, log *slog.Logger) (*agentFlows, error) {
	addr := cfg.FlowAddr
	switch addr {
	case "":
		addr = DefaultFlowAddr
	case "-":
		addr = ""
	}
	if addr != "" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("config: flow address %q: %w", addr, err)
		}
	}
	pods, err := NewPodIndex(client, "")
	if err != nil {
		return nil, err
	}
	opts := cfg.Kernel
	opts.Registerer = reg
	c, err := OpenFlows(FlowOptions{Options: opts, Pods: pods})
	if err != nil {
		return nil, err
	}
	return &agentFlows{collector: c, pods: pods, addr: addr, node: cfg.Node, log: log.With("component", "flows")}, nil
}

// Run reads flows, keeps the pod index and serves the stream until ctx ends.
func (f *agentFlows) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if !f.pods.Run(ctx, podIndexSyncTimeout) && ctx.Err() == nil {
			f.log.Warn("pod index not synced yet; flows are labelled unknown until it is")
		}
		return nil
	})
	g.Go(func() error { return f.collector.Run(ctx) })
	if f.addr != "" {
		g.Go(func() error { return ServeFlows(ctx, f.addr, &FlowServer{Node: f.node, Source: f.collector}, f.log) })
	}
	return g.Wait()
}

// Close leaves the flow program attached and pinned, as Kernel.Close does.
func (f *agentFlows) Close() error { return f.collector.Close() }
