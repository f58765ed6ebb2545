package distribution

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the distribution server.
type Metrics struct {
	subscribers prometheus.Gauge
	pushes      *prometheus.CounterVec
	ackLatency  prometheus.Histogram
}

// NewMetrics registers the server's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "warren_controller_subscribers", Help: "Subscribers connected to this replica.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_controller_pushes_total", Help: "Updates pushed, by kind (snapshot, delta) and answer (ack, nack).",
		}, []string{"kind", "answer"}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "warren_controller_push_ack_seconds",
			Help:    "Time from the model change to the subscriber's ack.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	if err := errors.Join(reg.Register(m.subscribers), reg.Register(m.pushes), reg.Register(m.ackLatency)); err != nil {
		return nil, err
	}
	return m, nil
}
