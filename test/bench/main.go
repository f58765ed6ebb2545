// Command bench is `make bench`: it measures Warren's data path against the direct path and a
// pair of HAProxies doing mutual TLS, on network namespaces it creates (two "nodes", a client pod
// and server pods) and always removes, and writes bench/results/<date>.md, latest.json and
// latency.png. Every figure is quoted as a ratio to a baseline measured in the same run, because
// the machines it runs on are shared and noisy.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/test/bench/report"
)

// fortioVersion is the newest fortio the Go module proxy here serves with all its dependencies.
const fortioVersion = "1.68.2"

type options struct {
	reps      int
	only      string
	out       string
	load      load
	keepWork  bool
	verbosity slog.Level
}

func main() {
	var o options
	flag.IntVar(&o.reps, "reps", 3, "repetitions of every scenario, interleaved")
	flag.StringVar(&o.only, "scenarios", "", "comma-separated scenarios to run (default all)")
	flag.StringVar(&o.out, "out", "bench/results", "directory for the results")
	flag.DurationVar(&o.load.iperfTime, "iperf-time", 10*time.Second, "duration of the throughput test")
	flag.DurationVar(&o.load.latencyTime, "latency-time", 15*time.Second, "duration of the latency test")
	flag.DurationVar(&o.load.connTime, "conn-time", 10*time.Second, "duration of the connection-rate test")
	flag.IntVar(&o.load.qps, "qps", 1000, "request rate of the latency test")
	flag.IntVar(&o.load.conns, "conns", 8, "connections of the latency and connection-rate tests")
	flag.BoolVar(&o.keepWork, "keep", false, "keep the working directory (configs, logs, raw tool output)")
	debug := flag.Bool("v", false, "debug logs")
	flag.Parse()
	if *debug {
		o.verbosity = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.verbosity}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := bench(ctx, log, o)
	stop()
	if err != nil {
		log.Error("bench failed", "err", err)
		os.Exit(1)
	}
}

func bench(ctx context.Context, log *slog.Logger, o options) (err error) {
	if o.reps < 1 {
		return errors.New("-reps must be at least 1")
	}
	if os.Geteuid() != 0 {
		return errors.New("the benchmark creates network namespaces and needs root")
	}
	for _, tool := range []string{"ip", "sysctl", "haproxy", "iperf3"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (make bench installs it through hack/deps.sh): %w", tool, err)
		}
	}
	if o.load.fortio, err = ensureFortio(ctx, log); err != nil {
		return err
	}
	all := scenarios()
	if o.only == "" {
		all = slices.DeleteFunc(all, func(s Scenario) bool { return optional[s.Name()] })
	} else {
		want := strings.Split(o.only, ",")
		all = slices.DeleteFunc(all, func(s Scenario) bool { return !slices.Contains(want, s.Name()) })
		if len(all) == 0 {
			return fmt.Errorf("-scenarios %q matches nothing", o.only)
		}
	}

	if err := removeStale(ctx, log); err != nil {
		return fmt.Errorf("stale namespaces: %w", err)
	}
	work, err := os.MkdirTemp("", "wbench-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil || o.keepWork {
			log.Info("working directory kept", "dir", work)
			return
		}
		os.RemoveAll(work)
	}()
	topo, err := NewTopology(ctx, log, work)
	if err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	defer func() {
		if cerr := topo.Close(); cerr != nil {
			log.Error("cleanup", "err", cerr)
		}
	}()
	env := &Env{Topo: topo, Dir: work, Log: log}
	if err := startServers(ctx, env, o.load.fortio); err != nil {
		return err
	}

	// Interleaved: every repetition runs each scenario once, so that a slow spell on the shared
	// machine lands on all of them rather than on one.
	samples := map[string][]report.Sample{}
	start, loadStart := time.Now(), loadAvg()
	for rep := 1; rep <= o.reps; rep++ {
		for _, sc := range all {
			log.Info("running", "scenario", sc.Name(), "rep", rep, "of", o.reps)
			s, err := runOnce(ctx, env, o.load, sc)
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted during %s, repetition %d", sc.Name(), rep)
			}
			if err != nil {
				return fmt.Errorf("%s, repetition %d: %w", sc.Name(), rep, err)
			}
			log.Info("done", "scenario", sc.Name(), "rep", rep, "gbps", round(s.Values[report.Gbps]),
				"p50_us", round(s.Values[report.P50]), "p99_us", round(s.Values[report.P99]),
				"conn_per_s", round(s.Values[report.ConnPerS]))
			samples[sc.Name()] = append(samples[sc.Name()], s)
		}
	}
	log.Info("all repetitions done", "took", time.Since(start).Round(time.Second))

	r := report.Run{
		Date:        time.Now().UTC(),
		Host:        hostInfo(),
		Tools:       toolVersions(ctx, o.load.fortio),
		Reps:        o.reps,
		LatencyLoad: fmt.Sprintf("fortio, %d qps over %d keep-alive connections", o.load.qps, o.load.conns),
		Baseline:    "direct",
		Peer:        "haproxy-pair",
		Settings: append(settings(o.load), fmt.Sprintf("Load average (1 min) of the machine: %s at the start, %s at the end "+
			"(the benchmark itself adds about 2; more means other work shared the CPUs).", loadStart, loadAvg())),
	}
	for _, sc := range all {
		r.Scenarios = append(r.Scenarios, report.Summarize(sc.Name(), sc.Description(), samples[sc.Name()]))
	}
	for _, p := range planned {
		r.Scenarios = append(r.Scenarios, report.NotRun(p.name, p.desc, p.reason))
	}
	return write(o.out, r, log)
}

