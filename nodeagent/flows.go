package nodeagent

import (
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/identity"
)

// FlowKind says whether a FlowEvent opens or closes a flow.
type FlowKind string

// Flow event kinds.
const (
	FlowStart FlowKind = "start" // the connection is established
	FlowEnd   FlowKind = "end"   // it reached TCP_CLOSE; counters are final
)

// Flow hops: which socket of a mesh connection a flow is (see bpf/flows).
const (
	HopApp    = "app"    // the application's own connection (to its node's tunnel, or direct)
	HopTunnel = "tunnel" // the tunnel's connection to the peer's node (HBONE) or a passthrough destination
)

// How a flow ended (FlowEvent.End), and "" for a start event.
const (
	EndClosed = "closed" // orderly close, FIN both ways
	EndReset  = "reset"  // aborted once established (RST, timeout)
	EndFailed = "failed" // never established (refused, unreachable)
)

// FlowEvent is one kernel flow record, resolved to workloads. Bytes and
// segments are counted from the source's (the connecting side's) view.
type FlowEvent struct {
	Kind FlowKind
	// Cookie is the socket cookie: the same for a flow's start and end.
	Cookie uint64
	Hop    string
	// Local and Remote are the source socket's addresses; Destination is
	// where the connection was going: the original destination of a
	// redirected one, else Remote.
	Local, Remote, Destination netip.AddrPort
	// SourceIP is the source pod's address (of the destination's family
	// when it has one): an app's socket to its tunnel has a loopback Local.
	SourceIP netip.Addr
	// SourcePod and DestinationPod name the ends; their zero value is an
	// unknown workload.
	SourcePod, DestinationPod PodMeta
	Start                     time.Time // connect()
	Established               time.Time // zero when it never was
	Time                      time.Time // of this event
	BytesSent, BytesReceived  uint64    // acked by the peer / received in order
	SegmentsSent, SegmentsIn  uint32
	SRTT, MinRTT              time.Duration
	Retransmits               uint32
	End                       string // EndClosed, EndReset, EndFailed; "" for a start
}

// Duration is how long the flow lasted, from connect() to this event.
func (e *FlowEvent) Duration() time.Duration { return e.Time.Sub(e.Start) }

// PodMeta is what flows are labelled with about a pod.
type PodMeta struct {
	Namespace, Name string
	// Workload is the owning controller's name (a Deployment's, not its
	// ReplicaSet's), else the pod's.
	Workload       string
	ServiceAccount string
	// Identity is the SPIFFE ID of the service account, "" when unknown.
	Identity string
	// Service is set instead of the pod's fields when the address is a
	// Service's cluster IP: its name, with Namespace its namespace. The
	// endpoint behind it is chosen later, by the ztunnel, so the workload
	// and identity stay unknown.
	Service string
}

// Known says whether the pod was resolved.
func (p PodMeta) Known() bool { return p.Name != "" }

// ServiceName is "namespace/name" for a Service, else "".
func (p PodMeta) ServiceName() string {
	if p.Service == "" {
		return ""
	}
	return p.Namespace + "/" + p.Service
}

// PodResolver names the pods (or Services, by their cluster IPs) behind addresses.
type PodResolver interface {
	PodByIP(ip netip.Addr) (PodMeta, bool)
}

// SetIdentity fills Identity from the namespace and service account; a
// Service has none.
func (p *PodMeta) SetIdentity(trustDomain string) {
	if p.Namespace == "" || p.Service != "" {
		return
	}
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	p.Identity = identity.ID{TrustDomain: trustDomain, Namespace: p.Namespace, ServiceAccount: sa}.String()
}

const unknown = "unknown"

// flowLabels are the labels of every kernel flow metric: bounded by the
// workloads, service accounts and Services of the cluster, never per pod,
// address or port. destination_service is "namespace/name" when the
// destination is a Service's cluster IP (its workload and identity are then
// unknown: the ztunnel picks the endpoint), else unknown.
var flowLabels = []string{"hop",
	"source_workload", "source_namespace", "source_identity",
	"destination_workload", "destination_namespace", "destination_identity", "destination_service"}

type flowMetrics struct {
	// series caches each label set's children: resolving them through
	// the vectors (hashing 9 labels, 5 times per flow) was most of an
	// event's cost in user space.
	mu     sync.Mutex
	series map[flowKey]*flowSeries

	connections *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	retrans     *prometheus.CounterVec
	rtt         *prometheus.HistogramVec
	events      *prometheus.CounterVec
}

