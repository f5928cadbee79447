// Package chart draws the PNG charts of ringtune's reports with gonum.org/v1/plot.
package chart

import (
	"fmt"
	"image/color"
	"io"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/ringtune/ringtune/internal/atomicfile"
)

// Size of every chart.
const (
	width  = 8 * vg.Inch
	height = 4.5 * vg.Inch
)

// Series is one named line of a line chart.
type Series struct {
	Name string
	X, Y []float64
	// Dashed draws the line dashed, for example an eval curve beside its train curve.
	Dashed bool
}

// Lines writes a line chart of series to path as PNG.
func Lines(path, title, xLabel, yLabel string, series []Series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	for i, s := range series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("chart %s: series %q has %d x and %d y values", path, s.Name, len(s.X), len(s.Y))
		}
		points := make(plotter.XYs, len(s.X))
		for j := range s.X {
			points[j].X, points[j].Y = s.X[j], s.Y[j]
		}
		line, err := plotter.NewLine(points)
		if err != nil {
			return fmt.Errorf("chart %s: series %q: %w", path, s.Name, err)
		}
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1.5)
		if s.Dashed {
			line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		}
		p.Add(line)
		p.Legend.Add(s.Name, line)
	}
	return save(p, path)
}

// BarGroup is one named set of bars, one value per category.
type BarGroup struct {
	Name   string
	Values []float64
}

// Bars writes a grouped bar chart to path as PNG: one cluster per category,
// one bar per group within it.
func Bars(path, title, yLabel string, categories []string, groups []BarGroup) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	barWidth := vg.Points(min(40, 240/float64(max(len(groups), 1))))
	for i, g := range groups {
		if len(g.Values) != len(categories) {
			return fmt.Errorf("chart %s: group %q has %d values for %d categories", path, g.Name, len(g.Values), len(categories))
		}
		bars, err := plotter.NewBarChart(plotter.Values(g.Values), barWidth)
		if err != nil {
			return fmt.Errorf("chart %s: group %q: %w", path, g.Name, err)
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Color = color.Black
		bars.Offset = barWidth * vg.Length(float64(i)-float64(len(groups)-1)/2)
		p.Add(bars)
		p.Legend.Add(g.Name, bars)

		// The value above each bar, so that a bar too short to see still
		// shows its number.
		labels, err := valueLabels(g.Values, bars.Offset)
		if err != nil {
			return fmt.Errorf("chart %s: group %q: %w", path, g.Name, err)
		}
		p.Add(labels)
	}
	p.NominalX(categories...)
	padNominalX(p, len(categories))
	return save(p, path)
}

// valueLabels returns the labels of values drawn above bars at x = 0, 1, ...,
// shifted by offset.
func valueLabels(values []float64, offset vg.Length) (*plotter.Labels, error) {
	points := plotter.XYLabels{XYs: make(plotter.XYs, len(values)), Labels: make([]string, len(values))}
	for i, v := range values {
		points.XYs[i] = plotter.XY{X: float64(i), Y: v}
		points.Labels[i] = fmt.Sprintf("%.3g", v)
	}
	labels, err := plotter.NewLabels(points)
	if err != nil {
		return nil, err
	}
	labels.Offset = vg.Point{X: offset - vg.Points(8), Y: vg.Points(3)}
	return labels, nil
}

// padNominalX leaves half a category of room left and right of the bars.
func padNominalX(p *plot.Plot, categories int) {
	p.X.Min = -0.5
	p.X.Max = float64(categories) - 0.5
}

// StackedBars writes a bar chart to path as PNG in which each category's bar
// stacks the groups' values bottom to top, such as compute and exposed
// communication time of a step.
func StackedBars(path, title, yLabel string, categories []string, groups []BarGroup) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	var below *plotter.BarChart
	for i, g := range groups {
		if len(g.Values) != len(categories) {
			return fmt.Errorf("chart %s: group %q has %d values for %d categories", path, g.Name, len(g.Values), len(categories))
		}
		bars, err := plotter.NewBarChart(plotter.Values(g.Values), vg.Points(60))
		if err != nil {
			return fmt.Errorf("chart %s: group %q: %w", path, g.Name, err)
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Color = color.Black
		if below != nil {
			bars.StackOn(below)
		}
		below = bars
		p.Add(bars)
		p.Legend.Add(g.Name, bars)
	}
	p.NominalX(categories...)
	padNominalX(p, len(categories))
	return save(p, path)
}

// save writes the chart to a temporary file and renames it to path. It adds a
// quarter of the value range above the data, so that the legend at the top
// covers no line or bar.
func save(p *plot.Plot, path string) error {
	p.Y.Max += (p.Y.Max - p.Y.Min) / 4
	w, err := p.WriterTo(width, height, "png")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, func(f io.Writer) error {
		_, err := w.WriteTo(f)
		return err
	}); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
