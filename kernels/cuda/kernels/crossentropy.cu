// The row kernels of LinearCrossEntropy. The host gathers the rows that take
// loss into chunks, and per chunk cuBLAS computes the logits between
// ce_gather_rows and ce_softmax_rows and the gradients after it.

// ce_gather_rows_f32 copies hidden[rows[r]] to dst[r]. dst: (R, C).
extern "C" __global__ void ce_gather_rows_f32(float* dst, const float* hidden, const int* rows, int R, int C) {
  int r = blockIdx.x;
  if (r >= R) return;
  const float* src = hidden + (i64)rows[r] * C;
  float* out = dst + (i64)r * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) out[c] = src[c];
}

// ce_gather_rows_bf16 also writes the rows rounded to bfloat16, for the
// product with a BF16 weight.
extern "C" __global__ void ce_gather_rows_bf16(float* dst, bf16_t* dstBF16, const float* hidden, const int* rows,
                                               int R, int C) {
  int r = blockIdx.x;
  if (r >= R) return;
  const float* src = hidden + (i64)rows[r] * C;
  float* out = dst + (i64)r * C;
  bf16_t* outBF16 = dstBF16 + (i64)r * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float value = src[c];
    out[c] = value;
    outBF16[c] = bf16_from_float(value);
  }
}

// ce_scatter_rows copies src[r] to dHidden[rows[r]]. src: (R, C).
extern "C" __global__ void ce_scatter_rows(float* dHidden, const float* src, const int* rows, int R, int C) {
  int r = blockIdx.x;
  if (r >= R) return;
  const float* in = src + (i64)r * C;
  float* out = dHidden + (i64)rows[r] * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) out[c] = in[c];
}

// nan_max is max that returns NaN when either input is NaN, so that a NaN
// logit makes the loss NaN, as in kernels/cpu.
__device__ __forceinline__ float nan_max(float a, float b) {
  if (a != a) return a;
  if (b != b) return b;
  return fmaxf(a, b);
}

// ce_softmax_rows: one block per row of logits (R, V). It writes
// losses[r] = logsumexp(x) − x[target] in float64 and, when gradients is
// set, replaces x by gradScale·(softmax(x) − onehot(target)). The exponentials
// are shifted by the row max and summed in float64, as in kernels/cpu.
// targets are those of the chunk's rows, already checked on the host.
extern "C" __global__ void ce_softmax_rows(float* logits, double* losses, const int* targets, const int* rows, int R,
                                           int V, int gradients, float gradScale) {
  __shared__ float maxScratch[32];
  __shared__ double sumScratch[32];
  int r = blockIdx.x;
  if (r >= R) return;
  float* x = logits + (i64)r * V;
  int target = targets[rows[r]];
  float targetLogit = x[target];
  int lane = threadIdx.x & 31;
  int warp = threadIdx.x >> 5;
  int warps = (blockDim.x + 31) >> 5;

  float m = x[0];
  for (int i = threadIdx.x; i < V; i += blockDim.x) m = nan_max(m, x[i]);
  for (int offset = 16; offset > 0; offset >>= 1) m = nan_max(m, __shfl_xor_sync(0xffffffffu, m, offset));
  if (lane == 0) maxScratch[warp] = m;
  __syncthreads();
  m = maxScratch[0];
  for (int w = 1; w < warps; w++) m = nan_max(m, maxScratch[w]);

  double s = 0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) s += (double)expf(x[i] - m);
  s = block_sum_double(s, sumScratch);
  if (threadIdx.x == 0) losses[r] = (double)m + log(s) - (double)targetLogit;
  if (!gradients) return;

  float k = (float)((double)gradScale / s);
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    float p = __fmul_rn(expf(x[i] - m), k);
    x[i] = i == target ? __fsub_rn(p, gradScale) : p;
  }
}
