package cpu

import (
	"fmt"
	"math"

	"github.com/ringtune/ringtune/kernels"
)

// Causal grouped-query attention with example boundaries, computed in tiles
// as FlashAttention-2 does. The keys of a block of Br queries are visited in
// blocks of Bc. Each block's scores S = scale·Q·Kᵀ (Br×Bc) come from one
// Sgemm, and the softmax runs online: a running max m and sum l per query,
// with the partial output rescaled when the max grows. P·V is added to the
// output with another Sgemm. Only one Br×Bc tile of scores per worker exists
// at a time, never the T×T matrix. The forward saves lse = m + log(l) per
// query, from which the backward recomputes each tile's probabilities.
//
// q, out: (B, T, NH, HS); k, v: (B, T, NKV, HS); lse: (B, NH, T);
// segmentStarts: (B, T). Query t of row b attends to the keys j with
// segmentStarts[b, t] ≤ j ≤ t, and query head h reads key/value head
// h/(NH/NKV). In the (B, T, heads, HS) layout, the rows of one head are
// heads·HS apart, which Sgemm takes as the leading dimension, so no head is
// copied. See package kernels for the gradient policy and the dimension
// letters.

// AttentionForward computes out and lse.
func (b *Backend) AttentionForward(out, lse, q, k, v, segmentStarts kernels.Tensor) {
	d, err := kernels.CheckAttentionForward(out, lse, q, k, v, segmentStarts)
	if err != nil {
		panic(err)
	}
	seg := Int32s(segmentStarts)
	checkSegmentStarts("AttentionForward", seg, d.T)
	t := &b.tasks.attentionForward
	*t = attentionForwardTask{attentionShape: b.attentionShape(d, seg), out: Float32s(out), q: Float32s(q), k: Float32s(k), v: Float32s(v)}
	if !lse.IsAbsent() {
		t.lse = Float32s(lse)
	}
	// Tasks are (b, h, query block), with the last query blocks, which see
	// the most keys, handed out first.
	b.pool.run(t, d.B*d.NH*t.queryBlocks, 1)
	*t = attentionForwardTask{}
}

// attentionShape holds what the forward and backward tasks share.
type attentionShape struct {
	backend                *Backend
	batch, seqLen, nh, nkv int
	hs                     int
	scale                  float32
	queryBlock, keyBlock   int
	queryBlocks            int
	segmentStarts          []int32 // (B, T)
}

func (b *Backend) attentionShape(d kernels.AttentionDims, seg []int32) attentionShape {
	qb := b.attentionQueryBlock
	return attentionShape{
		backend: b, batch: d.B, seqLen: d.T, nh: d.NH, nkv: d.NKV, hs: d.HS,
		scale:      float32(1 / math.Sqrt(float64(d.HS))),
		queryBlock: qb, keyBlock: b.attentionKeyBlock,
		queryBlocks:   (d.T + qb - 1) / qb,
		segmentStarts: seg,
	}
}

// visibleKeys returns the keys [lo, hi) of the block [j0, j1) that query t of
// row b attends to. lo ≥ hi when there are none.
func (s *attentionShape) visibleKeys(b, t, j0, j1 int) (lo, hi int) {
	lo = max(j0, int(s.segmentStarts[b*s.seqLen+t]))
	hi = min(j1, t+1)
	return lo, hi
}

// attentionForwardTask computes one block of queries of one head per item.
type attentionForwardTask struct {
	attentionShape
	out, q, k, v []float32
	lse          []float32 // nil when the caller does not need it
}

func (t *attentionForwardTask) run(worker, start, end int) {
	for item := start; item < end; item++ {
		block := t.queryBlocks - 1 - item%t.queryBlocks
		head := item / t.queryBlocks % t.nh
		row := item / t.queryBlocks / t.nh
		t.queryBlockForward(worker, row, head, block)
	}
}

