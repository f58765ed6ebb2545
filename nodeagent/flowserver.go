package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	flowv1 "github.com/warrenmesh/warren/api/proto/flow/v1"
)

// DefaultFlowAddr is where the agent serves its flow stream (gRPC, service
// warren.flow.v1.Flows): loopback only, since the stream says who talks to
// whom; warrenctl observe reaches it through a Kubernetes port-forward to
// the agent's pod (host network: the node's loopback).
const DefaultFlowAddr = "127.0.0.1:15025"

// FlowSource is what the flow server streams: FlowCollector.
type FlowSource interface {
	Subscribe(filter func(*FlowEvent) bool) (events <-chan FlowEvent, cancel func())
}

// FlowServer serves warren.flow.v1.Flows from a FlowSource.
type FlowServer struct {
	flowv1.UnimplementedFlowsServer
	Node   string
	Source FlowSource
}

// Observe implements flowv1.FlowsServer.
func (s *FlowServer) Observe(req *flowv1.ObserveRequest, stream grpc.ServerStreamingServer[flowv1.FlowEvent]) error {
	f := req.GetFilter()
	if err := f.Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	events, cancel := s.Source.Subscribe(func(e *FlowEvent) bool { return f.Match(FlowEventProto(s.Node, e)) })
	defer cancel()
	// Headers now: the client knows it is subscribed before the first event.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-events:
			if err := stream.Send(FlowEventProto(s.Node, &e)); err != nil {
				return err
			}
		}
	}
}

// ServeFlows serves the flow stream on addr until ctx ends.
func ServeFlows(ctx context.Context, addr string, srv *FlowServer, log *slog.Logger) error {
	ln, err := listenReusePort(ctx, addr, "flow server", log)
	if err != nil || ln == nil {
		return err
	}
	g := grpc.NewServer()
	flowv1.RegisterFlowsServer(g, srv)
	stop := context.AfterFunc(ctx, g.Stop)
	defer stop()
	log.Info("flow stream serving", "addr", ln.Addr().String())
	if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("flow server: %w", err)
	}
	return nil
}

// FlowEventProto is e on the wire.
func FlowEventProto(node string, e *FlowEvent) *flowv1.FlowEvent {
	out := &flowv1.FlowEvent{
		TimeUnixNano:     e.Time.UnixNano(),
		Node:             node,
		Verdict:          verdict(e),
		Hop:              e.Hop,
		Source:           endpoint(netip.AddrPortFrom(e.SourceIP, e.Local.Port()), e.SourcePod),
		Destination:      endpoint(e.Destination, e.DestinationPod),
		Cookie:           e.Cookie,
		StartUnixNano:    e.Start.UnixNano(),
		DurationNanos:    int64(e.Duration()),
		BytesSent:        e.BytesSent,
		BytesReceived:    e.BytesReceived,
		SegmentsSent:     e.SegmentsSent,
		SegmentsReceived: e.SegmentsIn,
		SrttUs:           uint32(e.SRTT.Microseconds()),
		MinRttUs:         uint32(e.MinRTT.Microseconds()),
		Retransmits:      e.Retransmits,
	}
	if !e.SourceIP.IsValid() {
		out.Source.Ip = e.Local.Addr().String()
	}
	if e.Remote != e.Destination {
		out.Via = e.Remote.String()
	}
	return out
}

func verdict(e *FlowEvent) flowv1.Verdict {
	if e.Kind == FlowStart {
		return flowv1.Verdict_ESTABLISHED
	}
	switch e.End {
	case EndClosed:
		return flowv1.Verdict_CLOSED
	case EndReset:
		return flowv1.Verdict_RESET
	default:
		return flowv1.Verdict_FAILED
	}
}

func endpoint(ap netip.AddrPort, p PodMeta) *flowv1.Endpoint {
	ep := &flowv1.Endpoint{Port: uint32(ap.Port()), Namespace: p.Namespace, Pod: p.Name,
		Workload: p.Workload, ServiceAccount: p.ServiceAccount, Identity: p.Identity, Service: p.Service}
	if ap.Addr().IsValid() {
		ep.Ip = ap.Addr().String()
	}
	return ep
}
