package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/test/bench/fortiojson"
	"github.com/warrenmesh/warren/test/bench/iperfjson"
	"github.com/warrenmesh/warren/test/bench/procstat"
	"github.com/warrenmesh/warren/test/bench/report"
)

// load is how hard and how long each test drives a scenario.
type load struct {
	fortio      string // path of the fortio binary
	iperfTime   time.Duration
	latencyTime time.Duration
	connTime    time.Duration
	qps         int
	conns       int
}

// maxErrorRate is the share of failed requests above which a run is not worth reporting.
const maxErrorRate = 0.001

// measure drives one scenario once: throughput, then keep-alive latency at a fixed rate, then
// the connection rate, charging each test with the CPU its proxies used during it and the memory
// they held: each proxy's peak RSS is reset before every test and read after it, with its
// anonymous, file-backed and shared pages at the end.
func measure(ctx context.Context, env *Env, l load, t Target, proxies []*Proc) (report.Sample, error) {
	s := report.Sample{Values: map[report.Metric]float64{}, Proxies: map[string]map[report.Metric]float64{}}
	for _, p := range proxies {
		s.Proxies[p.Name] = map[report.Metric]float64{}
	}
	// The peak over the whole repetition starts with the one from start-up, which the first
	// reset forgets.
	mem, err := memories(proxies)
	if err != nil {
		return s, err
	}
	for i, p := range proxies {
		s.Proxies[p.Name][report.RSSMiB] = mib(mem[i].Peak)
	}
	// charge runs a test and divides its proxies' CPU by what the test reports it did.
	charge := func(test func() (float64, error), per func(time.Duration, float64) float64, m report.Metric, mt report.MemoryTest) error {
		for _, p := range proxies {
			if err := procstat.ResetPeak(p.PID); err != nil {
				return fmt.Errorf("%s: reset peak RSS: %w", p.Name, err)
			}
		}
		before, err := cpuTimes(proxies)
		if err != nil {
			return err
		}
		units, err := test()
		if err != nil {
			return err
		}
		after, err := cpuTimes(proxies)
		if err != nil {
			return err
		}
		mem, err := memories(proxies)
		if err != nil {
			return err
		}
		var total time.Duration
		largest := -1
		for i, p := range proxies {
			d := after[i] - before[i]
			total += d
			v := s.Proxies[p.Name]
			v[m] = per(d, units)
			v[mt.Peak], v[mt.Anon], v[mt.File], v[mt.Shmem] = mib(mem[i].Peak), mib(mem[i].Anon), mib(mem[i].File), mib(mem[i].Shmem)
			v[report.RSSMiB] = max(v[report.RSSMiB], v[mt.Peak])
			if largest < 0 || mem[i].Peak > mem[largest].Peak {
				largest = i
			}
		}
		if largest >= 0 {
			s.Values[m] = per(total, units)
			for _, k := range []report.Metric{mt.Peak, mt.Anon, mt.File, mt.Shmem} {
				s.Values[k] = s.Proxies[proxies[largest].Name][k]
			}
		}
		return nil
	}
	tests := report.MemoryTests

	perGB := func(d time.Duration, bytes float64) float64 { return d.Seconds() / (bytes / 1e9) }
	err = charge(func() (float64, error) {
		r, err := iperf(ctx, env, l, t)
		if err != nil {
			return 0, err
		}
		s.Values[report.Gbps] = r.Gbps
		return float64(r.Bytes), nil
	}, perGB, report.CPUSecPerGB, tests[0])
	if err != nil {
		return s, err
	}

	perReq := func(d time.Duration, n float64) float64 { return float64(d.Microseconds()) / n }
	err = charge(func() (float64, error) {
		r, err := fortioLoad(ctx, env, l, t, "latency", l.latencyTime, strconv.Itoa(l.qps), true)
		if err != nil {
			return 0, err
		}
		if r.QPS < 0.95*float64(l.qps) {
			env.Log.Warn("latency test fell short of its rate; its percentiles include queueing", "want_qps", l.qps, "got_qps", r.QPS)
		}
		for m, p := range map[report.Metric]float64{report.P50: 50, report.P90: 90, report.P99: 99, report.P999: 99.9} {
			s.Values[m] = r.Percentile(p)
		}
		return float64(r.Requests), nil
	}, perReq, report.CPUUsPerReq, tests[1])
	if err != nil {
		return s, err
	}

	err = charge(func() (float64, error) {
		r, err := fortioLoad(ctx, env, l, t, "connrate", l.connTime, "0", false)
		if err != nil {
			return 0, err
		}
		if r.Sockets < r.Requests {
			return 0, fmt.Errorf("connection-rate test: %d connections for %d requests, want one each", r.Sockets, r.Requests)
		}
		s.Values[report.ConnPerS] = r.QPS
		s.Values[report.ConnP50] = r.Percentile(50)
		s.Values[report.ConnP99] = r.Percentile(99)
		return float64(r.Requests), nil
	}, perReq, report.CPUUsPerConn, tests[2])
	if err != nil {
		return s, err
	}

	// Peak RSS over the whole repetition: each repetition starts fresh proxies.
	for _, p := range proxies {
		s.Values[report.RSSMiB] = max(s.Values[report.RSSMiB], s.Proxies[p.Name][report.RSSMiB])
	}
	return s, nil
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

func memories(procs []*Proc) ([]procstat.Memory, error) {
	out := make([]procstat.Memory, len(procs))
	for i, p := range procs {
		m, err := procstat.ReadMemory(p.PID)
		if err != nil {
			return nil, fmt.Errorf("%s memory: %w", p.Name, err)
		}
		out[i] = m
	}
	return out, nil
}

func cpuTimes(procs []*Proc) ([]time.Duration, error) {
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		d, err := procstat.CPU(p.PID)
		if err != nil {
			return nil, fmt.Errorf("%s cpu: %w", p.Name, err)
		}
		out[i] = d
	}
	return out, nil
}

