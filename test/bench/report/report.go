// Package report turns the benchmark's per-repetition samples into what it publishes: medians
// with min–max, ratios to the direct path and of Warren to the HAProxy pair, a Markdown page, a
// JSON file for tracking over time and a latency chart. It does no I/O of its own beyond the
// writers it is given, so all of it is tested without root.
package report

import (
	"slices"
	"strings"
	"time"

	"github.com/warrenmesh/warren/test/bench/stats"
)

// Metric names one measured quantity; the names are the JSON keys.
type Metric string

// What the benchmark measures. CPU is of the scenario's proxies: summed over the proxies for a
// scenario, per process for a proxy.
//
// Memory is measured per test: each proxy's peak (VmHWM) is reset before the test and read after
// it, and its resident set (VmRSS) split into anonymous, file-backed and shared pages is read at
// its end.
// For a scenario, a test's peak is its largest proxy's, and the split is that same proxy's.
const (
	Gbps         Metric = "gbps"            // iperf3, receiver side
	CPUSecPerGB  Metric = "cpu_s_per_gb"    // proxy CPU seconds per 10^9 bytes carried
	P50          Metric = "p50_us"          // keep-alive latency at fixed rate
	P90          Metric = "p90_us"          //
	P99          Metric = "p99_us"          //
	P999         Metric = "p999_us"         //
	CPUUsPerReq  Metric = "cpu_us_per_req"  // proxy CPU µs per keep-alive request
	RSSMiB       Metric = "rss_mib"         // peak RSS over the whole repetition: start-up and all three tests
	ConnPerS     Metric = "conn_per_s"      // new connection per request, as fast as it goes
	ConnP50      Metric = "conn_p50_us"     //
	ConnP99      Metric = "conn_p99_us"     //
	CPUUsPerConn Metric = "cpu_us_per_conn" // proxy CPU µs per connection (one request each)

	TputRSSMiB  Metric = "tput_rss_mib"   // peak RSS during the throughput test
	TputAnonMiB Metric = "tput_anon_mib"  // RssAnon at the end of the throughput test
	TputFileMiB Metric = "tput_file_mib"  // RssFile at the end of the throughput test
	TputShmMiB  Metric = "tput_shmem_mib" // RssShmem at the end of the throughput test
	LatRSSMiB   Metric = "lat_rss_mib"    // peak RSS during the latency test (fixed request rate)
	LatAnonMiB  Metric = "lat_anon_mib"   // RssAnon at the end of the latency test
	LatFileMiB  Metric = "lat_file_mib"   // RssFile at the end of the latency test
	LatShmMiB   Metric = "lat_shmem_mib"  // RssShmem at the end of the latency test
	ConnRSSMiB  Metric = "conn_rss_mib"   // peak RSS during the connection-rate test
	ConnAnonMiB Metric = "conn_anon_mib"  // RssAnon at the end of the connection-rate test
	ConnFileMiB Metric = "conn_file_mib"  // RssFile at the end of the connection-rate test
	ConnShmMiB  Metric = "conn_shmem_mib" // RssShmem at the end of the connection-rate test
)

// Metrics lists every metric in report order.
var Metrics = []Metric{Gbps, CPUSecPerGB, P50, P90, P99, P999, CPUUsPerReq, RSSMiB, ConnPerS, ConnP50, ConnP99, CPUUsPerConn,
	TputRSSMiB, TputAnonMiB, TputFileMiB, TputShmMiB, LatRSSMiB, LatAnonMiB, LatFileMiB, LatShmMiB,
	ConnRSSMiB, ConnAnonMiB, ConnFileMiB, ConnShmMiB}

// MemoryTest is the memory figures of one test: its peak and its end-of-test split.
type MemoryTest struct {
	Name                    string // "throughput", "latency", "connection rate"
	Peak, Anon, File, Shmem Metric
}

// MemoryTests lists the tests in the order they run.
var MemoryTests = []MemoryTest{
	{"throughput", TputRSSMiB, TputAnonMiB, TputFileMiB, TputShmMiB},
	{"latency", LatRSSMiB, LatAnonMiB, LatFileMiB, LatShmMiB},
	{"connection rate", ConnRSSMiB, ConnAnonMiB, ConnFileMiB, ConnShmMiB},
}

// Sample is one repetition of one scenario. A metric a scenario cannot have (proxy CPU on the
// direct path) is absent.
type Sample struct {
	Values  map[Metric]float64
	Proxies map[string]map[Metric]float64 // proxy name -> its own figures
}

// Proxy is one proxy process's figures over the repetitions.
type Proxy struct {
	Name   string
	Values map[Metric]stats.Summary
}

// Scenario is one path through the topology, summarised over its repetitions, or the reason it
// was not run.
type Scenario struct {
	Name        string
	Description string
	Ran         bool
	Reason      string // why it did not run
	Runs        int
	Values      map[Metric]stats.Summary
	Proxies     []Proxy
}

// Summarize reduces the samples of a scenario to medians with min and max.
func Summarize(name, description string, samples []Sample) Scenario {
	s := Scenario{Name: name, Description: description, Ran: true, Runs: len(samples), Values: summarize(samples, func(x Sample) map[Metric]float64 { return x.Values })}
	var proxies []string
	for _, x := range samples {
		for p := range x.Proxies {
			if !slices.Contains(proxies, p) {
				proxies = append(proxies, p)
			}
		}
	}
	slices.Sort(proxies)
	for _, p := range proxies {
		s.Proxies = append(s.Proxies, Proxy{Name: p, Values: summarize(samples, func(x Sample) map[Metric]float64 { return x.Proxies[p] })})
	}
	return s
}

// NotRun records a scenario that could not run, and why.
func NotRun(name, description, reason string) Scenario {
	return Scenario{Name: name, Description: description, Reason: reason}
}

func summarize(samples []Sample, values func(Sample) map[Metric]float64) map[Metric]stats.Summary {
	out := map[Metric]stats.Summary{}
	for _, m := range Metrics {
		var xs []float64
		for _, x := range samples {
			if v, ok := values(x)[m]; ok {
				xs = append(xs, v)
			}
		}
		if s, ok := stats.Summarize(xs); ok {
			out[m] = s
		}
	}
	return out
}

// Run is one invocation of the benchmark.
type Run struct {
	Date     time.Time
	Host     string   // CPU, cores, kernel
	Tools    []string // "haproxy 2.6.12", ...
	Settings []string // what each load does, one line each
	Reps     int
	// LatencyLoad says how the latency figures were taken ("fortio, 1000 qps × 8 connections").
	LatencyLoad string
	Baseline    string // scenario every other is compared with ("direct")
	Peer        string // the established proxy Warren is compared with ("haproxy-pair")
	Scenarios   []Scenario
}

// IsWarren tells whether a scenario is one of Warren's, which get the comparison with the peer.
func IsWarren(name string) bool { return strings.HasPrefix(name, "warren") }

// Scenario returns the named scenario.
func (r Run) Scenario(name string) (Scenario, bool) {
	for _, s := range r.Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Ratio is the median of m in s divided by its median in scenario ref. ok is false when either
// did not run or lacks m, or ref's median is zero.
func (r Run) Ratio(s Scenario, m Metric, ref string) (float64, bool) {
	b, ok := r.Scenario(ref)
	if !ok || !s.Ran || !b.Ran {
		return 0, false
	}
	x, ok1 := s.Values[m]
	y, ok2 := b.Values[m]
	if !ok1 || !ok2 || y.Median == 0 {
		return 0, false
	}
	return x.Median / y.Median, true
}
