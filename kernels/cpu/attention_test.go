package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// attentionSizes are the dimensions of an attention test.
type attentionSizes struct{ batch, seqLen, nh, nkv, hs int }

// attentionReference computes causal grouped-query attention with segment
// starts in float64, materializing each query's scores: out (B, T, NH, HS)
// and lse (B, NH, T).
func attentionReference(s attentionSizes, q, k, v []float64, seg []int32) (out, lse []float64) {
	out = make([]float64, s.batch*s.seqLen*s.nh*s.hs)
	lse = make([]float64, s.batch*s.nh*s.seqLen)
	scale := 1 / math.Sqrt(float64(s.hs))
	group := s.nh / s.nkv
	scores := make([]float64, s.seqLen)
	for b := range s.batch {
		for h := range s.nh {
			g := h / group
			for i := range s.seqLen {
				qi := q[((b*s.seqLen+i)*s.nh+h)*s.hs:][:s.hs]
				lo := int(seg[b*s.seqLen+i])
				rowMax := math.Inf(-1)
				for j := lo; j <= i; j++ {
					kj := k[((b*s.seqLen+j)*s.nkv+g)*s.hs:][:s.hs]
					scores[j] = dot64(qi, kj) * scale
					rowMax = max(rowMax, scores[j])
				}
				var sum float64
				for j := lo; j <= i; j++ {
					scores[j] = math.Exp(scores[j] - rowMax)
					sum += scores[j]
				}
				o := out[((b*s.seqLen+i)*s.nh+h)*s.hs:][:s.hs]
				for j := lo; j <= i; j++ {
					vj := v[((b*s.seqLen+j)*s.nkv+g)*s.hs:][:s.hs]
					for c := range o {
						o[c] += scores[j] / sum * vj[c]
					}
				}
				lse[(b*s.nh+h)*s.seqLen+i] = rowMax + math.Log(sum)
			}
		}
	}
	return out, lse
}

// attentionInputs are the host tensors of one attention call.
type attentionInputs struct {
	sizes   attentionSizes
	q, k, v []float32
	seg     []int32
}

func randomAttentionInputs(rng *rand.Rand, s attentionSizes, starts [][]int32) attentionInputs {
	in := attentionInputs{
		sizes: s,
		q:     randomValues(rng, s.batch*s.seqLen*s.nh*s.hs, 1.5),
		k:     randomValues(rng, s.batch*s.seqLen*s.nkv*s.hs, 1.5),
		v:     randomValues(rng, s.batch*s.seqLen*s.nkv*s.hs, 1),
		seg:   make([]int32, s.batch*s.seqLen),
	}
	if err := kernels.SegmentStarts(in.seg, starts, nil, s.seqLen); err != nil {
		panic(err)
	}
	return in
}

// attentionTensors holds an attention call's tensors on a backend.
type attentionTensors struct {
	q, k, v, seg, out, lse kernels.Tensor
}

func runAttentionForward(t *testing.T, be *cpu.Backend, in attentionInputs) attentionTensors {
	t.Helper()
	s := in.sizes
	a := attentionTensors{
		q:   newF32(t, be, in.q, s.batch, s.seqLen, s.nh, s.hs),
		k:   newF32(t, be, in.k, s.batch, s.seqLen, s.nkv, s.hs),
		v:   newF32(t, be, in.v, s.batch, s.seqLen, s.nkv, s.hs),
		seg: newI32(t, be, in.seg, s.batch, s.seqLen),
		out: newF32(t, be, nil, s.batch, s.seqLen, s.nh, s.hs),
		lse: newF32(t, be, nil, s.batch, s.nh, s.seqLen),
	}
	be.AttentionForward(a.out, a.lse, a.q, a.k, a.v, a.seg)
	return a
}

// smallTiles makes the tiles smaller than the sequences and of sizes that do
// not divide them, so that the tests cross every kind of block edge.
func smallTiles(be *cpu.Backend) { cpu.SetTileSizes(be, 5, 3, 1<<20) }

func TestAttentionForwardMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	s := attentionSizes{batch: 2, seqLen: 23, nh: 4, nkv: 2, hs: 8}
	in := randomAttentionInputs(rng, s, [][]int32{{0, 7, 15}, {0}})
	for _, tiles := range []struct {
		name  string
		apply func(*cpu.Backend)
	}{{"small tiles", smallTiles}, {"default tiles", func(*cpu.Backend) {}}} {
		t.Run(tiles.name, func(t *testing.T) {
			be := newBackend(t, cpu.Options{})
			tiles.apply(be)
			a := runAttentionForward(t, be, in)

			// Tolerance 2e-6: float32 dot products of HS terms and softmax
			// sums of at most T terms, on values of order 1.
			out, lse := attentionReference(s, widen(in.q), widen(in.k), widen(in.v), in.seg)
			requireClose(t, "out", toHost(t, be, a.out), out, 2e-6, 2e-6)
			requireClose(t, "lse", toHost(t, be, a.lse), lse, 2e-6, 2e-6)
		})
	}
}

