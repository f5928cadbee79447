package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// crossEntropyReference returns the summed loss of logits = hidden·weightᵀ
// over the rows whose target is not IgnoreIndex, in float64.
func crossEntropyReference(hidden, weight []float64, targets []int32, c, v int) float64 {
	var total float64
	logits := make([]float64, v)
	for n, target := range targets {
		if target == kernels.IgnoreIndex {
			continue
		}
		row := hidden[n*c : (n+1)*c]
		rowMax := math.Inf(-1)
		for j := range v {
			logits[j] = dot64(row, weight[j*c:(j+1)*c])
			rowMax = max(rowMax, logits[j])
		}
		var sum float64
		for _, l := range logits {
			sum += math.Exp(l - rowMax)
		}
		total += rowMax + math.Log(sum) - logits[target]
	}
	return total
}

// crossEntropyCase is one LinearCrossEntropy input of n rows, hidden size c
// and vocabulary v.
type crossEntropyCase struct {
	n, c, v        int
	hidden, weight []float32
	targets        []int32
}

func newCrossEntropyCase(rng *rand.Rand, n, c, v int) crossEntropyCase {
	tc := crossEntropyCase{
		n: n, c: c, v: v,
		hidden:  randomValues(rng, n*c, 1),
		weight:  randomValues(rng, v*c, 1),
		targets: make([]int32, n),
	}
	for i := range tc.targets {
		tc.targets[i] = int32(rng.IntN(v))
		if rng.IntN(3) == 0 {
			tc.targets[i] = kernels.IgnoreIndex
		}
	}
	return tc
}

// crossEntropyResult holds the outputs of one LinearCrossEntropy call.
type crossEntropyResult struct {
	loss             float64
	count            int
	dHidden, dWeight []float32
}

func runCrossEntropy(t *testing.T, be *cpu.Backend, tc crossEntropyCase, bf16 bool, gradScale float32) crossEntropyResult {
	t.Helper()
	var weight kernels.Tensor
	if bf16 {
		weight = newBF16(t, be, toBF16(tc.weight), tc.v, tc.c)
	} else {
		weight = newF32(t, be, tc.weight, tc.v, tc.c)
	}
	// dHidden starts as garbage, which the op must overwrite.
	dHidden := newF32(t, be, constant(tc.n*tc.c, 99), tc.n, tc.c)
	dWeight := newF32(t, be, nil, tc.v, tc.c)
	loss, count := be.LinearCrossEntropy(dHidden, dWeight, newF32(t, be, tc.hidden, tc.n, tc.c), weight, newI32(t, be, tc.targets, tc.n), gradScale)
	return crossEntropyResult{loss: loss, count: count, dHidden: toHost(t, be, dHidden), dWeight: toHost(t, be, dWeight)}
}

func TestLinearCrossEntropyMatchesReference(t *testing.T) {
	be := newBackend(t, cpu.Options{CrossEntropyChunkRows: 5})
	rng := rand.New(rand.NewPCG(81, 82))
	tc := newCrossEntropyCase(rng, 37, 12, 53)
	const gradScale = 0.25
	got := runCrossEntropy(t, be, tc, false, gradScale)

	wantCount := 0
	for _, target := range tc.targets {
		if target != kernels.IgnoreIndex {
			wantCount++
		}
	}
	assert.Equal(t, wantCount, got.count)

	h64, w64 := widen(tc.hidden), widen(tc.weight)
	loss := func() float64 { return gradScale * crossEntropyReference(h64, w64, tc.targets, tc.c, tc.v) }
	// Tolerance 1e-5 relative: float32 logits of 12-term products, each off
	// by about 1e-7, summed over 37 rows.
	assert.InEpsilon(t, loss()/gradScale, got.loss, 1e-5)
	checkGradient(t, "hidden", h64, got.dHidden, loss, rng)
	checkGradient(t, "weight", w64, got.dWeight, loss, rng)

	for n, target := range tc.targets {
		if target == kernels.IgnoreIndex {
			assert.Equal(t, make([]float32, tc.c), got.dHidden[n*tc.c:(n+1)*tc.c], "dHidden of ignored row %d", n)
		}
	}
}

