package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/cpu"
)

// decodeSizes are the dimensions of an AttentionDecode test: Tq new queries
// over a cache of S positions, the first length of them filled.
type decodeSizes struct{ batch, queries, capacity, length, nh, nkv, hs int }

// decodeReference computes AttentionDecode in float64: query i of each row
// sits at position length−Tq+i and attends to the keys at positions up to
// its own. out: (B, Tq, NH, HS).
func decodeReference(s decodeSizes, q, k, v []float64) []float64 {
	out := make([]float64, s.batch*s.queries*s.nh*s.hs)
	scale := 1 / math.Sqrt(float64(s.hs))
	group := s.nh / s.nkv
	scores := make([]float64, s.length)
	for b := range s.batch {
		for h := range s.nh {
			g := h / group
			for i := range s.queries {
				qi := q[((b*s.queries+i)*s.nh+h)*s.hs:][:s.hs]
				last := s.length - s.queries + i
				rowMax := math.Inf(-1)
				for j := 0; j <= last; j++ {
					kj := k[((b*s.capacity+j)*s.nkv+g)*s.hs:][:s.hs]
					scores[j] = dot64(qi, kj) * scale
					rowMax = max(rowMax, scores[j])
				}
				var sum float64
				for j := 0; j <= last; j++ {
					scores[j] = math.Exp(scores[j] - rowMax)
					sum += scores[j]
				}
				o := out[((b*s.queries+i)*s.nh+h)*s.hs:][:s.hs]
				for j := 0; j <= last; j++ {
					vj := v[((b*s.capacity+j)*s.nkv+g)*s.hs:][:s.hs]
					for c := range o {
						o[c] += scores[j] / sum * vj[c]
					}
				}
			}
		}
	}
	return out
}

// randomCache returns a (B, S, NKV, HS) cache with random values at the
// positions before length and NaN after them, so that reading an unfilled
// position shows in the output.
func randomCache(rng *rand.Rand, s decodeSizes, scale float32) []float32 {
	cache := randomValues(rng, s.batch*s.capacity*s.nkv*s.hs, scale)
	rowLen := s.nkv * s.hs
	for b := range s.batch {
		for j := s.length; j < s.capacity; j++ {
			for c := range rowLen {
				cache[(b*s.capacity+j)*rowLen+c] = float32(math.NaN())
			}
		}
	}
	return cache
}

func runDecode(t *testing.T, be *cpu.Backend, s decodeSizes, q, k, v []float32) []float32 {
	t.Helper()
	out := newF32(t, be, nil, s.batch, s.queries, s.nh, s.hs)
	be.AttentionDecode(out,
		newF32(t, be, q, s.batch, s.queries, s.nh, s.hs),
		newF32(t, be, k, s.batch, s.capacity, s.nkv, s.hs),
		newF32(t, be, v, s.batch, s.capacity, s.nkv, s.hs),
		s.length)
	return toHost(t, be, out)
}

func TestAttentionDecodeMatchesReference(t *testing.T) {
	cases := []struct {
		name  string
		sizes decodeSizes
	}{
		{"one query", decodeSizes{batch: 2, queries: 1, capacity: 20, length: 13, nh: 4, nkv: 2, hs: 8}},
		{"first position", decodeSizes{batch: 1, queries: 1, capacity: 6, length: 1, nh: 4, nkv: 1, hs: 8}},
		{"full cache", decodeSizes{batch: 1, queries: 1, capacity: 9, length: 9, nh: 6, nkv: 3, hs: 16}},
		{"chunk after a prefix", decodeSizes{batch: 2, queries: 7, capacity: 30, length: 19, nh: 4, nkv: 2, hs: 8}},
		{"whole prompt", decodeSizes{batch: 1, queries: 17, capacity: 17, length: 17, nh: 4, nkv: 4, hs: 8}},
	}
	for _, tc := range cases {
		for _, tiles := range []struct {
			name  string
			apply func(*cpu.Backend)
		}{{"small tiles", smallTiles}, {"default tiles", func(*cpu.Backend) {}}} {
			t.Run(tc.name+"/"+tiles.name, func(t *testing.T) {
				s := tc.sizes
				rng := rand.New(rand.NewPCG(21, uint64(s.queries*100+s.length)))
				q := randomValues(rng, s.batch*s.queries*s.nh*s.hs, 1.5)
				k, v := randomCache(rng, s, 1.5), randomCache(rng, s, 1)
				be := newBackend(t, cpu.Options{})
				tiles.apply(be)

				got := runDecode(t, be, s, q, k, v)
				// Tolerance 2e-6, as for AttentionForward: float32 dot products
				// of HS terms and softmax sums of at most S terms, on values of
				// order 1.
				requireClose(t, "out", got, decodeReference(s, widen(q), widen(k), widen(v)), 2e-6, 2e-6)
			})
		}
	}
}

