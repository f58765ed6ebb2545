package report

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/test/bench/stats"
)

// testRun is a run shaped like a real one: a baseline, the peer with two proxies, Warren's L4
// scenario with its two, and a Warren scenario not run.
func testRun() Run {
	direct := Summarize("direct", "client → server, routed", []Sample{
		{Values: map[Metric]float64{Gbps: 20, P50: 200, P90: 300, P99: 500, P999: 900, ConnPerS: 8000}},
		{Values: map[Metric]float64{Gbps: 18, P50: 180, P90: 320, P99: 600, P999: 1000, ConnPerS: 7000}},
		{Values: map[Metric]float64{Gbps: 19, P50: 190, P90: 310, P99: 550, P999: 950, ConnPerS: 9000}},
	})
	// A scenario's memory figures are its largest proxy's, as measure records them.
	peer := Summarize("haproxy-pair", "two HAProxies, mTLS", []Sample{
		{Values: map[Metric]float64{Gbps: 5, P50: 600, P90: 900, P99: 2000, P999: 3000, CPUUsPerReq: 100, RSSMiB: 18, ConnPerS: 2000,
			TputRSSMiB: 18, LatRSSMiB: 17, LatAnonMiB: 9, LatFileMiB: 7.5, LatShmMiB: 0.5},
			Proxies: map[string]map[Metric]float64{
				"haproxy-node2": {RSSMiB: 16, LatRSSMiB: 15, LatAnonMiB: 7, LatFileMiB: 7.5},
				"haproxy-node1": {RSSMiB: 18, CPUUsPerReq: 50, TputRSSMiB: 18, LatRSSMiB: 17, LatAnonMiB: 9, LatFileMiB: 7.5, LatShmMiB: 0.5},
			}},
		{Values: map[Metric]float64{Gbps: 4.75, P50: 660, P90: 1000, P99: 1900, P999: 2800, CPUUsPerReq: 90, RSSMiB: 19, ConnPerS: 1800,
			LatRSSMiB: 19, LatAnonMiB: 10, LatFileMiB: 8, LatShmMiB: 1},
			Proxies: map[string]map[Metric]float64{"haproxy-node1": {RSSMiB: 19, CPUUsPerReq: 45, LatRSSMiB: 19, LatAnonMiB: 10, LatFileMiB: 8, LatShmMiB: 1}}},
	})
	warren := Summarize("warren-l4", "eBPF + two ztunnels", []Sample{
		{Values: map[Metric]float64{Gbps: 6, P50: 700, P99: 1500, CPUUsPerReq: 80, RSSMiB: 19, LatRSSMiB: 16, LatAnonMiB: 3, LatFileMiB: 13},
			Proxies: map[string]map[Metric]float64{
				"ztunnel-node1": {RSSMiB: 19, LatRSSMiB: 16, LatAnonMiB: 3, LatFileMiB: 13},
				"ztunnel-node2": {RSSMiB: 18, LatRSSMiB: 15.5, LatAnonMiB: 2.5, LatFileMiB: 13},
			}},
		{Values: map[Metric]float64{Gbps: 7, P50: 800, P99: 1700, CPUUsPerReq: 100, RSSMiB: 19, LatRSSMiB: 17, LatAnonMiB: 4, LatFileMiB: 13},
			Proxies: map[string]map[Metric]float64{
				"ztunnel-node1": {RSSMiB: 19, LatRSSMiB: 16.5, LatAnonMiB: 3.5, LatFileMiB: 13},
				"ztunnel-node2": {RSSMiB: 18.5, LatRSSMiB: 17, LatAnonMiB: 4, LatFileMiB: 13},
			}},
	})
	return Run{
		Date:        time.Date(2026, 11, 26, 2, 30, 0, 0, time.UTC),
		Host:        "2 × test CPU, Linux 6.18",
		Tools:       []string{"iperf3 3.12", "fortio 1.68.2"},
		Settings:    []string{"throughput: iperf3"},
		Reps:        3,
		LatencyLoad: "fortio, 1000 qps × 8 connections",
		Baseline:    "direct",
		Peer:        "haproxy-pair",
		Scenarios: []Scenario{
			direct, peer, warren,
			NotRun("warren-waypoint", "through a waypoint", "no waypoint yet"),
		},
	}
}

