package cpu

import (
	"fmt"
	"math"

	"github.com/ringtune/ringtune/kernels"
)

// The language-model head fused with cross-entropy. The rows that take loss
// are gathered in chunks of b.ceChunkRows, and for each chunk
//
//	logits  = H·Wᵀ                    (R, V), the only logits held
//	loss_r  = logsumexp(logits_r) − logits_r[target_r]
//	dLogits = gradScale·(softmax(logits) − onehot(target))   in place
//	dH      = dLogits·W               (R, C), scattered to the chunk's rows
//	dW     += dLogitsᵀ·H              (V, C)
//
// Rows with kernels.IgnoreIndex are skipped before any product, so masked
// prompt tokens cost nothing. The log-softmax subtracts the row max before
// exponentiating, and the sum of exponentials and the loss are accumulated
// in float64. See package kernels for the gradient policy and the dimension
// letters.

// crossEntropyScratch holds the buffers of one chunk. They grow to the
// largest chunk and are reused.
type crossEntropyScratch struct {
	rows    []int32   // (R) indices of the chunk's rows in hidden
	hidden  []float32 // (R, C) the gathered rows of hidden
	dHidden []float32 // (R, C)
	logits  []float32 // (R, V), then dLogits
	losses  []float64 // (R)
}

func (s *crossEntropyScratch) reserve(rows, c, v int) {
	if cap(s.rows) < rows {
		s.rows = make([]int32, rows)
		s.losses = make([]float64, rows)
	}
	if cap(s.hidden) < rows*c {
		s.hidden = make([]float32, rows*c)
		s.dHidden = make([]float32, rows*c)
	}
	if cap(s.logits) < rows*v {
		s.logits = make([]float32, rows*v)
	}
}

// LinearCrossEntropy computes the summed loss and, when requested, dHidden
// and dWeight.
func (b *Backend) LinearCrossEntropy(dHidden, dWeight, hidden, weight, targets kernels.Tensor, gradScale float32) (lossSum float64, count int) {
	d, err := kernels.CheckLinearCrossEntropy(dHidden, dWeight, hidden, weight, targets)
	if err != nil {
		panic(err)
	}
	targetList := Int32s(targets)
	for n, target := range targetList {
		if target == kernels.IgnoreIndex {
			continue
		}
		if target < 0 || int(target) >= d.V {
			panic(fmt.Errorf("kernels: LinearCrossEntropy: target %d of row %d is out of range for a vocabulary of %d. Use %d to ignore a row",
				target, n, d.V, kernels.IgnoreIndex))
		}
		count++
	}

	var dH, dW []float32
	if !dHidden.IsAbsent() {
		dH = Float32s(dHidden)
		clear(dH)
	}
	if !dWeight.IsAbsent() {
		dW = Float32s(dWeight)
	}
	w := matrixOperand{ld: max(1, d.C)}
	if weight.DType() == kernels.BF16 {
		w.bf16 = BF16s(weight)
	} else {
		w.f32 = Float32s(weight)
	}
	h := Float32s(hidden)

	chunkRows := min(b.ceChunkRows, count)
	s := &b.crossEnt
	s.reserve(chunkRows, d.C, d.V)
	next := 0
	for {
		rows := 0
		for ; next < d.N && rows < chunkRows; next++ {
			if targetList[next] != kernels.IgnoreIndex {
				s.rows[rows] = int32(next)
				rows++
			}
		}
		if rows == 0 {
			break
		}
		chunkHidden := s.hidden[:rows*d.C]
		for r, n := range s.rows[:rows] {
			copy(chunkHidden[r*d.C:(r+1)*d.C], h[int(n)*d.C:(int(n)+1)*d.C])
		}
		logits := s.logits[:rows*d.V]
		b.gemmMixed(false, true, rows, d.V, d.C, 1, chunkHidden, max(1, d.C), w, 0, logits, max(1, d.V))

		t := &b.tasks.crossEntropyRows
		*t = crossEntropyRowsTask{
			logits: logits, targets: targetList, rows: s.rows[:rows], losses: s.losses[:rows],
			v: d.V, gradients: dH != nil || dW != nil, gradScale: gradScale,
		}
		b.pool.run(t, rows, 1)
		*t = crossEntropyRowsTask{}
		for _, loss := range s.losses[:rows] {
			lossSum += loss
		}

		if dH != nil {
			chunkGrad := s.dHidden[:rows*d.C]
			b.gemmMixed(false, false, rows, d.C, d.V, 1, logits, max(1, d.V), w, 0, chunkGrad, max(1, d.C))
			for r, n := range s.rows[:rows] {
				copy(dH[int(n)*d.C:(int(n)+1)*d.C], chunkGrad[r*d.C:(r+1)*d.C])
			}
		}
		if dW != nil {
			Sgemm(true, false, d.V, d.C, rows, 1, logits, max(1, d.V), chunkHidden, max(1, d.C), 1, dW, max(1, d.C))
		}
	}
	return lossSum, count
}

