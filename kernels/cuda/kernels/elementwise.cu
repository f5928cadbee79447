// Elementwise kernels: conversions, fills, Add, Scale, SwiGLU, AdamW, the sum
// of squares and the embedding lookup. The elementwise kernels use
// grid-stride loops, so any grid size covers any n.

#define GRID_STRIDE(i, n) \
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

extern "C" __global__ void convert_f32_to_bf16(bf16_t* dst, const float* src, i64 n) {
  GRID_STRIDE(i, n) { dst[i] = bf16_from_float(src[i]); }
}

extern "C" __global__ void convert_bf16_to_f32(float* dst, const bf16_t* src, i64 n) {
  GRID_STRIDE(i, n) { dst[i] = float_from_bf16(src[i]); }
}

extern "C" __global__ void fill_u16(bf16_t* dst, bf16_t value, i64 n) {
  GRID_STRIDE(i, n) { dst[i] = value; }
}

// add: out may be a or b, because each thread reads its element before it
// writes it.
extern "C" __global__ void add_f32(float* out, const float* a, const float* b, i64 n) {
  GRID_STRIDE(i, n) { out[i] = a[i] + b[i]; }
}

extern "C" __global__ void scale_f32(float* x, float alpha, i64 n) {
  GRID_STRIDE(i, n) { x[i] *= alpha; }
}

// swiglu_forward: out = silu(gate)·up, out may be gate or up.
extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, i64 n) {
  GRID_STRIDE(i, n) {
    float x = gate[i];
    out[i] = x / (1.0f + expf(-x)) * up[i];
  }
}

// swiglu_backward: dGate and dUp may be dOut (not both), because every input
// of element i is read before either output is written.
extern "C" __global__ void swiglu_backward(float* dGate, float* dUp, const float* dOut, const float* gate,
                                           const float* up, i64 n) {
  GRID_STRIDE(i, n) {
    float x = gate[i];
    float u = up[i];
    float g = dOut[i];
    float s = 1.0f / (1.0f + expf(-x));
    dUp[i] = g * x * s;
    dGate[i] = g * u * s * (1.0f + x * (1.0f - s));
  }
}

// adamw follows kernels/cpu's AdamW (torch.optim.AdamW's single-tensor path)
// operation by operation. The _rn intrinsics keep the compiler from fusing a
// multiply and an add, so each step rounds as the CPU's float32 code does.
// decay = 1 − lr·wd, weight1 = 1 − β1, weight2 = 1 − β2, stepSize = −lr/bc1 and
// bias2Sqrt = sqrt(bc2) are computed in float64 on the host and rounded to
// float32.
extern "C" __global__ void adamw(float* param, const float* grad, float* m, float* v, float decay, float weight1,
                                 float beta2, float weight2, float stepSize, float bias2Sqrt, float eps,
                                 int applyDecay, i64 n) {
  GRID_STRIDE(i, n) {
    float p = param[i];
    if (applyDecay) p = __fmul_rn(p, decay);
    float g = grad[i];
    float mi = m[i];
    // PyTorch's lerp(start, end, weight).
    float diff = __fsub_rn(g, mi);
    if (weight1 < 0.5f && weight1 > -0.5f) {
      mi = __fadd_rn(mi, __fmul_rn(weight1, diff));
    } else {
      mi = __fsub_rn(g, __fmul_rn(diff, __fsub_rn(1.0f, weight1)));
    }
    float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(weight2, g), g));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bias2Sqrt), eps);
    p = __fadd_rn(p, __fdiv_rn(__fmul_rn(stepSize, mi), denom));
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

// sum_squares writes one float64 partial sum per block to partials, which the
// host adds in block order, so the result does not depend on timing. Launch
// with 256 threads.
extern "C" __global__ void sum_squares(double* partials, const float* x, i64 n) {
  __shared__ double scratch[32];
  double s = 0;
  GRID_STRIDE(i, n) {
    double v = (double)x[i];
    s += v * v;
  }
  double total = block_sum_double(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// embedding_forward: one block per id. An id outside [0, V) sets ERR_ID_RANGE
// and leaves its output row unwritten.
extern "C" __global__ void embedding_forward_f32(float* out, const float* table, const int* ids, int n, int V,
                                                 int C, int* err) {
  int row = blockIdx.x;
  if (row >= n) return;
  int id = ids[row];
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) atomicOr(err, ERR_ID_RANGE);
    return;
  }
  const float* src = table + (i64)id * C;
  float* dst = out + (i64)row * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

extern "C" __global__ void embedding_forward_bf16(float* out, const bf16_t* table, const int* ids, int n, int V,
                                                  int C, int* err) {
  int row = blockIdx.x;
  if (row >= n) return;
  int id = ids[row];
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) atomicOr(err, ERR_ID_RANGE);
    return;
  }
  const bf16_t* src = table + (i64)id * C;
  float* dst = out + (i64)row * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = float_from_bf16(src[c]);
}

// embedding_backward scatter-adds dOut into dTable with float atomics, so
// repeated ids add in an order that varies from run to run.
extern "C" __global__ void embedding_backward(float* dTable, const float* dOut, const int* ids, int n, int V, int C,
                                              int* err) {
  int row = blockIdx.x;
  if (row >= n) return;
  int id = ids[row];
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) atomicOr(err, ERR_ID_RANGE);
    return;
  }
  const float* src = dOut + (i64)row * C;
  float* dst = dTable + (i64)id * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, src[c]);
}
