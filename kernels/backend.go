// Package kernels defines Backend, the compute interface of the trainer, and
// the tensors it works on. Package kernels/cpu implements it with Go slices.
// The op signatures take no host slices, so that a CUDA backend can implement
// the same methods on device memory.
//
// # Tensors
//
// A Backend owns its memory. Alloc returns a Buffer, and a Tensor is a
// row-major, contiguous view into a buffer: element offset plus up to four
// dimensions. Ops take tensors, never Go slices, so the same model code runs
// on every backend. Portable code moves data between the host and a backend
// with the CopyFromHost and CopyToHost methods. The CPU backend also exposes
// its slices without copying (cpu.Float32s).
//
// # Dimension letters
//
// Shape comments use these letters:
//
//	B    batch size (rows of a micro-batch)
//	T    sequence length (tokens per row)
//	N    tokens, usually B·T
//	C    hidden size (channels)
//	I    intermediate size of the MLP
//	V    vocabulary size
//	L    number of layers
//	NH   number of query heads
//	NKV  number of key/value heads (grouped-query attention, NH % NKV == 0)
//	HS   head size (head_dim)
//
// Where an op takes a "matrix", a tensor of any rank is read as a matrix whose
// columns are its last dimension and whose rows are the product of the other
// dimensions, so (B, T, C) is (B·T, C).
//
// # Gradient policy
//
// Backward ops overwrite the gradients of their activation inputs (dx, dq,
// dGate, dHidden, ...) and accumulate (+=) into the gradients of parameters
// (dWeight, dTable), so a parameter gradient collects every use of a tied
// weight and every micro-step of gradient accumulation until the caller zeroes
// it. The residual stream's gradient is summed by the caller with Add. An
// absent (zero) Tensor in place of a parameter gradient skips that gradient,
// which is how frozen weights train no gradient.
//
// # Errors
//
// An op panics when its arguments break the op's documented contract (shape,
// dtype or value range), because that is a bug in the caller. The panic value
// is an error that names the op and the shapes. The Check functions in this
// package state the contracts and return the same errors. Failures of the
// device itself are returned by Alloc, the copies and Sync.
//
// NOTE: the CPU backend also checks element values (ids, targets, positions,
// segment starts) and panics on one out of range. A device backend cannot do
// that cheaply, so callers should validate them on the host once per batch.
package kernels

