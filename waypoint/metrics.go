package waypoint

import (
	"net/http"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/identity"
	"github.com/warrenmesh/warren/waypoint/model"
)

// unknown stands for a label the configuration cannot fill, so that label
// values stay bounded by the mesh's size whatever the traffic.
const unknown = "unknown"

// requestLabels are the labels of the request metrics, Istio's golden
// signals. Values come from the configuration (routes, workloads, Services)
// or from small fixed sets (method class, status codes), never from raw
// request data.
var requestLabels = []string{
	"response_code", "grpc_status", "request_method", "route",
	"source_workload", "source_namespace", "source_principal",
	"destination_workload", "destination_namespace", "destination_principal",
	"destination_service",
}

type metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	reqBytes       *prometheus.CounterVec
	respBytes      *prometheus.CounterVec
	tcp            *prometheus.CounterVec
	tunnelsRefused *prometheus.CounterVec
	configs        *prometheus.CounterVec
	mirrorsDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_requests_total", Help: "HTTP and gRPC requests the waypoint answered.",
		}, requestLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "warren_request_duration_seconds", Help: "Time from a request's arrival to the end of its response.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, requestLabels),
		reqBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_request_bytes_total", Help: "Request body bytes read from the callers.",
		}, requestLabels),
		respBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_response_bytes_total", Help: "Response body bytes written to the callers.",
		}, requestLabels),
		tcp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_waypoint_tcp_connections_opened_total", Help: "Connections to TCP ports relayed to an endpoint.",
		}, []string{"source_workload", "source_namespace", "source_principal", "destination_workload", "destination_namespace", "destination_principal", "destination_service"}),
		tunnelsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_waypoint_tunnels_refused_total", Help: "Incoming HBONE tunnels refused, by reason.",
		}, []string{"reason"}),
		configs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_waypoint_config_updates_total", Help: "Configurations offered to the waypoint, by result (applied, rejected).",
		}, []string{"result"}),
		mirrorsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_waypoint_mirrors_dropped_total", Help: "Mirrored requests not sent: too many in flight, or a body too large to keep.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.reqBytes, m.respBytes, m.tcp, m.tunnelsRefused, m.configs, m.mirrorsDropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// methodClass bounds request_method to the standard methods.
func methodClass(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodConnect, http.MethodOptions, http.MethodTrace, http.MethodPatch:
		return m
	}
	return "other"
}

// peerLabels are source labels: the workload by address, the rest from the
// verified identity.
func peerLabels(st *model.State, id identity.ID, addr netip.Addr) (workload, namespace, principal string) {
	workload, namespace, principal = unknown, unknown, unknown
	if !id.IsZero() {
		namespace, principal = id.Namespace, id.String()
	}
	if st != nil {
		if wl, ok := st.WorkloadByIP(addr); ok && wl.Name != "" {
			workload = wl.Name
		}
	}
	return workload, namespace, principal
}

// destLabels are destination labels from the endpoint picked.
func destLabels(st *model.State, ep netip.AddrPort) (workload, namespace, principal string) {
	workload, namespace, principal = unknown, unknown, unknown
	if st == nil || !ep.IsValid() {
		return
	}
	e, ok := st.Endpoint(ep.Addr())
	if !ok {
		return
	}
	if e.Enrolled {
		namespace, principal = e.Identity.Namespace, e.Identity.String()
	}
	if e.Workload != nil {
		workload, namespace = e.Workload.Name, e.Workload.Namespace
	}
	return workload, namespace, principal
}

func (m *metrics) tcpOpened(st *model.State, port *model.Port, info *tunnelInfo, ep netip.AddrPort) prometheus.Counter {
	sw, sn, sp := peerLabels(st, info.caller, info.addr)
	dw, dn, dp := destLabels(st, ep)
	return m.tcp.WithLabelValues(sw, sn, sp, dw, dn, dp, port.Service.Key())
}