// crossEntropyRowsTask turns rows of logits into losses and, when gradients
// is set, into gradScale·(softmax − onehot) in place.
// logits: (R, V); rows, losses: (R); targets: (N).
type crossEntropyRowsTask struct {
	logits    []float32
	targets   []int32
	rows      []int32
	losses    []float64
	v         int
	gradients bool
	gradScale float32
}

func (t *crossEntropyRowsTask) run(_, start, end int) {
	for r := start; r < end; r++ {
		x := t.logits[r*t.v : (r+1)*t.v]
		target := int(t.targets[t.rows[r]])
		targetLogit := x[target]
		rowMax := maxOrNaN(x)
		var sum float64
		if t.gradients {
			sum = expShiftedSumInPlace(x, rowMax)
		} else {
			sum = expShiftedSum(x, rowMax)
		}
		t.losses[r] = float64(rowMax) + math.Log(sum) - float64(targetLogit)
		if !t.gradients {
			continue
		}
		k := float32(float64(t.gradScale) / sum)
		for i := range x {
			x[i] *= k
		}
		x[target] -= t.gradScale
	}
}

// maxOrNaN returns the max of the non-empty x, or NaN when x contains a NaN,
// so that a NaN logit makes the loss NaN. Eight independent maxima let the
// comparisons of successive values overlap instead of forming one chain.
func maxOrNaN(x []float32) float32 {
	m0, m1, m2, m3 := x[0], x[0], x[0], x[0]
	m4, m5, m6, m7 := x[0], x[0], x[0], x[0]
	i := 0
	for ; i+8 <= len(x); i += 8 {
		v := x[i : i+8 : i+8]
		m0 = max(m0, v[0])
		m1 = max(m1, v[1])
		m2 = max(m2, v[2])
		m3 = max(m3, v[3])
		m4 = max(m4, v[4])
		m5 = max(m5, v[5])
		m6 = max(m6, v[6])
		m7 = max(m7, v[7])
	}
	for _, v := range x[i:] {
		m0 = max(m0, v)
	}
	return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
}

// expShiftedSum returns the float64 sum of e^(v − shift) over x. It keeps four
// partial sums so that successive additions do not wait on each other. That
// changes the order of the additions, so the sum can differ from a
// left-to-right sum in the last bits.
func expShiftedSum(x []float32, shift float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		s0 += float64(expf(v[0] - shift))
		s1 += float64(expf(v[1] - shift))
		s2 += float64(expf(v[2] - shift))
		s3 += float64(expf(v[3] - shift))
	}
	for _, v := range x[i:] {
		s0 += float64(expf(v - shift))
	}
	return (s0 + s1) + (s2 + s3)
}

// expShiftedSumInPlace replaces each v in x by e^(v − shift) and returns the
// float64 sum of the results, with four partial sums as in expShiftedSum.
func expShiftedSumInPlace(x []float32, shift float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		e0, e1 := expf(v[0]-shift), expf(v[1]-shift)
		e2, e3 := expf(v[2]-shift), expf(v[3]-shift)
		v[0], v[1], v[2], v[3] = e0, e1, e2, e3
		s0 += float64(e0)
		s1 += float64(e1)
		s2 += float64(e2)
		s3 += float64(e3)
	}
	for j, v := range x[i:] {
		e := expf(v - shift)
		x[i+j] = e
		s0 += float64(e)
	}
	return (s0 + s1) + (s2 + s3)
}
