package report

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// palette is readable by most colour-blind readers (Okabe–Ito).
var palette = []color.Color{
	color.RGBA{0x99, 0x99, 0x99, 0xff}, // grey: the baseline goes first
	color.RGBA{0xe6, 0x9f, 0x00, 0xff},
	color.RGBA{0x56, 0xb4, 0xe9, 0xff},
	color.RGBA{0x00, 0x9e, 0x73, 0xff},
	color.RGBA{0xcc, 0x79, 0xa7, 0xff},
	color.RGBA{0x00, 0x72, 0xb2, 0xff},
	color.RGBA{0xd5, 0x5e, 0x00, 0xff},
}

// Chart draws the keep-alive latency percentiles of every scenario that ran: one line per
// scenario through its medians, whiskers from min to max, on a log scale so that p50 and p99.9
// both stay readable. It writes a PNG.
func Chart(r Run, w io.Writer) error {
	percentiles := []Metric{P50, P90, P99, P999}
	labels := []string{"p50", "p90", "p99", "p99.9"}

	var ran []Scenario
	var notRun []string
	for _, s := range r.Scenarios {
		if s.Ran {
			ran = append(ran, s)
		} else {
			notRun = append(notRun, s.Name)
		}
	}
	if len(ran) == 0 {
		return fmt.Errorf("chart: no scenario ran")
	}

	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency: %s (median of %d runs, whiskers min–max)", r.LatencyLoad, r.Reps)
	p.Title.Padding = vg.Points(6)
	p.Y.Label.Text = "µs (log scale)"
	p.Y.Scale = plot.LogScale{}
	if len(notRun) > 0 {
		p.X.Label.Text = "not run: " + strings.Join(notRun, ", ")
	}
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.3, float64(len(labels))-0.7
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())

	lo, hi := math.Inf(1), 0.0
	step := 0.05 // scenarios side by side within a percentile, so whiskers do not hide each other
	for k, s := range ran {
		off := (float64(k) - float64(len(ran)-1)/2) * step
		var pts plotter.XYs
		var yerr plotter.YErrors
		for i, m := range percentiles {
			v, ok := s.Values[m]
			if !ok || v.Min <= 0 {
				continue // not measured: leave a gap rather than draw a zero on a log scale
			}
			pts = append(pts, plotter.XY{X: float64(i) + off, Y: v.Median})
			yerr = append(yerr, struct{ Low, High float64 }{v.Median - v.Min, v.Max - v.Median})
			lo, hi = math.Min(lo, v.Min), math.Max(hi, v.Max)
		}
		if len(pts) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		c := palette[k%len(palette)]
		line.Color, line.Width = c, vg.Points(2)
		points.Color, points.Shape, points.Radius = c, draw.CircleGlyph{}, vg.Points(3.5)
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYs
			plotter.YErrors
		}{pts, yerr})
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		eb.LineStyle = draw.LineStyle{Color: c, Width: vg.Points(1.5)}
		eb.CapWidth = vg.Points(6)
		p.Add(line, points, eb)
		p.Legend.Add(s.Name, line, points)
	}
	if hi == 0 {
		return fmt.Errorf("chart: no latency measured")
	}
	p.Y.Min, p.Y.Max = lo/1.3, hi*1.3
	p.Y.Tick.Marker = logTicks{}

	wt, err := p.WriterTo(8*vg.Inch, 4.5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if _, err := wt.WriteTo(w); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return nil
}

// logTicks labels 1, 2 and 5 times each power of ten, denser than gonum's LogTicks (powers of
// ten only), which would leave one label on a chart that spans 100 µs to 5 ms.
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	var ts []plot.Tick
	for dec := math.Pow(10, math.Floor(math.Log10(min))); dec <= max; dec *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := m * dec; v >= min && v <= max {
				ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
			}
		}
	}
	return ts
}