// runOnce sets a scenario up, measures it and tears it down, whatever happens.
func runOnce(ctx context.Context, env *Env, l load, sc Scenario) (s report.Sample, err error) {
	defer func() {
		if terr := sc.Teardown(); terr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", terr))
		}
	}()
	t, err := sc.Setup(ctx, env)
	if err != nil {
		return s, fmt.Errorf("setup: %w", err)
	}
	return measure(ctx, env, l, t, sc.Proxies())
}

// startServers runs iperf3 and fortio's echo server in both server pods for the whole run; they
// are not part of any scenario's cost.
func startServers(ctx context.Context, env *Env, fortio string) error {
	for _, pod := range []struct{ ns, name, ip string }{{env.Topo.Server, "server", serverIP}, {env.Topo.Local, "local", localIP}} {
		ip, err := env.Topo.Start(pod.ns, "iperf3-"+pod.name, "iperf3", "-s", "-B", pod.ip, "-p", fmt.Sprint(iperfPort))
		if err != nil {
			return err
		}
		echo, err := env.Topo.Start(pod.ns, "echo-"+pod.name, fortio, "server",
			"-http-port", fmt.Sprintf("%s:%d", pod.ip, httpPort),
			"-grpc-port", "disabled", "-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled",
			"-loglevel", "Warning")
		if err != nil {
			return err
		}
		if err := ip.WaitListening(ctx, iperfPort); err != nil {
			return err
		}
		if err := echo.WaitListening(ctx, httpPort); err != nil {
			return err
		}
	}
	return nil
}

// ensureFortio returns fortio's path, installing the pinned version into ~/.cache/warren/bin.
func ensureFortio(ctx context.Context, log *slog.Logger) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(home, ".cache", "warren", "bin")
	bin := filepath.Join(dir, "fortio")
	if out, err := exec.CommandContext(ctx, bin, "version").Output(); err == nil && strings.TrimSpace(string(out)) == fortioVersion {
		return bin, nil
	}
	log.Info("installing fortio", "version", fortioVersion, "into", dir)
	cmd := exec.CommandContext(ctx, "go", "install", "fortio.org/fortio@v"+fortioVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install fortio: %w: %s", err, bytes.TrimSpace(out))
	}
	return bin, nil
}

func settings(l load) []string {
	return []string{
		"Topology: network namespaces for two nodes joined by a veth, a client pod on node1, a server pod on node2 " +
			"and a second server pod on node1; pods are routed through their nodes, no NAT, MTU 1500. No Kubernetes.",
		fmt.Sprintf("Throughput: iperf3, one TCP stream for %s, client pod to server pod; the receiver's rate "+
			"(Gbit/s = 10^9 bit/s). Proxy CPU is charged per 10^9 bytes received.", l.iperfTime),
		fmt.Sprintf("Latency: fortio, %d requests/s over %d HTTP/1.1 keep-alive connections for %s, "+
			"%d-byte responses from fortio's echo server, 10 µs histogram resolution. Proxy CPU is charged per request.",
			l.qps, l.conns, l.latencyTime, echoPayload),
		fmt.Sprintf("Connection rate: fortio with a new TCP connection for every request (-keepalive=false), "+
			"%d in parallel, as fast as they go, for %s. Proxy CPU is charged per connection.", l.conns, l.connTime),
		"Each repetition starts the scenario's proxies afresh. Memory is per test: every proxy's peak RSS (VmHWM) " +
			"is reset (clear_refs) before each test and read after it; RssAnon and RssFile are read at each test's end.",
	}
}

func hostInfo() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs, Linux %s, %s", model, runtime.NumCPU(), kernel, runtime.Version())
}

// loadAvg is the 1-minute load average, which tells a reader how shared the machine was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func toolVersions(ctx context.Context, fortio string) []string {
	first := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).Output()
		if err != nil {
			return name + " (version unknown)"
		}
		line, _, _ := strings.Cut(string(out), "\n")
		return strings.TrimSpace(line)
	}
	haproxy := strings.Fields(first("haproxy", "-v")) // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - ..."
	iperf := strings.Fields(first("iperf3", "-v"))    // "iperf 3.12 (cJSON 1.7.15)"
	out := []string{}
	if len(haproxy) >= 3 {
		out = append(out, "HAProxy "+haproxy[2])
	}
	if len(iperf) >= 2 {
		out = append(out, "iperf3 "+iperf[1])
	}
	return append(out, "fortio "+first(fortio, "version"))
}

func write(dir string, r report.Run, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := report.JSON(r)
	if err != nil {
		return err
	}
	var png bytes.Buffer
	if err := report.Chart(r, &png); err != nil {
		return err
	}
	files := map[string][]byte{
		r.Date.Format("2006-01-02") + ".md": report.Markdown(r),
		"latest.json":                       js,
		"latency.png":                       png.Bytes(),
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		log.Info("wrote", "file", p)
	}
	return nil
}

func round(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }
