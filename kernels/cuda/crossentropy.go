package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// LinearCrossEntropy computes the language-model head and the summed
// cross-entropy loss as kernels/cpu does: the rows that take loss are
// gathered in chunks of Options.CrossEntropyChunkRows, and for each chunk
//
//	logits  = H·Wᵀ                    (R, V), the only logits held (cuBLAS)
//	loss_r  = logsumexp(logits_r) − logits_r[target_r]   (ce_softmax_rows)
//	dLogits = gradScale·(softmax(logits) − onehot(target))   in place
//	dH      = dLogits·W               (R, C), scattered to the chunk's rows
//	dW     += dLogitsᵀ·H              (V, C)
//
// The targets are copied to the host first, to list the rows and to check
// them as kernels/cpu does. The per-row losses are float64 and are added on
// the host in row order. It returns NaN and count 0 after a failed device
// call, which Sync then returns.
func (b *Backend) LinearCrossEntropy(dHidden, dWeight, hidden, weight, targets kernels.Tensor, gradScale float32) (lossSum float64, count int) {
	d, err := kernels.CheckLinearCrossEntropy(dHidden, dWeight, hidden, weight, targets)
	if err != nil {
		panic(err)
	}
	targetList := make([]int32, d.N)
	if err := b.CopyToHostI32(targetList, targets); err != nil {
		b.fail(err)
		return math.NaN(), 0
	}
	rows := make([]int32, 0, d.N)
	for n, target := range targetList {
		if target == kernels.IgnoreIndex {
			continue
		}
		if target < 0 || int(target) >= d.V {
			panic(fmt.Errorf("kernels: LinearCrossEntropy: target %d of row %d is out of range for a vocabulary of %d. Use %d to ignore a row",
				target, n, d.V, kernels.IgnoreIndex))
		}
		rows = append(rows, int32(n))
	}
	count = len(rows)
	if !dHidden.IsAbsent() {
		b.Zero(dHidden)
	}
	if count == 0 {
		return 0, 0
	}
	if d.C == 0 {
		// Every logit is 0, so each row's loss is log V, and dHidden and
		// dWeight are empty.
		return float64(count) * math.Log(float64(d.V)), count
	}
	ce, ok := b.crossEntropyPlan(d, count, weight, !dHidden.IsAbsent(), !dWeight.IsAbsent())
	if !ok {
		return math.NaN(), 0
	}
	if err := b.upload(ce.rows, unsafe.Pointer(&rows[0]), 4*count); err != nil {
		b.fail(fmt.Errorf("kernels/cuda: LinearCrossEntropy: upload the row list: %w", err))
		return math.NaN(), 0
	}

	hiddenPtr, targetsPtr := b.ptr(hidden), b.ptr(targets)
	dHiddenPtr, dWeightPtr := b.ptr(dHidden), b.ptr(dWeight)
	var gradients int32
	if ce.dHidden != 0 || !dWeight.IsAbsent() {
		gradients = 1
	}
	c, v := int32(d.C), int32(d.V)
	for start := 0; start < count; start += ce.chunkRows {
		r := min(ce.chunkRows, count-start)
		rCount := int32(r)
		rowsPtr := ce.rows + cudalib.DevicePtr(4*start)
		lossesPtr := ce.losses + cudalib.DevicePtr(8*start)
		threads := [3]uint32{rowThreads(min(d.C, 256)), 1, 1}
		if ce.hiddenBF16 != 0 {
			b.launch(b.fn.ceGatherRowsBF16, [3]uint32{uint32(r), 1, 1}, threads, 0,
				unsafe.Pointer(&ce.hidden), unsafe.Pointer(&ce.hiddenBF16), unsafe.Pointer(&hiddenPtr),
				unsafe.Pointer(&rowsPtr), unsafe.Pointer(&rCount), unsafe.Pointer(&c))
		} else {
			b.launch(b.fn.ceGatherRowsF32, [3]uint32{uint32(r), 1, 1}, threads, 0,
				unsafe.Pointer(&ce.hidden), unsafe.Pointer(&hiddenPtr), unsafe.Pointer(&rowsPtr),
				unsafe.Pointer(&rCount), unsafe.Pointer(&c))
		}

		// logits (R, V) = H (R, C) · Wᵀ.
		if ce.hiddenBF16 != 0 {
			b.gemm(false, true, kernels.MatmulDims{M: r, N: d.V, K: d.C}, 1, ce.hiddenBF16, cudalib.R16BF, d.C,
				ce.weight, ce.weightType, d.C, 0, ce.logits, ce.compute)
		} else {
			b.gemm(false, true, kernels.MatmulDims{M: r, N: d.V, K: d.C}, 1, ce.hidden, cudalib.R32F, d.C,
				ce.weight, ce.weightType, d.C, 0, ce.logits, ce.compute)
		}
		b.launch(b.fn.ceSoftmaxRows, [3]uint32{uint32(r), 1, 1}, [3]uint32{rowThreads(min(d.V, 1024)), 1, 1}, 0,
			unsafe.Pointer(&ce.logits), unsafe.Pointer(&lossesPtr), unsafe.Pointer(&targetsPtr),
			unsafe.Pointer(&rowsPtr), unsafe.Pointer(&rCount), unsafe.Pointer(&v),
			unsafe.Pointer(&gradients), unsafe.Pointer(&gradScale))
		if gradients == 0 {
			continue
		}

		if ce.dHidden != 0 {
			// dH (R, C) = dLogits (R, V) · W (V, C).
			if ce.logitsBF16 != 0 {
				b.convert(b.fn.convertF32ToBF16, ce.logitsBF16, ce.logits, r*d.V)
				b.gemm(false, false, kernels.MatmulDims{M: r, N: d.C, K: d.V}, 1, ce.logitsBF16, cudalib.R16BF, d.V,
					ce.weight, ce.weightType, d.C, 0, ce.dHidden, ce.compute)
			} else {
				b.gemm(false, false, kernels.MatmulDims{M: r, N: d.C, K: d.V}, 1, ce.logits, cudalib.R32F, d.V,
					ce.weight, ce.weightType, d.C, 0, ce.dHidden, ce.compute)
			}
			b.launch(b.fn.ceScatterRows, [3]uint32{uint32(r), 1, 1}, threads, 0,
				unsafe.Pointer(&dHiddenPtr), unsafe.Pointer(&ce.dHidden), unsafe.Pointer(&rowsPtr),
				unsafe.Pointer(&rCount), unsafe.Pointer(&c))
		}
		if !dWeight.IsAbsent() {
			// dW (V, C) += dLogitsᵀ (V, R) · H (R, C), both fp32.
			b.gemm(true, false, kernels.MatmulDims{M: d.V, N: d.C, K: r}, 1, ce.logits, cudalib.R32F, d.V,
				ce.hidden, cudalib.R32F, d.C, 1, dWeightPtr, b.f32Compute())
		}
	}
	if b.err != nil {
		return math.NaN(), 0
	}

	losses := make([]float64, count)
	if err := b.ctx.MemcpyDtoH(unsafe.Pointer(&losses[0]), ce.losses, 8*count); err != nil {
		b.fail(fmt.Errorf("kernels/cuda: LinearCrossEntropy: read the losses: %w", err))
		return math.NaN(), 0
	}
	for _, loss := range losses {
		lossSum += loss
	}
	return lossSum, count
}

// crossEntropyScratch holds the device buffers and operand choices of one
// LinearCrossEntropy call.
type crossEntropyScratch struct {
	chunkRows  int
	rows       cudalib.DevicePtr // (count) int32 row indices
	losses     cudalib.DevicePtr // (count) float64
	hidden     cudalib.DevicePtr // (R, C) F32
	hiddenBF16 cudalib.DevicePtr // (R, C) BF16, or 0 unless the weight is multiplied in bf16
	logits     cudalib.DevicePtr // (R, V) F32
	logitsBF16 cudalib.DevicePtr // (R, V) BF16, or 0 unless dHidden is multiplied in bf16
	dHidden    cudalib.DevicePtr // (R, C) F32, or 0 without dHidden
	weight     cudalib.DevicePtr
	weightType cudalib.DataType
	compute    cudalib.ComputeType
}

// crossEntropyPlan allocates the scratch buffers of a call with count rows
// that take loss and picks the weight operand. It returns false after a
// failed allocation.
func (b *Backend) crossEntropyPlan(d kernels.CrossEntropyDims, count int, weight kernels.Tensor, wantDHidden, wantDWeight bool) (crossEntropyScratch, bool) {
	ce := crossEntropyScratch{
		chunkRows:  min(b.ceChunkRows, count),
		weight:     b.ptr(weight),
		weightType: cudalib.R32F,
		compute:    b.f32Compute(),
	}
	r := ce.chunkRows

	bf16Products := false
	if weight.DType() == kernels.BF16 {
		if b.strictFP32 {
			wide := b.scratchBytes(scratchOperand, 4*weight.Len())
			if wide == 0 {
				return ce, false
			}
			b.convert(b.fn.convertBF16ToF32, wide, ce.weight, weight.Len())
			ce.weight, ce.compute = wide, cudalib.Compute32F
		} else {
			ce.weightType, ce.compute = cudalib.R16BF, cudalib.Compute32F
			bf16Products = true
		}
	}

	ce.rows = b.scratchBytes(scratchCERows, 4*count)
	ce.losses = b.scratchBytes(scratchCELosses, 8*count)
	ce.hidden = b.scratchBytes(scratchCEHidden, 4*r*d.C)
	ce.logits = b.scratchBytes(scratchCELogits, 4*r*d.V)
	ok := ce.rows != 0 && ce.losses != 0 && ce.hidden != 0 && ce.logits != 0
	if bf16Products {
		ce.hiddenBF16 = b.scratchBytes(scratchCEHiddenBF16, 2*r*d.C)
		ok = ok && ce.hiddenBF16 != 0
		if wantDHidden {
			ce.logitsBF16 = b.scratchBytes(scratchCELogitsBF16, 2*r*d.V)
			ok = ok && ce.logitsBF16 != 0
		}
	}
	if wantDHidden {
		ce.dHidden = b.scratchBytes(scratchCEDHidden, 4*r*d.C)
		ok = ok && ce.dHidden != 0
	}
	return ce, ok
}
