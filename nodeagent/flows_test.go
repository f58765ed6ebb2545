package nodeagent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A flow to a Service's cluster IP is labelled with the Service, its
// namespace, and an unknown workload and identity; a flow to a pod has an
// unknown destination_service.
func TestFlowMetricsService(t *testing.T) {
	src := PodMeta{Namespace: "shop", Name: "web-1", Workload: "web", ServiceAccount: "web"}
	src.SetIdentity("cluster.local")
	svc := PodMeta{Namespace: "db", Service: "pg"}
	svc.SetIdentity("cluster.local")
	if svc.Identity != "" || svc.ServiceName() != "db/pg" || svc.Known() {
		t.Fatalf("service meta %+v: identity %q, name %q", svc, svc.Identity, svc.ServiceName())
	}
	pod := PodMeta{Namespace: "db", Name: "pg-0", Workload: "pg", ServiceAccount: "default"}
	pod.SetIdentity("cluster.local")
	m := newFlowMetrics()
	now := time.Now()
	for _, dst := range []PodMeta{svc, svc, pod} {
		m.observe(&FlowEvent{Kind: FlowEnd, End: EndClosed, Hop: HopApp, SourcePod: src, DestinationPod: dst,
			Start: now, Established: now, Time: now, BytesSent: 10})
	}
	base := prometheus.Labels{"hop": "app", "source_workload": "web", "source_namespace": "shop",
		"source_identity": "spiffe://cluster.local/ns/shop/sa/web", "end": "closed"}
	with := func(kv ...string) prometheus.Labels {
		out := prometheus.Labels{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	toSvc := with("destination_workload", "unknown", "destination_namespace", "db", "destination_identity", "unknown", "destination_service", "db/pg")
	toPod := with("destination_workload", "pg", "destination_namespace", "db", "destination_identity", "spiffe://cluster.local/ns/db/sa/default", "destination_service", "unknown")
	if got := testutil.ToFloat64(m.connections.With(toSvc)); got != 2 {
		t.Errorf("connections to the Service: %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.connections.With(toPod)); got != 1 {
		t.Errorf("connections to the pod: %v, want 1", got)
	}
}

// The flow stream names the Service in the destination endpoint.
func TestFlowEventProtoService(t *testing.T) {
	now := time.Now()
	e := FlowEventProto("n1", &FlowEvent{Kind: FlowStart, Hop: HopApp,
		SourceIP: netip.MustParseAddr("10.244.1.5"), Local: netip.MustParseAddrPort("127.0.0.1:40000"),
		Remote: netip.MustParseAddrPort("127.0.0.1:15001"), Destination: netip.MustParseAddrPort("10.96.154.233:80"),
		DestinationPod: PodMeta{Namespace: "db", Service: "pg"}, Start: now, Time: now})
	d := e.GetDestination()
	if d.GetService() != "pg" || d.GetNamespace() != "db" || d.GetPod() != "" || d.GetIdentity() != "" ||
		d.GetIp() != "10.96.154.233" || d.GetPort() != 80 || e.GetSource().GetService() != "" {
		t.Errorf("destination %v, source %v", d, e.GetSource())
	}
}