func TestAttentionForwardLongSequence(t *testing.T) {
	// 150 tokens span three query blocks of the default 64, and the last
	// block reads the 145 keys from 5, two key blocks of the default 128.
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(13, 14))
	s := attentionSizes{batch: 1, seqLen: 150, nh: 2, nkv: 1, hs: 16}
	in := randomAttentionInputs(rng, s, [][]int32{{0, 5, 140}})
	a := runAttentionForward(t, be, in)

	out, lse := attentionReference(s, widen(in.q), widen(in.k), widen(in.v), in.seg)
	requireClose(t, "out", toHost(t, be, a.out), out, 2e-6, 2e-6)
	requireClose(t, "lse", toHost(t, be, a.lse), lse, 2e-6, 2e-6)
}

func TestAttentionBackwardFiniteDifferences(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	smallTiles(be)
	rng := rand.New(rand.NewPCG(15, 16))
	s := attentionSizes{batch: 2, seqLen: 17, nh: 4, nkv: 2, hs: 8}
	in := randomAttentionInputs(rng, s, [][]int32{{0, 6, 11}, {0, 1}})
	a := runAttentionForward(t, be, in)

	rHost := randomValues(rng, len(in.q), 1)
	dOut := newF32(t, be, rHost, s.batch, s.seqLen, s.nh, s.hs)
	dq := newF32(t, be, nil, s.batch, s.seqLen, s.nh, s.hs)
	dk := newF32(t, be, nil, s.batch, s.seqLen, s.nkv, s.hs)
	dv := newF32(t, be, nil, s.batch, s.seqLen, s.nkv, s.hs)
	be.AttentionBackward(dq, dk, dv, dOut, a.q, a.k, a.v, a.out, a.lse, a.seg)

	q64, k64, v64, r64 := widen(in.q), widen(in.k), widen(in.v), widen(rHost)
	loss := func() float64 {
		out, _ := attentionReference(s, q64, k64, v64, in.seg)
		return dot64(out, r64)
	}
	checkGradient(t, "q", q64, toHost(t, be, dq), loss, rng)
	checkGradient(t, "k", k64, toHost(t, be, dk), loss, rng)
	checkGradient(t, "v", v64, toHost(t, be, dv), loss, rng)
}

func TestAttentionBackwardOverwritesGradients(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	smallTiles(be)
	rng := rand.New(rand.NewPCG(17, 18))
	s := attentionSizes{batch: 1, seqLen: 9, nh: 2, nkv: 1, hs: 4}
	in := randomAttentionInputs(rng, s, [][]int32{{0, 4}})
	a := runAttentionForward(t, be, in)
	dOut := newF32(t, be, randomValues(rng, len(in.q), 1), s.batch, s.seqLen, s.nh, s.hs)

	grads := func(fill float32) [3][]float32 {
		dq := newF32(t, be, constant(len(in.q), fill), s.batch, s.seqLen, s.nh, s.hs)
		dk := newF32(t, be, constant(len(in.k), fill), s.batch, s.seqLen, s.nkv, s.hs)
		dv := newF32(t, be, constant(len(in.v), fill), s.batch, s.seqLen, s.nkv, s.hs)
		be.AttentionBackward(dq, dk, dv, dOut, a.q, a.k, a.v, a.out, a.lse, a.seg)
		return [3][]float32{toHost(t, be, dq), toHost(t, be, dk), toHost(t, be, dv)}
	}
	require.Equal(t, grads(0), grads(7))
}

func constant(n int, value float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = value
	}
	return x
}

func TestAttentionPackedRowEqualsSeparateExamples(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	smallTiles(be)
	rng := rand.New(rand.NewPCG(19, 20))
	starts := []int32{0, 5, 6, 14}
	s := attentionSizes{batch: 1, seqLen: 20, nh: 2, nkv: 2, hs: 8}
	packed := randomAttentionInputs(rng, s, [][]int32{starts})
	packedPositions := make([]int32, s.seqLen)
	for e, start := range starts {
		for t := int(start); t < s.seqLen && (e+1 == len(starts) || t < int(starts[e+1])); t++ {
			packedPositions[t] = int32(t) - start
		}
	}
	rotated := packed
	rotated.q = rotate(t, be, packed.q, packedPositions, s.nh, s.hs)
	rotated.k = rotate(t, be, packed.k, packedPositions, s.nkv, s.hs)
	packedOut := toHost(t, be, runAttentionForward(t, be, rotated).out)

	// Each example alone is a batch of one row with positions from 0. Its
	// outputs must equal the example's slice of the packed row. The tiles
	// fall differently, so the sums run in another order: tolerance 1e-6.
	rowLen := s.nh * s.hs
	kvLen := s.nkv * s.hs
	for e, start := range starts {
		end := s.seqLen
		if e+1 < len(starts) {
			end = int(starts[e+1])
		}
		alone := attentionSizes{batch: 1, seqLen: end - int(start), nh: s.nh, nkv: s.nkv, hs: s.hs}
		positions := make([]int32, alone.seqLen)
		for i := range positions {
			positions[i] = int32(i)
		}
		in := attentionInputs{
			sizes: alone,
			q:     rotate(t, be, packed.q[int(start)*rowLen:end*rowLen], positions, s.nh, s.hs),
			k:     rotate(t, be, packed.k[int(start)*kvLen:end*kvLen], positions, s.nkv, s.hs),
			v:     packed.v[int(start)*kvLen : end*kvLen],
			seg:   make([]int32, alone.seqLen),
		}
		got := toHost(t, be, runAttentionForward(t, be, in).out)
		requireClose(t, "example output", got, widen(packedOut[int(start)*rowLen:end*rowLen]), 1e-6, 1e-6)
	}
}

