package ztunnel

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/identity"
)

// Security policies of a connection, the connection_security_policy label.
const (
	secMTLS = "mutual_tls"
	secNone = "none"
)

// unknown stands for a peer outside the configuration, so that labels stay
// bounded by the mesh's size whatever addresses connect.
const unknown = "unknown"

// connLabels are the labels of every connection metric. Values come from the
// configuration (workloads, services), never from raw addresses.
var connLabels = []string{
	"direction", // outbound (reported by the source's ztunnel) or inbound (the destination's)
	"source_workload", "source_namespace", "source_principal",
	"destination_workload", "destination_namespace", "destination_principal",
	"destination_service",
	"connection_security_policy",
	// waypoint: "<namespace>/<name>" of the waypoint the connection goes
	// to (outbound) or came through (inbound), "none" if direct.
	"waypoint",
}

// noWaypoint is the waypoint label of a direct connection.
const noWaypoint = "none"

type metrics struct {
	opened, closed *prometheus.CounterVec
	// received: bytes from the source to the destination; sent: back.
	received, sent *prometheus.CounterVec
	refused        *prometheus.CounterVec
	certs          *prometheus.CounterVec // CA requests by result
	meshUpdates    *prometheus.CounterVec // controller updates by result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_ztunnel_tcp_connections_opened_total", Help: "TCP connections the ztunnel opened to their destination.",
		}, connLabels),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_ztunnel_tcp_connections_closed_total", Help: "TCP connections the ztunnel relayed to their end.",
		}, connLabels),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_ztunnel_tcp_received_bytes_total", Help: "Bytes from the source to the destination, counted when the connection closes.",
		}, connLabels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_ztunnel_tcp_sent_bytes_total", Help: "Bytes from the destination back to the source, counted when the connection closes.",
		}, connLabels),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_ztunnel_connections_refused_total", Help: "Connections refused, by direction and reason.",
		}, []string{"direction", "reason"}),
		certs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_ztunnel_certificate_requests_total", Help: "Certificate requests to the mesh CA, by result (issued, renewed, error).",
		}, []string{"result"}),
		meshUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_ztunnel_config_updates_total", Help: "Configuration updates from the controller, by result (acked, nacked).",
		}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.opened, m.closed, m.received, m.sent, m.refused, m.certs, m.meshUpdates} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// connMetrics are one connection's counters, resolved once.
type connMetrics struct {
	closed, received, sent prometheus.Counter
}

// labelValues are a connection's values of connLabels. The source principal
// is peer, the identity the source's mTLS handshake proved, whenever there
// is one (it is bounded as workloads are: the mesh CA issues it); without
// one, the known source workload's. via is the waypoint's name, "" if none.
func (m *metrics) labelValues(direction string, src *Workload, peer identity.ID, dst *Workload, svc *Service, mtls bool, via string) []string {
	lv := []string{direction, unknown, unknown, unknown, unknown, unknown, unknown, unknown, secNone, noWaypoint}
	if src != nil {
		lv[1], lv[2], lv[3] = src.Name, src.Namespace, principal(src)
	}
	if !peer.IsZero() {
		lv[3] = peer.String()
	}
	if dst != nil {
		lv[4], lv[5], lv[6] = dst.Name, dst.Namespace, principal(dst)
	}
	if svc != nil {
		lv[7] = svc.Namespace + "/" + svc.Name
	}
	if mtls {
		lv[8] = secMTLS
	}
	if via != "" {
		lv[9] = via
	}
	return lv
}

// open counts a connection opened and returns its counters for done.
func (m *metrics) open(lv []string) connMetrics {
	m.opened.WithLabelValues(lv...).Inc()
	return connMetrics{closed: m.closed.WithLabelValues(lv...), received: m.received.WithLabelValues(lv...), sent: m.sent.WithLabelValues(lv...)}
}

func (c connMetrics) done(received, sent int64) {
	c.received.Add(float64(received))
	c.sent.Add(float64(sent))
	c.closed.Inc()
}

func principal(w *Workload) string {
	if !w.Enrolled {
		return unknown
	}
	return w.Identity().String()
}
