package report

import (
	"encoding/json"

	"github.com/warrenmesh/warren/test/bench/stats"
)

// jsonScenario is one element of latest.json. The headline metrics are always present (null when
// the scenario did not run or the metric does not apply) so that a consumer can rely on the keys.
type jsonScenario struct {
	Name         string   `json:"name"`
	Gbps         *float64 `json:"gbps"`
	P50          *float64 `json:"p50_us"`
	P90          *float64 `json:"p90_us"`
	P99          *float64 `json:"p99_us"`
	CPUUsPerReq  *float64 `json:"cpu_us_per_req"`
	RSSMiB       *float64 `json:"rss_mib"` // the whole repetition's peak
	LatRSSMiB    *float64 `json:"lat_rss_mib"`
	LatAnonMiB   *float64 `json:"lat_anon_mib"`
	LatFileMiB   *float64 `json:"lat_file_mib"`
	LatShmMiB    *float64 `json:"lat_shmem_mib"`
	P999         *float64 `json:"p999_us"`
	CPUSecPerGB  *float64 `json:"cpu_s_per_gb"`
	ConnPerS     *float64 `json:"conn_per_s"`
	ConnP50      *float64 `json:"conn_p50_us"`
	ConnP99      *float64 `json:"conn_p99_us"`
	CPUUsPerConn *float64 `json:"cpu_us_per_conn"`
	TputRSSMiB   *float64 `json:"tput_rss_mib"`
	TputAnonMiB  *float64 `json:"tput_anon_mib"`
	TputFileMiB  *float64 `json:"tput_file_mib"`
	TputShmMiB   *float64 `json:"tput_shmem_mib"`
	ConnRSSMiB   *float64 `json:"conn_rss_mib"`
	ConnAnonMiB  *float64 `json:"conn_anon_mib"`
	ConnFileMiB  *float64 `json:"conn_file_mib"`
	ConnShmMiB   *float64 `json:"conn_shmem_mib"`
	Ran          bool     `json:"ran"`
	Reason       string   `json:"reason,omitempty"`
	Runs         int      `json:"runs"`
	Description  string   `json:"description"`

	Min map[Metric]float64 `json:"min,omitempty"`
	Max map[Metric]float64 `json:"max,omitempty"`
	// Ratios of medians: to the baseline for every scenario, to the peer for Warren's.
	VsBaseline map[Metric]float64 `json:"vs_direct,omitempty"`
	VsPeer     map[Metric]float64 `json:"vs_haproxy,omitempty"`
	Proxies    []jsonProxy        `json:"proxies,omitempty"`
}

type jsonProxy struct {
	Name   string             `json:"name"`
	Median map[Metric]float64 `json:"median"`
	Min    map[Metric]float64 `json:"min"`
	Max    map[Metric]float64 `json:"max"`
}

// JSON renders latest.json: an array with one object per scenario.
func JSON(r Run) ([]byte, error) {
	out := make([]jsonScenario, 0, len(r.Scenarios))
	for _, s := range r.Scenarios {
		med := func(m Metric) *float64 {
			if v, ok := s.Values[m]; ok {
				return &v.Median
			}
			return nil
		}
		j := jsonScenario{
			Name: s.Name, Ran: s.Ran, Reason: s.Reason, Runs: s.Runs, Description: s.Description,
			Gbps: med(Gbps), P50: med(P50), P90: med(P90), P99: med(P99), CPUUsPerReq: med(CPUUsPerReq),
			RSSMiB: med(RSSMiB), P999: med(P999), CPUSecPerGB: med(CPUSecPerGB), ConnPerS: med(ConnPerS),
			ConnP50: med(ConnP50), ConnP99: med(ConnP99), CPUUsPerConn: med(CPUUsPerConn),
			LatRSSMiB: med(LatRSSMiB), LatAnonMiB: med(LatAnonMiB), LatFileMiB: med(LatFileMiB), LatShmMiB: med(LatShmMiB),
			TputRSSMiB: med(TputRSSMiB), TputAnonMiB: med(TputAnonMiB), TputFileMiB: med(TputFileMiB), TputShmMiB: med(TputShmMiB),
			ConnRSSMiB: med(ConnRSSMiB), ConnAnonMiB: med(ConnAnonMiB), ConnFileMiB: med(ConnFileMiB), ConnShmMiB: med(ConnShmMiB),
		}
		if s.Ran {
			j.Min, j.Max = bounds(s.Values)
			j.VsBaseline = ratios(r, s, r.Baseline)
			if IsWarren(s.Name) {
				j.VsPeer = ratios(r, s, r.Peer)
			}
		}
		for _, p := range s.Proxies {
			jp := jsonProxy{Name: p.Name, Median: map[Metric]float64{}}
			for m, v := range p.Values {
				jp.Median[m] = v.Median
			}
			jp.Min, jp.Max = bounds(p.Values)
			j.Proxies = append(j.Proxies, jp)
		}
		out = append(out, j)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func bounds(v map[Metric]stats.Summary) (lo, hi map[Metric]float64) {
	lo, hi = map[Metric]float64{}, map[Metric]float64{}
	for m, s := range v {
		lo[m], hi[m] = s.Min, s.Max
	}
	return lo, hi
}

func ratios(r Run, s Scenario, ref string) map[Metric]float64 {
	if ref == s.Name {
		return nil
	}
	out := map[Metric]float64{}
	for _, m := range Metrics {
		if v, ok := r.Ratio(s, m, ref); ok {
			out[m] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