// Backend runs the training kernels on one device. Calls are ordered like a
// CUDA stream, so each op reads the results of the calls before it. A Backend
// is not safe for concurrent use.
type Backend interface {
	// Name returns a short name for logs, such as "cpu".
	Name() string
	// Close releases the backend's resources. Its buffers become invalid.
	Close() error

	// Alloc returns a buffer of n elements of dtype, filled with zeros.
	Alloc(dtype DType, n int) (Buffer, error)
	// Free releases buf. Tensors that view it become invalid.
	Free(buf Buffer)

	// CopyFromHostF32 copies src into dst, an F32 tensor of len(src) elements.
	// The copy is complete when the method returns, so src can be reused.
	CopyFromHostF32(dst Tensor, src []float32) error
	// CopyFromHostBF16 copies bfloat16 bits into a BF16 tensor.
	CopyFromHostBF16(dst Tensor, src []uint16) error
	// CopyFromHostI32 copies src into an I32 tensor.
	CopyFromHostI32(dst Tensor, src []int32) error
	// CopyToHostF32 waits for the ops before it, then copies the F32 tensor
	// src into dst, which has src.Len() elements.
	CopyToHostF32(dst []float32, src Tensor) error
	// CopyToHostBF16 copies a BF16 tensor to the host as bfloat16 bits.
	CopyToHostBF16(dst []uint16, src Tensor) error
	// CopyToHostI32 copies an I32 tensor to the host.
	CopyToHostI32(dst []int32, src Tensor) error
	// Sync waits for every op issued so far and returns the first device error
	// since the last Sync.
	Sync() error

	// Copy copies src into dst, which has as many elements. Equal dtypes copy
	// exactly. F32 to BF16 rounds to nearest even, and BF16 to F32 is exact.
	Copy(dst, src Tensor)
	// Zero sets every element of t to zero.
	Zero(t Tensor)

	// Matmul computes c = alpha·op(a)·op(b) + beta·c, where op(x) is x or its
	// transpose. Each operand is read as a matrix (see the package
	// documentation): op(a) is (M, K), op(b) is (K, N) and c is (M, N). With
	// beta 0, c is not read, and beta 1 accumulates, as in dW += dyᵀ·x. c and a
	// are F32, and b is F32 or BF16, so a frozen bfloat16 weight multiplies
	// without an fp32 copy. c must not overlap a or b.
	Matmul(c, a, b Tensor, transA, transB bool, alpha, beta float32)

	// EmbeddingForward gathers rows of table: out[n] = table[ids[n]].
	// out: (N, C) F32; table: (V, C) F32 or BF16; ids: (N) I32 in [0, V).
	EmbeddingForward(out, table, ids Tensor)
	// EmbeddingBackward scatter-adds dOut into the table gradient:
	// dTable[ids[n]] += dOut[n].
	// dTable: (V, C) F32; dOut: (N, C) F32; ids: (N) I32.
	EmbeddingBackward(dTable, dOut, ids Tensor)

	// RMSNormForward computes out = x / sqrt(mean(x²) + eps) · weight over
	// the last dimension, in fp32, as Hugging Face's Qwen3RMSNorm does. Over
	// (B, T, NH, HS) with a weight of HS it is Qwen3's per-head q_norm and
	// k_norm.
	// out: (N, C) F32, may be x; rstd: (N) F32, 1/sqrt(mean(x²) + eps) for
	// backward, or absent; x: (N, C) F32; weight: (C) F32.
	RMSNormForward(out, rstd, x, weight Tensor, eps float32)
	// RMSNormBackward computes dx (overwritten) and dWeight (accumulated,
	// absent to skip) from dOut and the rstd saved by the forward pass.
	// dx: (N, C) F32, may be dOut; dWeight: (C) F32 or absent; dOut, x: (N, C)
	// F32; weight: (C) F32; rstd: (N) F32.
	RMSNormBackward(dx, dWeight, dOut, x, weight, rstd Tensor)

	// RoPEForward rotates q or k by the rotary position embedding of
	// Hugging Face's Llama and Qwen3 code (rotate-half convention): for
	// i < HS/2, with f = positions[b, t] · theta^(-2i/HS),
	//	out[i]      = x[i]·cos f − x[i+HS/2]·sin f
	//	out[i+HS/2] = x[i+HS/2]·cos f + x[i]·sin f
	// out, x: (B, T, NH, HS) F32, out may be x; positions: (B, T) I32, ≥ 0.
	RoPEForward(out, x, positions Tensor, theta float64)
	// RoPEBackward rotates dOut back by −f, the transpose of the forward map.
	// dx, dOut: (B, T, NH, HS) F32, dx may be dOut; positions: (B, T) I32.
	RoPEBackward(dx, dOut, positions Tensor, theta float64)

	// AttentionForward computes causal grouped-query attention with scale
	// 1/sqrt(HS): query head h reads key/value head h / (NH/NKV). Query t of
	// row b attends to the keys j with segmentStarts[b, t] ≤ j ≤ t, so
	// examples packed into one row do not see each other (see SegmentStarts).
	// out: (B, T, NH, HS) F32; lse: (B, NH, T) F32, the natural-log
	// sum of exp of each query's scaled scores, for backward, or absent;
	// q: (B, T, NH, HS) F32; k, v: (B, T, NKV, HS) F32; segmentStarts: (B, T)
	// I32.
	AttentionForward(out, lse, q, k, v, segmentStarts Tensor)
	// AttentionBackward computes dq, dk and dv (all overwritten) from dOut,
	// the forward inputs and the forward's out and lse.
	// dq: (B, T, NH, HS) F32; dk, dv: (B, T, NKV, HS) F32; the rest as in
	// AttentionForward.
	AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse, segmentStarts Tensor)
	// AttentionDecode computes causal grouped-query attention of Tq new
	// queries over a key/value cache, for inference. The queries are at
	// positions length−Tq … length−1, and query i attends to the cached keys
	// 0 … length−Tq+i with scale 1/sqrt(HS) and a max-subtracted softmax.
	// Query head h reads key/value head h / (NH/NKV). Tq = 1 is one decoding
	// step, and Tq > 1 a prompt or a chunk of it whose keys and values are
	// already written to the cache.
	// out, q: (B, Tq, NH, HS) F32; kCache, vCache: (B, S, NKV, HS) F32, of
	// which positions [0, length) are read; 1 ≤ Tq ≤ length ≤ S.
	AttentionDecode(out, q, kCache, vCache Tensor, length int)

	// SwiGLUForward computes the gated activation of Qwen3's MLP,
	// out = silu(gate)·up with silu(x) = x·sigmoid(x).
	// out, gate, up: (N, I) F32; out may be gate or up.
	SwiGLUForward(out, gate, up Tensor)
	// SwiGLUBackward computes dGate and dUp (overwritten) from dOut.
	// dGate, dUp, dOut, gate, up: (N, I) F32; dGate may be dOut, and dUp may
	// be dOut when dGate is not.
	SwiGLUBackward(dGate, dUp, dOut, gate, up Tensor)

	// Add computes out = a + b elementwise, as the residual stream does. out
	// may be a or b. All three are F32 with equal element counts.
	Add(out, a, b Tensor)
	// Scale multiplies every element of the F32 tensor x by alpha.
	Scale(x Tensor, alpha float32)
	// SumSquares returns the sum of the squares of the elements of the F32
	// tensors xs, accumulated in float64. It waits for the ops before it.
	SumSquares(xs []Tensor) float64

	// LinearCrossEntropy computes the language-model head and the
	// cross-entropy loss without storing the (N, V) logits:
	// logits = hidden · weightᵀ, and for each row with a target other than
	// IgnoreIndex, loss = logsumexp(logits) − logits[target]. It returns the
	// sum of the losses and the number of rows that take loss, waiting for the
	// ops before it. dHidden (overwritten) and dWeight (accumulated) receive
	// gradScale times the gradient of the summed loss. Pass 1/(target tokens
	// of the global batch) to get the gradient of the mean. Rows with
	// IgnoreIndex get a zero dHidden. Either gradient may be absent, and with
	// both absent it only evaluates the loss.
	// dHidden: (N, C) F32 or absent; dWeight: (V, C) F32 or absent; hidden:
	// (N, C) F32; weight: (V, C) F32 or BF16; targets: (N) I32 in [0, V) or
	// IgnoreIndex.
	LinearCrossEntropy(dHidden, dWeight, hidden, weight, targets Tensor, gradScale float32) (lossSum float64, count int)

	// AdamW updates param in place with one step of torch.optim.AdamW and
	// updates the moment estimates m and v. param, grad, m, v: F32 of equal
	// element counts.
	AdamW(param, grad, m, v Tensor, step AdamWStep)
}

// IgnoreIndex is the target that takes no loss, as in PyTorch's
// cross_entropy(ignore_index=-100) and Hugging Face's label masking.
const IgnoreIndex = -100

// AdamWStep holds the hyperparameters of one AdamW update of one tensor.
type AdamWStep struct {
	LR    float64 // learning rate of this step
	Beta1 float64 // decay rate of the first moment, such as 0.9
	Beta2 float64 // decay rate of the second moment, such as 0.999
	Eps   float64 // added to sqrt(v̂) in the denominator, such as 1e-8
	// WeightDecay is the decoupled weight decay: the update first multiplies
	// the parameter by 1 − LR·WeightDecay. Set it to 0 for tensors that take
	// no decay, such as norms and biases.
	WeightDecay float64
	// Step counts the updates of this tensor, this one included, starting at
	// 1. The bias corrections are 1 − Beta1^Step and 1 − Beta2^Step.
	Step int
}
