// RMSNorm over the last dimension, as kernels/cpu computes it: the sums of
// squares and products run in float64, and the elementwise results in
// float32. One block per row.

// rmsnorm_forward: out may be x, because a thread writes only the elements it
// read, and only after the row's sum (a block-wide barrier) is complete.
extern "C" __global__ void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int n,
                                           int C, float eps) {
  __shared__ double scratch[32];
  int row = blockIdx.x;
  if (row >= n) return;
  const float* xr = x + (i64)row * C;
  float* outr = out + (i64)row * C;
  double s = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    double v = (double)xr[c];
    s += v * v;
  }
  s = block_sum_double(s, scratch);
  float r = (float)(1.0 / sqrt(s / (double)C + (double)eps));
  if (rstd != 0 && threadIdx.x == 0) rstd[row] = r;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    outr[c] = __fmul_rn(weight[c], __fmul_rn(xr[c], r));
  }
}

// rmsnorm_backward_dx: dx_j = r·w_j·g_j − (r³/C)·x_j·Σ_i g_i·w_i·x_i. dx may be
// dOut: the dot product reads all of dOut before the barrier in
// block_sum_double, and each thread then overwrites only its own elements.
extern "C" __global__ void rmsnorm_backward_dx(float* dx, const float* dOut, const float* x, const float* weight,
                                               const float* rstd, int n, int C) {
  __shared__ double scratch[32];
  int row = blockIdx.x;
  if (row >= n) return;
  const float* xr = x + (i64)row * C;
  const float* gr = dOut + (i64)row * C;
  float* dxr = dx + (i64)row * C;
  double dot = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    dot += (double)gr[c] * (double)weight[c] * (double)xr[c];
  }
  dot = block_sum_double(dot, scratch);
  float r = rstd[row];
  double rd = (double)r;
  float k = (float)(rd * rd * rd * dot / (double)C);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float v = xr[c];
    dxr[c] = __fsub_rn(__fmul_rn(__fmul_rn(r, weight[c]), gr[c]), __fmul_rn(k, v));
  }
}

// rmsnorm_dweight_partial sums g·x·r over a slice of the rows for 32 columns.
// Block (32, 8): threadIdx.x picks the column, threadIdx.y strides the rows.
// Block (cx, s) of the grid covers columns [32cx, 32cx+32) and rows
// [s·rowsPerSlice, (s+1)·rowsPerSlice), and writes partials[s·C + column].
extern "C" __global__ void rmsnorm_dweight_partial(double* partials, const float* dOut, const float* x,
                                                   const float* rstd, int n, int C, int rowsPerSlice) {
  __shared__ double sums[8][33];
  int column = blockIdx.x * 32 + threadIdx.x;
  int slice = blockIdx.y;
  int r0 = slice * rowsPerSlice;
  int r1 = min(n, r0 + rowsPerSlice);
  double s = 0;
  if (column < C) {
    for (int row = r0 + threadIdx.y; row < r1; row += 8) {
      i64 at = (i64)row * C + column;
      s += (double)dOut[at] * (double)x[at] * (double)rstd[row];
    }
  }
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && column < C) {
    double total = 0;
    for (int y = 0; y < 8; y++) total += sums[y][threadIdx.x];
    partials[(i64)slice * C + column] = total;
  }
}

// rmsnorm_dweight_finish adds the slices' partial sums, in slice order, to
// dWeight.
extern "C" __global__ void rmsnorm_dweight_finish(float* dWeight, const double* partials, int slices, int C) {
  int column = blockIdx.x * blockDim.x + threadIdx.x;
  if (column >= C) return;
  double total = 0;
  for (int s = 0; s < slices; s++) total += partials[(i64)s * C + column];
  dWeight[column] += (float)total;
}
