package nodeagent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/bpf/redirect"
)

// Names of the eBPF programs and actions in metric labels: the counters
// map's slots (enum prog_id and enum action in redirect.c).
var (
	programNames = redirect.CounterPrograms
	actionNames  = redirect.CounterActions
)

// stats is what the kernel says at scrape time.
type stats struct {
	pods       int
	actions    [len(programNames)][len(actionNames)]uint64
	mapEntries map[string]int
}

type metrics struct {
	errors *prometheus.CounterVec
	stats  func() (stats, error)

	podsDesc, actionsDesc, entriesDesc, scrapeErrDesc *prometheus.Desc
}

func newMetrics(statsFn func() (stats, error)) *metrics {
	return &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "warren", Subsystem: "agent", Name: "errors_total",
			Help: "Failed dataplane operations, by operation.",
		}, []string{"op"}),
		stats: statsFn,
		podsDesc: prometheus.NewDesc("warren_agent_enrolled_pods",
			"Pods whose traffic goes through the tunnel.", nil, nil),
		actionsDesc: prometheus.NewDesc("warren_agent_bpf_actions_total",
			"What the eBPF programs did with the sockets of enrolled pods, by program and action.",
			[]string{"program", "action"}, nil),
		entriesDesc: prometheus.NewDesc("warren_agent_bpf_map_entries",
			"Entries in the agent's eBPF maps.", []string{"map"}, nil),
		scrapeErrDesc: prometheus.NewDesc("warren_agent_bpf_scrape_errors",
			"1 when the eBPF maps could not be read for this scrape.", nil, nil),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.errors.Describe(ch)
	ch <- m.podsDesc
	ch <- m.actionsDesc
	ch <- m.entriesDesc
	ch <- m.scrapeErrDesc
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.errors.Collect(ch)
	s, err := m.stats()
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(m.scrapeErrDesc, prometheus.GaugeValue, failed)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.podsDesc, prometheus.GaugeValue, float64(s.pods))
	for p, prog := range programNames {
		for a, action := range actionNames {
			ch <- prometheus.MustNewConstMetric(m.actionsDesc, prometheus.CounterValue,
				float64(s.actions[p][a]), prog, action)
		}
	}
	for name, n := range s.mapEntries {
		ch <- prometheus.MustNewConstMetric(m.entriesDesc, prometheus.GaugeValue, float64(n), name)
	}
}

func (m *metrics) fail(op string) { m.errors.WithLabelValues(op).Inc() }