func TestSummarize(t *testing.T) {
	r := testRun()
	d, _ := r.Scenario("direct")
	if got, want := d.Values[Gbps], (stats.Summary{Median: 19, Min: 18, Max: 20, N: 3}); got != want {
		t.Errorf("direct gbps = %+v, want %+v", got, want)
	}
	if _, ok := d.Values[CPUUsPerReq]; ok {
		t.Error("direct has no proxy, so no proxy CPU")
	}
	h, _ := r.Scenario("haproxy-pair")
	if len(h.Proxies) != 2 || h.Proxies[0].Name != "haproxy-node1" {
		t.Fatalf("proxies = %+v, want node1 then node2", h.Proxies)
	}
	if got := h.Proxies[0].Values[RSSMiB]; got.Median != 18.5 || got.N != 2 {
		t.Errorf("node1 rss = %+v", got)
	}
	if got := h.Proxies[1].Values[RSSMiB]; got.N != 1 {
		t.Errorf("node2 rss is in one sample only: %+v", got)
	}
}

func TestRatio(t *testing.T) {
	r := testRun()
	h, _ := r.Scenario("haproxy-pair")
	w, _ := r.Scenario("warren-waypoint")
	l4, _ := r.Scenario("warren-l4")
	d, _ := r.Scenario("direct")
	tests := []struct {
		name string
		s    Scenario
		m    Metric
		ref  string
		want float64
		ok   bool
	}{
		{"throughput to direct", h, Gbps, "direct", 4.875 / 19, true},
		{"p50 to direct", h, P50, "direct", 630.0 / 190, true},
		{"metric the baseline lacks", h, CPUUsPerReq, "direct", 0, false},
		{"scenario not run", w, Gbps, "haproxy-pair", 0, false},
		{"reference not run", h, Gbps, "warren-waypoint", 0, false},
		{"peak RSS at the fixed rate to the peer", l4, LatRSSMiB, "haproxy-pair", 16.5 / 18, true},
		{"anonymous pages to the peer", l4, LatAnonMiB, "haproxy-pair", 3.5 / 9.5, true},
		{"memory the baseline lacks", l4, LatRSSMiB, "direct", 0, false},
		{"unknown reference", d, Gbps, "nope", 0, false},
		{"itself", d, P99, "direct", 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := r.Ratio(tt.s, tt.m, tt.ref)
			if ok != tt.ok || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Ratio = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestMarkdown(t *testing.T) {
	md := string(Markdown(testRun()))
	for _, want := range []string{
		"# Warren benchmarks, 2026-11-26 02:30 UTC",
		"| direct | 19.00 (18.00–20.00) | 1.00 | - | - |",
		// The throughput table's RSS is the throughput test's own peak.
		"| haproxy-pair | 4.88 (4.75–5.00) | 0.26 | - | 18.0 |",
		"| warren-waypoint | not run | not run |",
		"**not run**: no waypoint yet",
		// Latency: p50..p99.9, two ratios, CPU, then peak RSS and its split at the fixed rate.
		"| haproxy-pair | 630 (600–660) | 950 (900–1000) | 1950 (1900–2000) | 2900 (2800–3000) | 3.32 | 3.55 | 95.0 (90.0–100.0) | 18.0 (17.0–19.0) | 9.5 (9.0–10.0) | 7.8 (7.5–8.0) | 0.8 (0.5–1.0) |",
		"| warren-l4 | 1.33 | 1.19 | 0.82 | 0.95 | n/a | 0.92 | 0.37 | 1.68 | 1.03 | n/a | n/a |",
		"| warren-waypoint | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |",
		"| haproxy-pair | haproxy-node2 | 15.0 | 16.0 | - | - | - |",
		"| warren-l4 | ztunnel-node2 | 16.2 (15.5–17.0) | 18.2 (18.0–18.5) | - | - | - |",
		// Memory: whole repetition, then peak, anon, file, shmem of each test.
		"| haproxy-pair | (largest) | 18.5 (18.0–19.0) | 18.0 | - | - | - | 18.0 (17.0–19.0) | 9.5 (9.0–10.0) | 7.8 (7.5–8.0) | 0.8 (0.5–1.0) | - | - | - | - |",
		"| warren-l4 | ztunnel-node1 | 19.0 | - | - | - | - | 16.2 (16.0–16.5) | 3.2 (3.0–3.5) | 13.0 | - | - | - | - | - |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| direct | n/a") {
		t.Error("the baseline is not a Warren scenario and must not appear in the Warren table")
	}
	if strings.Contains(md, "| direct | (largest)") || strings.Contains(md, "| warren-waypoint | (largest)") {
		t.Error("a scenario without a proxy, or not run, has no memory rows")
	}
}

func TestJSON(t *testing.T) {
	b, err := JSON(testRun())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("%d scenarios, want 4", len(got))
	}
	for _, s := range got {
		for _, k := range []string{"name", "gbps", "p50_us", "p90_us", "p99_us", "cpu_us_per_req", "rss_mib",
			"lat_rss_mib", "lat_anon_mib", "lat_file_mib", "lat_shmem_mib", "tput_rss_mib", "conn_rss_mib", "ran"} {
			if _, ok := s[k]; !ok {
				t.Errorf("%v lacks %q", s["name"], k)
			}
		}
	}
	w := got[3]
	if w["ran"] != false || w["gbps"] != nil || w["p50_us"] != nil || w["lat_rss_mib"] != nil || w["reason"] != "no waypoint yet" {
		t.Errorf("not-run scenario must carry no numbers and a reason: %v", w)
	}
	h := got[1]
	if h["gbps"] != 4.875 || h["cpu_us_per_req"] != 95.0 || h["vs_direct"].(map[string]any)["gbps"] != 4.875/19 {
		t.Errorf("haproxy-pair: %v", h)
	}
	if _, ok := h["vs_haproxy"]; ok {
		t.Error("only Warren's scenarios are compared with the peer")
	}
	if h["lat_rss_mib"] != 18.0 || h["lat_anon_mib"] != 9.5 || h["lat_file_mib"] != 7.75 || h["lat_shmem_mib"] != 0.75 || h["rss_mib"] != 18.5 {
		t.Errorf("haproxy-pair memory: %v", h)
	}
	l4 := got[2]
	if vs := l4["vs_haproxy"].(map[string]any); vs["lat_rss_mib"] != 16.5/18 || vs["lat_file_mib"] != 13/7.75 {
		t.Errorf("warren-l4 vs the peer: %v", vs)
	}
	px := l4["proxies"].([]any)[1].(map[string]any)
	if px["name"] != "ztunnel-node2" || px["median"].(map[string]any)["lat_anon_mib"] != 3.25 || px["max"].(map[string]any)["lat_rss_mib"] != 17.0 {
		t.Errorf("ztunnel-node2: %v", px)
	}
	if got[0]["cpu_us_per_req"] != nil || got[0]["lat_rss_mib"] != nil {
		t.Error("direct has no proxy CPU or memory: want null")
	}
}

func TestChart(t *testing.T) {
	var b bytes.Buffer
	if err := Chart(testRun(), &b); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() < 500 {
		t.Errorf("chart is %v", img.Bounds())
	}
	if out := os.Getenv("BENCH_CHART_OUT"); out != "" { // to look at it while working on it
		if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Chart(Run{Scenarios: []Scenario{NotRun("x", "", "y")}}, &b); err == nil {
		t.Error("a chart with nothing that ran should be an error")
	}
}

func TestLogTicks(t *testing.T) {
	tests := []struct {
		min, max float64
		want     []float64
	}{
		{150, 4000, []float64{200, 500, 1000, 2000}},
		{100, 100, []float64{100}},
		{0.3, 3, []float64{0.5, 1, 2}},
	}
	for _, tt := range tests {
		var got []float64
		for _, tk := range (logTicks{}).Ticks(tt.min, tt.max) {
			got = append(got, tk.Value)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Ticks(%v, %v) = %v, want %v", tt.min, tt.max, got, tt.want)
		}
	}
}