// queryBlockForward runs the online softmax over the key blocks for queries
// [i0, i1) of head h in row b.
func (t *attentionForwardTask) queryBlockForward(worker, b, h, block int) {
	br, bc, hs := t.queryBlock, t.keyBlock, t.hs
	i0 := block * br
	i1 := min(t.seqLen, i0+br)
	rows := i1 - i0
	g := h / (t.nh / t.nkv)
	ldq, ldkv := t.nh*hs, t.nkv*hs

	scratch := t.backend.workerScratch(worker, br*bc+2*br)
	scores := scratch[:br*bc]
	runMax := scratch[br*bc : br*bc+br]
	runSum := scratch[br*bc+br : br*bc+2*br]
	negInf := float32(math.Inf(-1))
	for r := range rows {
		runMax[r], runSum[r] = negInf, 0
	}

	qBlock := t.q[(b*t.seqLen+i0)*ldq+h*hs:]
	oBlock := t.out[(b*t.seqLen+i0)*ldq+h*hs:]
	for r := range rows {
		clear(oBlock[r*ldq : r*ldq+hs])
	}

	// Segment starts never decrease along a row, so the first query of the
	// block attends to the earliest key.
	jStart := int(t.segmentStarts[b*t.seqLen+i0])
	for j0 := jStart; j0 < i1; j0 += bc {
		j1 := min(i1, j0+bc)
		cols := j1 - j0
		kBlock := t.k[(b*t.seqLen+j0)*ldkv+g*hs:]
		vBlock := t.v[(b*t.seqLen+j0)*ldkv+g*hs:]
		s := scores[:rows*cols]
		Sgemm(false, true, rows, cols, hs, t.scale, qBlock, ldq, kBlock, ldkv, 0, s, cols)

		for r := range rows {
			sRow := s[r*cols : (r+1)*cols]
			lo, hi := t.visibleKeys(b, i0+r, j0, j1)
			if lo >= hi {
				clear(sRow)
				continue
			}
			visible := sRow[lo-j0 : hi-j0]
			blockMax := visible[0]
			for _, x := range visible[1:] {
				blockMax = max(blockMax, x)
			}
			newMax := max(runMax[r], blockMax)
			var sum float32
			for c, x := range visible {
				p := expf(x - newMax)
				visible[c] = p
				sum += p
			}
			clear(sRow[:lo-j0])
			clear(sRow[hi-j0:])
			// exp(−Inf) is 0, so the first visible block drops nothing.
			correction := expf(runMax[r] - newMax)
			runSum[r] = runSum[r]*correction + sum
			runMax[r] = newMax
			if correction != 1 {
				oRow := oBlock[r*ldq : r*ldq+hs]
				for c := range oRow {
					oRow[c] *= correction
				}
			}
		}
		Sgemm(false, false, rows, hs, cols, 1, s, cols, vBlock, ldkv, 1, oBlock, ldq)
	}

	for r := range rows {
		oRow := oBlock[r*ldq : r*ldq+hs]
		inv := 1 / runSum[r]
		for c := range oRow {
			oRow[c] *= inv
		}
		if t.lse != nil {
			t.lse[(b*t.nh+h)*t.seqLen+i0+r] = runMax[r] + float32(math.Log(float64(runSum[r])))
		}
	}
}

// AttentionBackward computes dq, dk and dv. One task owns one key/value head
// of one row with all NH/NKV query heads that read it, so dk and dv (summed
// over those heads) and dq are written by one worker and need no locks or
// per-worker copies. Per query block i and key block j of the task, with
// P = exp(S − lse) and D_i = rowsum(dO_i ∘ O_i):
//
//	dV_j += P_ijᵀ·dO_i
//	dP    = dO_i·V_jᵀ
//	dS    = P_ij ∘ (dP − D_i)
//	dQ_i += scale·dS·K_j
//	dK_j += scale·dSᵀ·Q_i
func (b *Backend) AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse, segmentStarts kernels.Tensor) {
	d, err := kernels.CheckAttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse, segmentStarts)
	if err != nil {
		panic(err)
	}
	seg := Int32s(segmentStarts)
	checkSegmentStarts("AttentionBackward", seg, d.T)
	t := &b.tasks.attentionBackward
	*t = attentionBackwardTask{
		attentionShape: b.attentionShape(d, seg),
		dq:             Float32s(dq), dk: Float32s(dk), dv: Float32s(dv),
		dOut: Float32s(dOut), q: Float32s(q), k: Float32s(k), v: Float32s(v),
		out: Float32s(out), lse: Float32s(lse),
	}
	// TODO: B·NKV tasks keep at most B·NKV cores busy. For machines with more
	// cores, split the key blocks across tasks and reduce dq separately.
	b.pool.run(t, d.B*d.NKV, 1)
	*t = attentionBackwardTask{}
}

// attentionBackwardTask computes the gradients of one key/value head of one
// row per item.
type attentionBackwardTask struct {
	attentionShape
	dq, dk, dv         []float32
	dOut, q, k, v, out []float32
	lse                []float32
}

func (t *attentionBackwardTask) run(worker, start, end int) {
	for item := start; item < end; item++ {
		b, g := item/t.nkv, item%t.nkv
		t.headBackward(worker, b, g)
	}
}

