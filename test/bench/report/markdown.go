package report

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/warrenmesh/warren/test/bench/stats"
)

// Markdown renders the run as the page committed under bench/results.
func Markdown(r Run) []byte {
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	p("# Warren benchmarks, %s\n\n", r.Date.UTC().Format("2006-01-02 15:04 MST"))
	p("Host: %s. Tools: %s.\n\n", r.Host, strings.Join(r.Tools, ", "))
	p("%d repetitions, interleaved (each repetition runs every scenario once, in turn). Each cell is "+
		"the median with min–max in parentheses; ratios are of medians from this run only, so they "+
		"hold on a noisy shared machine where absolute figures do not. Proxy CPU is utime+stime of "+
		"the proxy processes (all of a scenario's proxies summed). Memory is measured per test: each "+
		"proxy's peak RSS (VmHWM) is reset before the test (clear_refs) and read after it, and its "+
		"resident pages are split into anonymous (RssAnon: heap, stacks), file-backed (RssFile: "+
		"mostly the binary's own text and data) and shared (RssShmem) at the test's end; a scenario's figure is its "+
		"largest proxy's, with that proxy's split. The direct path has no proxy.\n\n", r.Reps)
	for _, s := range r.Settings {
		p("- %s\n", s)
	}
	p("\n| scenario | path |\n| --- | --- |\n")
	for _, s := range r.Scenarios {
		desc := s.Description
		if !s.Ran {
			desc += " — **not run**: " + s.Reason
		}
		p("| %s | %s |\n", s.Name, desc)
	}

	p("\n## Throughput\n\n")
	table(&b, r, []column{
		{"Gbit/s", Gbps, 2, ""},
		{"× " + r.Baseline, Gbps, 2, r.Baseline},
		{"proxy CPU-s per GB", CPUSecPerGB, 2, ""},
		{"peak RSS MiB", TputRSSMiB, 1, ""},
	})

	p("\n## Latency\n\n%s.\n\n", r.LatencyLoad)
	table(&b, r, []column{
		{"p50 µs", P50, 0, ""},
		{"p90 µs", P90, 0, ""},
		{"p99 µs", P99, 0, ""},
		{"p99.9 µs", P999, 0, ""},
		{"p50 × " + r.Baseline, P50, 2, r.Baseline},
		{"p99 × " + r.Baseline, P99, 2, r.Baseline},
		{"proxy CPU µs per request", CPUUsPerReq, 1, ""},
		{"peak RSS MiB", LatRSSMiB, 1, ""},
		{"anon MiB", LatAnonMiB, 1, ""},
		{"file MiB", LatFileMiB, 1, ""},
		{"shmem MiB", LatShmMiB, 1, ""},
	})

	p("\n## Connection rate\n\n")
	table(&b, r, []column{
		{"connections/s", ConnPerS, 0, ""},
		{"× " + r.Baseline, ConnPerS, 2, r.Baseline},
		{"p50 µs", ConnP50, 0, ""},
		{"p99 µs", ConnP99, 0, ""},
		{"proxy CPU µs per connection", CPUUsPerConn, 1, ""},
		{"peak RSS MiB", ConnRSSMiB, 1, ""},
	})

	p("\n## Warren vs the %s\n\n", r.Peer)
	p("Warren's median divided by the %s's: above 1 is better for Gbit/s and connections/s, "+
		"below 1 is better for the rest.\n\n", r.Peer)
	cols := []Metric{Gbps, P50, P99, CPUUsPerReq, CPUSecPerGB, LatRSSMiB, LatAnonMiB, LatFileMiB, RSSMiB, ConnPerS, CPUUsPerConn}
	p("| scenario |")
	for _, m := range cols {
		p(" %s |", m)
	}
	p("\n| --- |%s\n", strings.Repeat(" --- |", len(cols)))
	for _, s := range r.Scenarios {
		if !IsWarren(s.Name) {
			continue
		}
		p("| %s |", s.Name)
		for _, m := range cols {
			if v, ok := r.Ratio(s, m, r.Peer); ok {
				p(" %.2f |", v)
			} else {
				p(" n/a |")
			}
		}
		p("\n")
	}

	p("\n## Memory\n\n")
	p("MiB. Peak is VmHWM during the test, starting from what the process held when it began " +
		"(the tests run back to back, so a test's peak includes what the one before left resident); " +
		"anon, file and shmem are RssAnon, RssFile and RssShmem at its end. The whole repetition's " +
		"peak includes start-up.\n\n")
	p("| scenario | proxy | whole repetition peak |")
	for _, t := range MemoryTests {
		p(" %s peak | anon | file | shmem |", t.Name)
	}
	p("\n| --- | --- | --- |%s\n", strings.Repeat(" --- |", 4*len(MemoryTests)))
	for _, s := range r.Scenarios {
		if _, ok := s.Values[RSSMiB]; !ok {
			continue // no proxy, or not run
		}
		type row struct {
			name string
			v    map[Metric]stats.Summary
		}
		rows := []row{{"(largest)", s.Values}}
		for _, px := range s.Proxies {
			rows = append(rows, row{px.Name, px.Values})
		}
		for _, row := range rows {
			p("| %s | %s | %s |", s.Name, row.name, cell(row.v, RSSMiB, 1))
			for _, t := range MemoryTests {
				p(" %s | %s | %s | %s |", cell(row.v, t.Peak, 1), cell(row.v, t.Anon, 1), cell(row.v, t.File, 1), cell(row.v, t.Shmem, 1))
			}
			p("\n")
		}
	}

	p("\n## Each proxy\n\n")
	p("| scenario | proxy | peak RSS MiB, latency test | peak RSS MiB, whole repetition | CPU µs per request | CPU-s per GB | CPU µs per connection |\n")
	p("| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range r.Scenarios {
		for _, px := range s.Proxies {
			p("| %s | %s | %s | %s | %s | %s | %s |\n", s.Name, px.Name,
				cell(px.Values, LatRSSMiB, 1), cell(px.Values, RSSMiB, 1), cell(px.Values, CPUUsPerReq, 1),
				cell(px.Values, CPUSecPerGB, 2), cell(px.Values, CPUUsPerConn, 1))
		}
	}
	return b.Bytes()
}

