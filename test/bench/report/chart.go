package report

import (
	"fmt"
	"image/color"
	"io"
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

// Chart draws the keep-alive latency percentiles of every scenario that ran as grouped bars
// (median) with min–max whiskers, and writes it as a PNG.
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

	const width, height = 8 * vg.Inch, 4.5 * vg.Inch
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency: %s (median of %d runs, whiskers min–max)", r.LatencyLoad, r.Reps)
	p.Title.Padding = vg.Points(6)
	p.Y.Label.Text = "µs"
	p.Y.Min = 0
	if len(notRun) > 0 {
		p.X.Label.Text = "not run: " + strings.Join(notRun, ", ")
	}
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.5, float64(len(labels))-0.5
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())

	// Bars are placed in data units so the whiskers line up with them; the bar width in canvas
	// units is derived from the plot's approximate data area (the image less its margins).
	group := 0.8
	step := group / float64(len(ran))
	dataUnit := (width - 1.2*vg.Inch) / vg.Length(p.X.Max-p.X.Min)
	for k, s := range ran {
		vals := make(plotter.Values, len(percentiles))
		errs := make(plotter.XYs, len(percentiles))
		yerr := make(plotter.YErrors, len(percentiles))
		off := (float64(k) - float64(len(ran)-1)/2) * step
		for i, m := range percentiles {
			v := s.Values[m] // absent: a zero bar, which the tables explain
			vals[i] = v.Median
			errs[i] = plotter.XY{X: float64(i) + off, Y: v.Median}
			yerr[i].Low, yerr[i].High = v.Median-v.Min, v.Max-v.Median
		}
		bars, err := plotter.NewBarChart(vals, vg.Length(step*0.9)*dataUnit)
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		bars.XMin = off
		bars.Color = palette[k%len(palette)]
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(s.Name, bars)

		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYs
			plotter.YErrors
		}{errs, yerr})
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		eb.LineStyle = draw.LineStyle{Color: color.Black, Width: vg.Points(1)}
		eb.CapWidth = vg.Points(5)
		p.Add(eb)
	}

	wt, err := p.WriterTo(width, height, "png")
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if _, err := wt.WriteTo(w); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return nil
}
