package chart

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// decodePNG checks that path holds a PNG of the chart size.
func decodePNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	assert.Greater(t, img.Bounds().Dx(), 100)
	assert.Greater(t, img.Bounds().Dy(), 100)
}

func TestChartsWritePNG(t *testing.T) {
	dir := t.TempDir()
	lines := filepath.Join(dir, "lines.png")
	require.NoError(t, Lines(lines, "loss", "step", "loss", []Series{
		{Name: "train", X: []float64{1, 2, 3}, Y: []float64{3, 2, 1}},
		{Name: "eval", X: []float64{1, 3}, Y: []float64{3.1, 1.2}, Dashed: true},
	}))
	decodePNG(t, lines)

	bars := filepath.Join(dir, "bars.png")
	require.NoError(t, Bars(bars, "bytes", "MB", []string{"full", "lora"}, []BarGroup{{Name: "N=2", Values: []float64{10, 1}}, {Name: "N=4", Values: []float64{15, 1.5}}}))
	decodePNG(t, bars)

	stacked := filepath.Join(dir, "stacked.png")
	require.NoError(t, StackedBars(stacked, "step time", "s", []string{"full", "lora"}, []BarGroup{{Name: "compute", Values: []float64{1, 0.5}}, {Name: "exposed", Values: []float64{0.2, 0.01}}}))
	decodePNG(t, stacked)
}

func TestChartsRejectMismatchedLengths(t *testing.T) {
	dir := t.TempDir()
	err := Lines(filepath.Join(dir, "x.png"), "t", "x", "y", []Series{{Name: "s", X: []float64{1, 2}, Y: []float64{1}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"s"`)
	err = Bars(filepath.Join(dir, "y.png"), "t", "y", []string{"a", "b"}, []BarGroup{{Name: "g", Values: []float64{1}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"g"`)
}