func TestLinearCrossEntropyChunkedEqualsUnchunked(t *testing.T) {
	rng := rand.New(rand.NewPCG(83, 84))
	tc := newCrossEntropyCase(rng, 41, 10, 29)
	chunked := runCrossEntropy(t, newBackend(t, cpu.Options{CrossEntropyChunkRows: 3}), tc, false, 1)
	whole := runCrossEntropy(t, newBackend(t, cpu.Options{CrossEntropyChunkRows: 1000}), tc, false, 1)

	assert.Equal(t, whole.count, chunked.count)
	// Each row's loss and dHidden are computed alike, but the sums over rows
	// (the loss, dWeight) run in another order, and Sgemm may block a product
	// of 3 rows differently from one of 27: tolerance 1e-6 relative.
	assert.InEpsilon(t, whole.loss, chunked.loss, 1e-6)
	requireClose(t, "dHidden", chunked.dHidden, widen(whole.dHidden), 1e-7, 1e-6)
	requireClose(t, "dWeight", chunked.dWeight, widen(whole.dWeight), 1e-6, 1e-6)
}

func TestLinearCrossEntropyBF16Weight(t *testing.T) {
	rng := rand.New(rand.NewPCG(85, 86))
	tc := newCrossEntropyCase(rng, 20, 8, 300)
	be := newBackend(t, cpu.Options{})
	// Blocks of 64 vocabulary rows, so the weight is widened in five blocks.
	cpu.SetTileSizes(be, 64, 128, 64*tc.c)
	bf16 := runCrossEntropy(t, be, tc, true, 1)

	// The same weights in F32 give the same results: the blocks only split
	// the vocabulary dimension of the products. Tolerance 1e-6 relative, for
	// dHidden, whose sums over the vocabulary run in blocks.
	rounded := tc
	rounded.weight = fromBF16(toBF16(tc.weight))
	f32 := runCrossEntropy(t, newBackend(t, cpu.Options{}), rounded, false, 1)
	assert.Equal(t, f32.count, bf16.count)
	assert.InEpsilon(t, f32.loss, bf16.loss, 1e-6)
	requireClose(t, "dHidden", bf16.dHidden, widen(f32.dHidden), 1e-6, 1e-6)
	requireClose(t, "dWeight", bf16.dWeight, widen(f32.dWeight), 1e-6, 1e-6)
}

func TestLinearCrossEntropyWithoutGradients(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(87, 88))
	tc := newCrossEntropyCase(rng, 15, 6, 31)
	withGradients := runCrossEntropy(t, be, tc, false, 1)

	loss, count := be.LinearCrossEntropy(kernels.Tensor{}, kernels.Tensor{},
		newF32(t, be, tc.hidden, tc.n, tc.c), newF32(t, be, tc.weight, tc.v, tc.c), newI32(t, be, tc.targets, tc.n), 1)

	assert.Equal(t, withGradients.count, count)
	assert.Equal(t, withGradients.loss, loss)
}

func TestLinearCrossEntropyAllIgnored(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(89, 90))
	tc := newCrossEntropyCase(rng, 4, 3, 7)
	for i := range tc.targets {
		tc.targets[i] = kernels.IgnoreIndex
	}
	got := runCrossEntropy(t, be, tc, false, 1)

	assert.Equal(t, 0, got.count)
	assert.Equal(t, 0.0, got.loss)
	assert.Equal(t, make([]float32, tc.n*tc.c), got.dHidden)
	assert.Equal(t, make([]float32, tc.v*tc.c), got.dWeight)
}

func TestLinearCrossEntropyRejectsOutOfRangeTarget(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	hidden := newF32(t, be, nil, 2, 3)
	weight := newF32(t, be, nil, 5, 3)
	requirePanicsWith(t, func() {
		be.LinearCrossEntropy(kernels.Tensor{}, kernels.Tensor{}, hidden, weight, newI32(t, be, []int32{1, 5}, 2), 1)
	}, "LinearCrossEntropy", "target 5 of row 1", "vocabulary of 5", "-100")

	require.NotPanics(t, func() {
		be.LinearCrossEntropy(kernels.Tensor{}, kernels.Tensor{}, hidden, weight, newI32(t, be, []int32{1, kernels.IgnoreIndex}, 2), 1)
	})
}

func TestLinearCrossEntropyNaNLogit(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(91, 92))
	// A vocabulary of 37 puts the NaN logits both in the unrolled part of the
	// row loops and in their scalar rest.
	for _, nanRow := range []int{0, 5, 35, 36} {
		tc := newCrossEntropyCase(rng, 6, 4, 37)
		tc.targets[0] = 1 // at least one row takes loss
		tc.weight[nanRow*tc.c+2] = float32(math.NaN())

		got := runCrossEntropy(t, be, tc, false, 1)

		assert.True(t, math.IsNaN(got.loss), "vocabulary row %d has a NaN weight, but the loss is %v", nanRow, got.loss)
	}
}