type column struct {
	title  string
	metric Metric
	digits int
	ratio  string // when set, the cell is the ratio to this scenario
}

func table(b *bytes.Buffer, r Run, cols []column) {
	fmt.Fprintf(b, "| scenario |")
	for _, c := range cols {
		fmt.Fprintf(b, " %s |", c.title)
	}
	fmt.Fprintf(b, "\n| --- |%s\n", strings.Repeat(" --- |", len(cols)))
	for _, s := range r.Scenarios {
		fmt.Fprintf(b, "| %s |", s.Name)
		for _, c := range cols {
			switch {
			case !s.Ran:
				fmt.Fprintf(b, " not run |")
			case c.ratio != "":
				if v, ok := r.Ratio(s, c.metric, c.ratio); ok {
					fmt.Fprintf(b, " %.*f |", c.digits, v)
				} else {
					fmt.Fprintf(b, " n/a |")
				}
			default:
				fmt.Fprintf(b, " %s |", cell(s.Values, c.metric, c.digits))
			}
		}
		fmt.Fprintf(b, "\n")
	}
}

// cell is "median (min–max)", or "-" for a metric that does not apply.
func cell(v map[Metric]stats.Summary, m Metric, digits int) string {
	s, ok := v[m]
	if !ok {
		return "-"
	}
	if s.N == 1 || s.Min == s.Max {
		return fmt.Sprintf("%.*f", digits, s.Median)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", digits, s.Median, digits, s.Min, digits, s.Max)
}