// TestAttentionDecodeEqualsForward checks that decoding a sequence one query
// at a time over a growing cache, and in one call over the whole prompt,
// gives the causal attention of the training kernel.
func TestAttentionDecodeEqualsForward(t *testing.T) {
	const batch, seqLen, nh, nkv, hs = 2, 21, 4, 2, 8
	rng := rand.New(rand.NewPCG(31, 32))
	in := randomAttentionInputs(rng, attentionSizes{batch: batch, seqLen: seqLen, nh: nh, nkv: nkv, hs: hs}, [][]int32{{0}, {0}})
	be := newBackend(t, cpu.Options{})
	smallTiles(be)
	forward := toHost(t, be, runAttentionForward(t, be, in).out)

	whole := runDecode(t, be, decodeSizes{batch: batch, queries: seqLen, capacity: seqLen, length: seqLen, nh: nh, nkv: nkv, hs: hs}, in.q, in.k, in.v)
	requireClose(t, "whole prompt", whole, widen(forward), 2e-6, 2e-6)

	// The step at position i reads the cache filled up to i. Positions after
	// it hold the later keys, which the step must not read.
	kCache := newF32(t, be, in.k, batch, seqLen, nkv, hs)
	vCache := newF32(t, be, in.v, batch, seqLen, nkv, hs)
	qStep := newF32(t, be, nil, batch, 1, nh, hs)
	outStep := newF32(t, be, nil, batch, 1, nh, hs)
	rowLen := nh * hs
	for i := range seqLen {
		step := make([]float32, batch*rowLen)
		want := make([]float64, batch*rowLen)
		for b := range batch {
			copy(step[b*rowLen:], in.q[(b*seqLen+i)*rowLen:][:rowLen])
			copy(want[b*rowLen:], widen(forward[(b*seqLen+i)*rowLen:][:rowLen]))
		}
		require.NoError(t, be.CopyFromHostF32(qStep, step))
		be.AttentionDecode(outStep, qStep, kCache, vCache, i+1)
		requireClose(t, "step", toHost(t, be, outStep), want, 2e-6, 2e-6)
	}
}

// TestAttentionDecodeLongCache crosses the bound on the scores of one task,
// so the query blocks shrink to a few rows.
func TestAttentionDecodeLongCache(t *testing.T) {
	if testing.Short() {
		t.Skip("long cache")
	}
	s := decodeSizes{batch: 1, queries: 9, capacity: 70000, length: 66000, nh: 2, nkv: 1, hs: 4}
	rng := rand.New(rand.NewPCG(41, 42))
	q := randomValues(rng, s.batch*s.queries*s.nh*s.hs, 1.5)
	k, v := randomCache(rng, s, 1.5), randomCache(rng, s, 1)
	got := runDecode(t, newBackend(t, cpu.Options{}), s, q, k, v)
	// Softmax sums of 66,000 float32 terms: tolerance 1e-5.
	requireClose(t, "out", got, decodeReference(s, widen(q), widen(k), widen(v)), 1e-5, 1e-5)
}

func TestAttentionDecodeDoesNotAllocate(t *testing.T) {
	if raceDetectorOn {
		t.Skip("Sgemm's sync.Pool allocates at random under the race detector")
	}
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(51, 52))
	s := decodeSizes{batch: 1, queries: 1, capacity: 64, length: 40, nh: 4, nkv: 2, hs: 16}
	out := newF32(t, be, nil, s.batch, s.queries, s.nh, s.hs)
	q := newF32(t, be, randomValues(rng, s.batch*s.queries*s.nh*s.hs, 1), s.batch, s.queries, s.nh, s.hs)
	k := newF32(t, be, randomCache(rng, s, 1), s.batch, s.capacity, s.nkv, s.hs)
	v := newF32(t, be, randomCache(rng, s, 1), s.batch, s.capacity, s.nkv, s.hs)
	run := func() { be.AttentionDecode(out, q, k, v, s.length) }
	run()
	assert.Zero(t, testing.AllocsPerRun(5, run))
}

func TestAttentionDecodeRejectsInvalidInputs(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	q := newF32(t, be, nil, 1, 2, 4, 8)
	out := newF32(t, be, nil, 1, 2, 4, 8)
	k := newF32(t, be, nil, 1, 10, 2, 8)
	v := newF32(t, be, nil, 1, 10, 2, 8)

	requirePanicsWith(t, func() { be.AttentionDecode(out, q, k, v, 11) }, "AttentionDecode", "length 11")
	requirePanicsWith(t, func() { be.AttentionDecode(out, q, k, v, 1) }, "length 1 with 2 new queries")
	requirePanicsWith(t, func() { be.AttentionDecode(out, q, k, v, 0) }, "length 0")
	requirePanicsWith(t, func() { be.AttentionDecode(q, q, k, v, 5) }, "out", "overlaps q")
	requirePanicsWith(t, func() { be.AttentionDecode(out, q, k, newF32(t, be, nil, 1, 9, 2, 8), 5) }, "vCache")
	requirePanicsWith(t, func() {
		be.AttentionDecode(out, q, newF32(t, be, nil, 1, 10, 3, 8), newF32(t, be, nil, 1, 10, 3, 8), 5)
	}, "multiple of the key/value heads")
	requirePanicsWith(t, func() { be.AttentionDecode(out, q, newF32(t, be, nil, 1, 10, 2, 4), v, 5) }, "kCache")
}
