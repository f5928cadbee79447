package cpu

import (
	"fmt"
	"math"

	"github.com/ringtune/ringtune/kernels"
)

// Rotary position embedding in Hugging Face's rotate-half convention
// (modeling_qwen3.py, apply_rotary_pos_emb), on q or k laid out
// (B, T, heads, HS). That layout is the output of the q, k and v projections
// as they are, so no transpose is needed before or after, and every head of a
// token shares one row of cos and sin. See package kernels for the gradient
// policy and the dimension letters.
//
// The angles follow Hugging Face's fp32 arithmetic: inv_freq_i =
// 1/theta^(2i/HS) rounded to float32, angle = float32(pos)·inv_freq_i in
// float32, then cos and sin of that float32 angle.

// RoPEForward rotates x by the angles of positions.
func (b *Backend) RoPEForward(out, x, positions kernels.Tensor, theta float64) {
	b.rope.apply(b, "RoPEForward", out, x, positions, theta, 1)
}

// RoPEBackward rotates dOut by the opposite angles: the rotation is
// orthogonal, so its transpose is its inverse.
func (b *Backend) RoPEBackward(dx, dOut, positions kernels.Tensor, theta float64) {
	b.rope.apply(b, "RoPEBackward", dx, dOut, positions, theta, -1)
}

// ropeTableMaxPositions bounds the cached table at 2^16 positions, 32 MiB for
// HS = 128. Larger positions get their angles computed per token.
const ropeTableMaxPositions = 1 << 16

// ropeTable caches cos and sin for positions [0, positions) and one theta and
// head size. It grows to the largest position seen.
type ropeTable struct {
	theta     float64
	half      int // HS/2
	positions int
	cos, sin  []float32 // (positions, half)
	invFreq   []float32 // (half)
}

func (r *ropeTable) apply(b *Backend, op string, out, x, positions kernels.Tensor, theta float64, sinSign float32) {
	d, err := kernels.CheckRoPE(op, out, x, positions, theta)
	if err != nil {
		panic(err)
	}
	pos := Int32s(positions)
	maxPos := int32(-1)
	for n, p := range pos {
		if p < 0 {
			panic(fmt.Errorf("kernels: %s: position %d of token %d is negative", op, p, n))
		}
		maxPos = max(maxPos, p)
	}
	r.ensure(theta, d.HS/2, min(int(maxPos)+1, ropeTableMaxPositions))

	t := &b.tasks.rope
	*t = ropeTask{
		backend: b, table: r, out: Float32s(out), x: Float32s(x), positions: pos,
		heads: d.Heads, hs: d.HS, sinSign: sinSign,
	}
	b.pool.run(t, d.B*d.T, max(1, elementGrain/max(1, d.Heads*d.HS)))
	*t = ropeTask{}
}

// ensure makes the table cover positions [0, positions) for theta and half.
func (r *ropeTable) ensure(theta float64, half, positions int) {
	if r.theta != theta || r.half != half {
		r.theta, r.half, r.positions = theta, half, 0
		r.invFreq = make([]float32, half)
		for i := range r.invFreq {
			r.invFreq[i] = ropeInverseFrequency(theta, half, i)
		}
	}
	if positions <= r.positions {
		return
	}
	if cap(r.cos) < positions*half {
		r.cos = make([]float32, positions*half)
		r.sin = make([]float32, positions*half)
		r.positions = 0
	}
	r.cos, r.sin = r.cos[:positions*half], r.sin[:positions*half]
	for p := r.positions; p < positions; p++ {
		fillRotation(r.cos[p*half:(p+1)*half], r.sin[p*half:(p+1)*half], r.invFreq, p)
	}
	r.positions = positions
}

// ropeInverseFrequency returns 1/theta^(2i/HS) as Hugging Face computes it in
// float32: the exponent and the reciprocal are rounded to float32.
func ropeInverseFrequency(theta float64, half, i int) float32 {
	exponent := float32(2*i) / float32(2*half)
	return 1 / float32(math.Pow(theta, float64(exponent)))
}

// fillRotation writes cos and sin of the angles of position p.
func fillRotation(cos, sin, invFreq []float32, p int) {
	cos = cos[:len(invFreq)]
	sin = sin[:len(invFreq)]
	for i, f := range invFreq {
		angle := float64(float32(p) * f)
		cos[i] = float32(math.Cos(angle))
		sin[i] = float32(math.Sin(angle))
	}
}

// ropeTask rotates the heads of a range of tokens.
// out, x: (B·T, heads, HS); positions: (B·T).
type ropeTask struct {
	backend   *Backend
	table     *ropeTable
	out, x    []float32
	positions []int32
	heads, hs int
	sinSign   float32 // +1 rotates forward, −1 backward
}

func (t *ropeTask) run(worker, start, end int) {
	half := t.hs / 2
	rowLen := t.heads * t.hs
	for n := start; n < end; n++ {
		p := int(t.positions[n])
		var cos, sin []float32
		if p < t.table.positions {
			cos = t.table.cos[p*half : (p+1)*half]
			sin = t.table.sin[p*half : (p+1)*half]
		} else {
			scratch := t.backend.workerScratch(worker, 2*half)
			cos, sin = scratch[:half], scratch[half:]
			fillRotation(cos, sin, t.table.invFreq, p)
		}
		for h := range t.heads {
			base := n*rowLen + h*t.hs
			rotateHalf(t.out[base:base+t.hs], t.x[base:base+t.hs], cos, sin, t.sinSign)
		}
	}
}

// rotateHalf rotates the pairs (x[i], x[i+half]) of one head. out may be x.
func rotateHalf(out, x, cos, sin []float32, sinSign float32) {
	half := len(cos)
	xLo, xHi := x[:half], x[half:2*half]
	outLo, outHi := out[:half], out[half:2*half]
	sin = sin[:half]
	for i, c := range cos {
		lo, hi := xLo[i], xHi[i]
		s := sinSign * sin[i]
		outLo[i] = lo*c - hi*s
		outHi[i] = hi*c + lo*s
	}
}