// rotate applies RoPEForward with Qwen3's theta to the host tensor x,
// (1, len(positions), heads, hs), and returns the result.
func rotate(t *testing.T, be *cpu.Backend, x []float32, positions []int32, heads, hs int) []float32 {
	t.Helper()
	tokens := len(positions)
	xT := newF32(t, be, x, 1, tokens, heads, hs)
	be.RoPEForward(xT, xT, newI32(t, be, positions, 1, tokens), 1e6)
	return toHost(t, be, xT)
}

func TestAttentionGroupedEqualsRepeatedHeads(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	smallTiles(be)
	rng := rand.New(rand.NewPCG(21, 22))
	grouped := attentionSizes{batch: 2, seqLen: 11, nh: 6, nkv: 2, hs: 4}
	in := randomAttentionInputs(rng, grouped, [][]int32{{0, 3}, {0}})

	// Repeat each key/value head for its NH/NKV query heads.
	full := grouped
	full.nkv = full.nh
	group := grouped.nh / grouped.nkv
	repeat := func(x []float32) []float32 {
		out := make([]float32, 0, len(x)*group)
		for token := range grouped.batch * grouped.seqLen {
			for g := range grouped.nkv {
				head := x[(token*grouped.nkv+g)*grouped.hs:][:grouped.hs]
				for range group {
					out = append(out, head...)
				}
			}
		}
		return out
	}
	repeated := attentionInputs{sizes: full, q: in.q, k: repeat(in.k), v: repeat(in.v), seg: in.seg}

	a := runAttentionForward(t, be, in)
	b := runAttentionForward(t, be, repeated)
	// Every query head computes the same products on the same values.
	require.Equal(t, toHost(t, be, b.out), toHost(t, be, a.out))

	rHost := randomValues(rng, len(in.q), 1)
	backward := func(s attentionSizes, x attentionTensors) (dk, dv []float32) {
		dOut := newF32(t, be, rHost, s.batch, s.seqLen, s.nh, s.hs)
		dq := newF32(t, be, nil, s.batch, s.seqLen, s.nh, s.hs)
		dkT := newF32(t, be, nil, s.batch, s.seqLen, s.nkv, s.hs)
		dvT := newF32(t, be, nil, s.batch, s.seqLen, s.nkv, s.hs)
		be.AttentionBackward(dq, dkT, dvT, dOut, x.q, x.k, x.v, x.out, x.lse, x.seg)
		return toHost(t, be, dkT), toHost(t, be, dvT)
	}
	dkGrouped, dvGrouped := backward(grouped, a)
	dkFull, dvFull := backward(full, b)

	// The gradient of a shared head is the sum over the heads that read it.
	// Tolerance 1e-6: the sums of NH/NKV terms run in another order.
	sumRepeats := func(x []float32) []float64 {
		out := make([]float64, 0, len(x)/group)
		for token := range grouped.batch * grouped.seqLen {
			for g := range grouped.nkv {
				for c := range grouped.hs {
					var s float64
					for r := range group {
						s += float64(x[((token*full.nkv)+g*group+r)*grouped.hs+c])
					}
					out = append(out, s)
				}
			}
		}
		return out
	}
	requireClose(t, "dk", dkGrouped, sumRepeats(dkFull), 1e-6, 1e-6)
	requireClose(t, "dv", dvGrouped, sumRepeats(dvFull), 1e-6, 1e-6)
}

func TestAttentionRejectsInvalidInputs(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	q := newF32(t, be, nil, 1, 4, 3, 8)
	k := newF32(t, be, nil, 1, 4, 2, 8)
	out := newF32(t, be, nil, 1, 4, 3, 8)
	seg := newI32(t, be, []int32{0, 0, 0, 0}, 1, 4)
	requirePanicsWith(t, func() {
		be.AttentionForward(out, kernels.Tensor{}, q, k, k, seg)
	}, "AttentionForward", "3 heads", "2")

	k3 := newF32(t, be, nil, 1, 4, 3, 8)
	badSeg := newI32(t, be, []int32{0, 2, 0, 0}, 1, 4)
	requirePanicsWith(t, func() {
		be.AttentionForward(out, kernels.Tensor{}, q, k3, newF32(t, be, nil, 1, 4, 3, 8), badSeg)
	}, "invalid segment start 2 for token 1")
}