func iperf(ctx context.Context, env *Env, l load, t Target) (iperfjson.Result, error) {
	secs := strconv.Itoa(int(l.iperfTime.Round(time.Second).Seconds()))
	out, err := client(ctx, env, "iperf3", "-c", t.Host, "-p", strconv.Itoa(int(t.IperfPort)), "-t", secs, "-J")
	if err != nil {
		// iperf3 -J puts its error in the JSON on stdout.
		if r, perr := iperfjson.Parse(out); perr != nil {
			return r, fmt.Errorf("%w: %w", err, perr)
		}
		return iperfjson.Result{}, err
	}
	return iperfjson.Parse(out)
}

// fortioLoad runs fortio against the echo server; qps "0" means as fast as it goes.
func fortioLoad(ctx context.Context, env *Env, l load, t Target, name string, d time.Duration, qps string, keepalive bool) (fortiojson.Result, error) {
	f, err := os.CreateTemp(env.Dir, "fortio-"+name+"-*.json")
	if err != nil {
		return fortiojson.Result{}, err
	}
	f.Close()
	url := fmt.Sprintf("http://%s:%d/echo?size=%d", t.Host, t.HTTPPort, echoPayload)
	_, err = client(ctx, env, l.fortio, "load",
		"-qps", qps, "-c", strconv.Itoa(l.conns), "-t", d.String(),
		"-keepalive="+strconv.FormatBool(keepalive),
		"-r", "0.00001", // 10 µs histogram buckets; the default 1 ms is too coarse for these latencies
		"-p", "50,90,99,99.9",
		"-loglevel", "Warning",
		"-json", f.Name(), url)
	if err != nil {
		return fortiojson.Result{}, err
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return fortiojson.Result{}, err
	}
	r, err := fortiojson.Parse(b)
	if err != nil {
		return r, err
	}
	if e := r.Errors(); e > 0 {
		env.Log.Warn("requests failed", "test", name, "failed", e, "of", r.Requests)
		if float64(e) > maxErrorRate*float64(r.Requests) {
			return r, fmt.Errorf("%s: %d of %d requests failed; see %s", name, e, r.Requests, f.Name())
		}
	}
	return r, nil
}

// client runs a load generator in the client pod and returns its stdout.
func client(ctx context.Context, env *Env, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", env.Topo.Client}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", filepath.Base(args[0]), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
