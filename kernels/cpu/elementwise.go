package cpu

import "github.com/ringtune/ringtune/kernels"

// Elementwise ops on F32 tensors: the residual add, scaling, and the sum of
// squares behind global gradient-norm clipping (kernels.ClipGradNorm).

// Add computes out = a + b.
func (b *Backend) Add(out, x, y kernels.Tensor) {
	n, err := kernels.CheckAdd(out, x, y)
	if err != nil {
		panic(err)
	}
	t := &b.tasks.add
	*t = addTask{out: Float32s(out), a: Float32s(x), b: Float32s(y)}
	b.pool.run(t, n, elementGrain)
	*t = addTask{}
}

type addTask struct {
	out, a, b []float32
}

func (t *addTask) run(_, start, end int) {
	out := t.out[start:end]
	a := t.a[start:end]
	b := t.b[start:end]
	a = a[:len(out)]
	b = b[:len(out)]
	for i := range out {
		out[i] = a[i] + b[i]
	}
}

// Scale multiplies x by alpha in place.
func (b *Backend) Scale(x kernels.Tensor, alpha float32) {
	if err := kernels.CheckScale(x); err != nil {
		panic(err)
	}
	t := &b.tasks.scale
	*t = scaleTask{x: Float32s(x), alpha: alpha}
	b.pool.run(t, len(t.x), elementGrain)
	*t = scaleTask{}
}

type scaleTask struct {
	x     []float32
	alpha float32
}

func (t *scaleTask) run(_, start, end int) {
	x := t.x[start:end]
	for i := range x {
		x[i] *= t.alpha
	}
}

// sumSquaresChunk is the number of elements per partial sum of SumSquares.
// The chunks depend on the element count alone, and their partial sums are
// added in order, so the result does not depend on the number of workers.
// Every replica of a data-parallel job thus computes the same norm from the
// same gradients.
const sumSquaresChunk = 1 << 16

// SumSquares returns Σx² over all elements of xs in float64.
func (b *Backend) SumSquares(xs []kernels.Tensor) float64 {
	if err := kernels.CheckSumSquares(xs); err != nil {
		panic(err)
	}
	var total float64
	for _, x := range xs {
		values := Float32s(x)
		chunks := (len(values) + sumSquaresChunk - 1) / sumSquaresChunk
		if cap(b.partials) < chunks {
			b.partials = make([]float64, chunks)
		}
		t := &b.tasks.sumSquares
		*t = sumSquaresTask{x: values, partials: b.partials[:chunks]}
		b.pool.run(t, chunks, 1)
		for _, p := range t.partials {
			total += p
		}
		*t = sumSquaresTask{}
	}
	return total
}

type sumSquaresTask struct {
	x        []float32
	partials []float64
}

func (t *sumSquaresTask) run(_, start, end int) {
	for chunk := start; chunk < end; chunk++ {
		x := t.x[chunk*sumSquaresChunk : min(len(t.x), (chunk+1)*sumSquaresChunk)]
		var s0, s1, s2, s3 float64
		for len(x) >= 4 {
			a, b, c, d := float64(x[0]), float64(x[1]), float64(x[2]), float64(x[3])
			s0 += a * a
			s1 += b * b
			s2 += c * c
			s3 += d * d
			x = x[4:]
		}
		for _, v := range x {
			s0 += float64(v) * float64(v)
		}
		t.partials[chunk] = (s0 + s1) + (s2 + s3)
	}
}
