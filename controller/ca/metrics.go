package ca

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts the CA's answers.
type Metrics struct {
	requests *prometheus.CounterVec
}

// NewMetrics registers the CA's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_ca_csr_total",
		Help: "Certificate signing requests by result (signed, denied, error) and denial reason.",
	}, []string{"result", "reason"})}
	if err := reg.Register(m.requests); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) observe(result string, reason Reason) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(result, string(reason)).Inc()
}