func newFlowMetrics() *flowMetrics {
	return &flowMetrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_kernel_tcp_connections_total",
			Help: "TCP connections opened from enrolled pods that closed, by how they ended (closed, reset, failed), as the kernel saw them.",
		}, append(append([]string{}, flowLabels...), "end")),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_kernel_tcp_bytes_total",
			Help: "Bytes of closed TCP connections from enrolled pods, as the kernel counted them: direction sent (acked by the destination) or received, from the source's view.",
		}, append(append([]string{}, flowLabels...), "direction")),
		retrans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_kernel_tcp_retransmits_total",
			Help: "Segments the source retransmitted, over closed TCP connections from enrolled pods.",
		}, flowLabels),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warren_kernel_tcp_rtt_seconds",
			Help:    "Smoothed round-trip time of each established TCP connection from an enrolled pod, at its close.",
			Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}, flowLabels),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_agent_flow_events_total",
			Help: "Flow events the agent's collector handled, by result: read from the ring buffer, or lost (kernel: ring buffer full; untracked: evicted from the flow table; subscriber: a slow stream client).",
		}, []string{"result"}),
	}
}

func (m *flowMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.connections, m.bytes, m.retrans, m.rtt, m.events}
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

type flowKey struct {
	hop, srcWorkload, srcNamespace, srcIdentity, dstWorkload, dstNamespace, dstIdentity, dstService string
}

type flowSeries struct {
	sent, received, retrans prometheus.Counter
	rtt                     prometheus.Observer
	ends                    map[string]prometheus.Counter
}

func (m *flowMetrics) seriesFor(e *FlowEvent) *flowSeries {
	k := flowKey{e.Hop,
		orUnknown(e.SourcePod.Workload), orUnknown(e.SourcePod.Namespace), orUnknown(e.SourcePod.Identity),
		orUnknown(e.DestinationPod.Workload), orUnknown(e.DestinationPod.Namespace), orUnknown(e.DestinationPod.Identity),
		orUnknown(e.DestinationPod.ServiceName())}
	if s := m.series[k]; s != nil {
		return s
	}
	l := []string{k.hop, k.srcWorkload, k.srcNamespace, k.srcIdentity, k.dstWorkload, k.dstNamespace, k.dstIdentity, k.dstService}
	with := func(v string) []string { return append(append([]string{}, l...), v) }
	s := &flowSeries{
		sent:     m.bytes.WithLabelValues(with("sent")...),
		received: m.bytes.WithLabelValues(with("received")...),
		retrans:  m.retrans.WithLabelValues(l...),
		rtt:      m.rtt.WithLabelValues(l...),
		ends:     map[string]prometheus.Counter{},
	}
	for _, end := range []string{EndClosed, EndReset, EndFailed} {
		s.ends[end] = m.connections.WithLabelValues(with(end)...)
	}
	if m.series == nil {
		m.series = map[flowKey]*flowSeries{}
	}
	m.series[k] = s
	return s
}

// observe counts an end event.
func (m *flowMetrics) observe(e *FlowEvent) {
	if e.Kind != FlowEnd {
		return
	}
	m.mu.Lock()
	s := m.seriesFor(e)
	m.mu.Unlock()
	s.retrans.Add(float64(e.Retransmits))
	if !e.Established.IsZero() {
		s.rtt.Observe(e.SRTT.Seconds())
	}
	s.sent.Add(float64(e.BytesSent))
	s.received.Add(float64(e.BytesReceived))
	if c := s.ends[e.End]; c != nil {
		c.Inc()
	}
}

// flowHub fans events out to stream subscribers. A subscriber that does not
// keep up loses events (counted), never slows the collector.
type flowHub struct {
	mu      sync.Mutex
	subs    map[*flowSub]struct{}
	dropped func()
}

type flowSub struct {
	ch     chan FlowEvent
	filter func(*FlowEvent) bool
}

// FlowSubscriberBuffer is how many events a slow subscriber may lag behind before it loses some.
const FlowSubscriberBuffer = 4096

func (h *flowHub) subscribe(filter func(*FlowEvent) bool) (<-chan FlowEvent, func()) {
	s := &flowSub{ch: make(chan FlowEvent, FlowSubscriberBuffer), filter: filter}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*flowSub]struct{}{}
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
		})
	}
}

// active says whether anyone is subscribed.
func (h *flowHub) active() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

func (h *flowHub) publish(e *FlowEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.filter != nil && !s.filter(e) {
			continue
		}
		select {
		case s.ch <- *e:
		default:
			if h.dropped != nil {
				h.dropped()
			}
		}
	}
}