func (t *attentionBackwardTask) headBackward(worker, b, g int) {
	hs := t.hs
	ldq, ldkv := t.nh*hs, t.nkv*hs
	group := t.nh / t.nkv
	for i := range t.seqLen {
		kvRow := (b*t.seqLen+i)*ldkv + g*hs
		clear(t.dk[kvRow : kvRow+hs])
		clear(t.dv[kvRow : kvRow+hs])
		qRow := (b*t.seqLen+i)*ldq + g*group*hs
		clear(t.dq[qRow : qRow+group*hs])
	}
	for h := g * group; h < (g+1)*group; h++ {
		for block := range t.queryBlocks {
			t.queryBlockBackward(worker, b, h, g, block)
		}
	}
}

func (t *attentionBackwardTask) queryBlockBackward(worker, b, h, g, block int) {
	br, bc, hs := t.queryBlock, t.keyBlock, t.hs
	i0 := block * br
	i1 := min(t.seqLen, i0+br)
	rows := i1 - i0
	ldq, ldkv := t.nh*hs, t.nkv*hs

	scratch := t.backend.workerScratch(worker, 2*br*bc+2*br)
	probs := scratch[:br*bc]
	dProbs := scratch[br*bc : 2*br*bc]
	rowLSE := scratch[2*br*bc : 2*br*bc+br]
	rowDot := scratch[2*br*bc+br : 2*br*bc+2*br]

	qOffset := (b*t.seqLen+i0)*ldq + h*hs
	qBlock, dqBlock := t.q[qOffset:], t.dq[qOffset:]
	dOutBlock := t.dOut[qOffset:]
	for r := range rows {
		o := t.out[qOffset+r*ldq : qOffset+r*ldq+hs]
		dO := dOutBlock[r*ldq : r*ldq+hs]
		dO = dO[:len(o)]
		var dot float32
		for c, x := range o {
			dot += x * dO[c]
		}
		rowDot[r] = dot
		rowLSE[r] = t.lse[(b*t.nh+h)*t.seqLen+i0+r]
	}

	jStart := int(t.segmentStarts[b*t.seqLen+i0])
	for j0 := jStart; j0 < i1; j0 += bc {
		j1 := min(i1, j0+bc)
		cols := j1 - j0
		kvOffset := (b*t.seqLen+j0)*ldkv + g*hs
		kBlock, vBlock := t.k[kvOffset:], t.v[kvOffset:]
		dkBlock, dvBlock := t.dk[kvOffset:], t.dv[kvOffset:]
		p := probs[:rows*cols]
		dp := dProbs[:rows*cols]

		Sgemm(false, true, rows, cols, hs, t.scale, qBlock, ldq, kBlock, ldkv, 0, p, cols)
		for r := range rows {
			pRow := p[r*cols : (r+1)*cols]
			lo, hi := t.visibleKeys(b, i0+r, j0, j1)
			if lo >= hi {
				clear(pRow)
				continue
			}
			visible := pRow[lo-j0 : hi-j0]
			lse := rowLSE[r]
			for c, x := range visible {
				visible[c] = expf(x - lse)
			}
			clear(pRow[:lo-j0])
			clear(pRow[hi-j0:])
		}
		Sgemm(true, false, cols, hs, rows, 1, p, cols, dOutBlock, ldq, 1, dvBlock, ldkv)
		Sgemm(false, true, rows, cols, hs, 1, dOutBlock, ldq, vBlock, ldkv, 0, dp, cols)
		for r := range rows {
			pRow := p[r*cols : (r+1)*cols]
			dpRow := dp[r*cols : (r+1)*cols]
			dpRow = dpRow[:len(pRow)]
			dot := rowDot[r]
			for c, pv := range pRow {
				dpRow[c] = pv * (dpRow[c] - dot)
			}
		}
		Sgemm(false, false, rows, hs, cols, t.scale, dp, cols, kBlock, ldkv, 1, dqBlock, ldq)
		Sgemm(true, false, cols, hs, rows, t.scale, dp, cols, qBlock, ldq, 1, dkBlock, ldkv)
	}
}

// checkSegmentStarts panics unless every segment start s of token t in a row
// satisfies 0 ≤ s ≤ t and the starts never decrease along the row.
func checkSegmentStarts(op string, seg []int32, seqLen int) {
	for n, s := range seg {
		t := n % seqLen
		if s < 0 || int(s) > t || (t > 0 && s < seg[n-1]) {
			panic(fmt.Errorf("kernels: %s: invalid segment start %d for token %d of row %d: starts must satisfy 0 ≤ start ≤ token and never decrease along a row (see kernels.SegmentStarts)",
				op, s, t, n/seqLen))
		}
	}
}
