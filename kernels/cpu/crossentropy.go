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
		rowMax := x[0]
		for _, v := range x[1:] {
			rowMax = max(rowMax, v)
		}
		var sum float64
		if t.gradients {
			for i, v := range x {
				e := expf(v - rowMax)
				x[i] = e
				sum += float64(e)
			}
		} else {
			for _, v := range x {
				sum += float64(expf(v - rowMax))
			}
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
