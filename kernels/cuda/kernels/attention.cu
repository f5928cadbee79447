// Causal grouped-query attention with flash-attention tiling: a block holds
// a tile of queries (or keys) in shared memory and streams the other side
// through it in tiles, so no (T, T) score matrix is ever stored. Everything
// is fp32 on CUDA cores, as in kernels/cpu.
//
// Layouts: q, out, dq and dOut are (B, Tq, NH, HS). k, v, dk and dv are
// (B, Tkv, NKV, HS). lse and the row dots are (B, NH, Tq), and segStarts is
// (B, Tq). Query head h reads key/value head h / (NH/NKV). Query t is at
// position qPos0 + t and attends to the keys j with
// segStarts[b, t] ≤ j ≤ qPos0 + t (with segStarts absent, 0 ≤ j).
//
// Tiles are 32 queries by 32 keys. A block has 4 warps, and each warp owns 8
// rows of its block's tile. Each kernel comes in three builds for head sizes
// up to 64, 128 and 256 (HSC = 2, 4, 8 values per lane), and HS may be any
// even size up to the build's maximum.

#define TILE 32
#define ROWS_PER_WARP 8
#define ATTN_THREADS 128
#define NEG_INF (-__int_as_float(0x7f800000))

// The dot products over HS read shared memory four floats at a time. Rows
// of a tile are padded with zeros to HSP = HS rounded up to a multiple of 4,
// which keeps every row 16-byte aligned and adds nothing to a dot product.
// A tile whose rows are read by different lanes at once has a stride of
// HSP + 4 floats. When HSP is a multiple of 8, as for head sizes 64 and 128,
// that puts the 8 lanes of each 128-bit access phase on distinct banks.
__device__ __forceinline__ int padded_head_size(int HS) { return (HS + 3) & ~3; }

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

// query_range returns the visible keys [lo, hi] of query t, or lo > hi for a
// query past the end of the tile. A segment start outside [0, position] sets
// ERR_SEGMENT and is clamped, so no read goes out of bounds.
__device__ __forceinline__ void query_range(const int* segStarts, int b, int Tq, int t, int rows_end, int qPos0,
                                            int* err, int* lo, int* hi) {
  if (t >= rows_end) {
    *lo = 1;
    *hi = 0;
    return;
  }
  int pos = qPos0 + t;
  int start = 0;
  if (segStarts != 0) {
    start = segStarts[(i64)b * Tq + t];
    if (start < 0 || start > pos) {
      atomicOr(err, ERR_SEGMENT);
      start = start < 0 ? 0 : pos;
    }
  }
  *lo = start;
  *hi = pos;
}

// first_key returns the first key any query of the tile starting at t0 can
// see: segment starts never decrease along a row, so it is that of t0.
__device__ __forceinline__ int first_key(const int* segStarts, int b, int Tq, int t0, int qPos0) {
  if (segStarts == 0) return 0;
  int start = segStarts[(i64)b * Tq + t0];
  int pos = qPos0 + t0;
  return start < 0 ? 0 : (start > pos ? pos : start);
}

// attention_forward: grid (ceil(Tq/32), NH, B). Dynamic shared memory:
// Q (32, HSP), K (32, HSP+4), V (32, HS) floats. Launch with ATTN_THREADS.
template <int HSC>
__device__ void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                  const int* segStarts, int Tq, int Tkv, int NH, int NKV, int HS, int qPos0,
                                  float scale, int* err) {
  extern __shared__ float smem[];
  const int HSP = padded_head_size(HS);
  float* Qs = smem;
  float* Ks = Qs + TILE * HSP;
  float* Vs = Ks + TILE * (HSP + 4);

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int g = h / (NH / NKV);
  const int t0 = blockIdx.x * TILE;
  const int rows = min(TILE, Tq - t0);
  const i64 ldq = (i64)NH * HS;
  const i64 ldkv = (i64)NKV * HS;
  const float* qBase = q + ((i64)b * Tq + t0) * ldq + (i64)h * HS;
  const float* kBase = k + (i64)b * Tkv * ldkv + (i64)g * HS;
  const float* vBase = v + (i64)b * Tkv * ldkv + (i64)g * HS;

  for (int e = threadIdx.x; e < TILE * HSP; e += ATTN_THREADS) {
    int r = e / HSP;
    int d = e - r * HSP;
    Qs[e] = r < rows && d < HS ? qBase[r * ldq + d] : 0.0f;
  }

  float o[ROWS_PER_WARP][HSC];
  float m[ROWS_PER_WARP], l[ROWS_PER_WARP];
  int lo[ROWS_PER_WARP], hi[ROWS_PER_WARP];
#pragma unroll
  for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
    int r = warp * ROWS_PER_WARP + rr;
    query_range(segStarts, b, Tq, t0 + r, Tq, qPos0, err, &lo[rr], &hi[rr]);
    m[rr] = NEG_INF;
    l[rr] = 0.0f;
#pragma unroll
    for (int c = 0; c < HSC; c++) o[rr][c] = 0.0f;
  }

  const int jStart = first_key(segStarts, b, Tq, t0, qPos0);
  const int jEnd = qPos0 + t0 + rows;  // one past the last query's position
  for (int j0 = jStart; j0 < jEnd; j0 += TILE) {
    __syncthreads();  // the previous tile's reads of Ks and Vs are done
    for (int e = threadIdx.x; e < TILE * HSP; e += ATTN_THREADS) {
      int jj = e / HSP;
      int d = e - jj * HSP;
      bool valid = j0 + jj < jEnd && d < HS;
      Ks[jj * (HSP + 4) + d] = valid ? kBase[(i64)(j0 + jj) * ldkv + d] : 0.0f;
    }
    for (int e = threadIdx.x; e < TILE * HS; e += ATTN_THREADS) {
      int jj = e / HS;
      int d = e - jj * HS;
      Vs[e] = j0 + jj < jEnd ? vBase[(i64)(j0 + jj) * ldkv + d] : 0.0f;
    }
    __syncthreads();

    // Lane jj scores key j0 + jj against the warp's rows.
    float s[ROWS_PER_WARP];
#pragma unroll
    for (int rr = 0; rr < ROWS_PER_WARP; rr++) s[rr] = 0.0f;
    const float* kRow = Ks + lane * (HSP + 4);
    const float* qRows = Qs + warp * ROWS_PER_WARP * HSP;
    for (int d = 0; d < HSP; d += 4) {
      float4 kd = load4(kRow + d);
#pragma unroll
      for (int rr = 0; rr < ROWS_PER_WARP; rr++) s[rr] = dot4(load4(qRows + rr * HSP + d), kd, s[rr]);
    }

    const int j = j0 + lane;
#pragma unroll
    for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
      bool visible = j >= lo[rr] && j <= hi[rr];
      float score = visible ? s[rr] * scale : NEG_INF;
      float newMax = fmaxf(m[rr], warp_max(score));
      float p = 0.0f;
      float correction = 1.0f;
      if (newMax != NEG_INF) {
        p = visible ? expf(score - newMax) : 0.0f;
        correction = expf(m[rr] - newMax);  // 0 while m is still −∞
      }
      l[rr] = l[rr] * correction + warp_sum(p);
      m[rr] = newMax;
#pragma unroll
      for (int c = 0; c < HSC; c++) o[rr][c] *= correction;
      s[rr] = p;
    }

    // o[r][d] += Σ_jj p[r][jj]·V[jj][d], with lane + 32c as d.
#pragma unroll 4
    for (int jj = 0; jj < TILE; jj++) {
      float vv[HSC];
#pragma unroll
      for (int c = 0; c < HSC; c++) {
        int d = lane + 32 * c;
        vv[c] = d < HS ? Vs[jj * HS + d] : 0.0f;
      }
#pragma unroll
      for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
        float pj = __shfl_sync(0xffffffffu, s[rr], jj);
#pragma unroll
        for (int c = 0; c < HSC; c++) o[rr][c] += pj * vv[c];
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
    int r = warp * ROWS_PER_WARP + rr;
    if (r >= rows) continue;
    float inv = 1.0f / l[rr];
    float* oRow = out + ((i64)b * Tq + t0 + r) * ldq + (i64)h * HS;
#pragma unroll
    for (int c = 0; c < HSC; c++) {
      int d = lane + 32 * c;
      if (d < HS) oRow[d] = o[rr][c] * inv;
    }
    if (lse != 0 && lane == 0) lse[((i64)b * NH + h) * Tq + t0 + r] = m[rr] + logf(l[rr]);
  }
}

// attention_row_dot: D[b, h, t] = Σ_d out[b, t, h, d]·dOut[b, t, h, d], the
// rowsum(dO ∘ O) of flash attention's backward pass. One warp per (b, t, h).
extern "C" __global__ void attention_row_dot(float* D, const float* out, const float* dOut, int B, int T, int NH,
                                             int HS) {
  i64 rowsTotal = (i64)B * T * NH;
  i64 warpsTotal = (i64)gridDim.x * (blockDim.x >> 5);
  int lane = threadIdx.x & 31;
  for (i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rowsTotal; row += warpsTotal) {
    const float* o = out + row * HS;
    const float* g = dOut + row * HS;
    float dot = 0.0f;
    for (int d = lane; d < HS; d += 32) dot += o[d] * g[d];
    dot = warp_sum(dot);
    if (lane == 0) {
      int h = (int)(row % NH);
      i64 bt = row / NH;
      int t = (int)(bt % T);
      int b = (int)(bt / T);
      D[((i64)b * NH + h) * T + t] = dot;
    }
  }
}

// attention_backward_dq: dq = scale·Σ_j dS[t, j]·K[j] with
// dS = P ∘ (dP − D), P = exp(scale·Q·Kᵀ − lse) and dP = dO·Vᵀ. Grid
// (ceil(T/32), NH, B). Dynamic shared memory: Q, dO (32, HSP), K, V
// (32, HSP+4).
template <int HSC>
__device__ void attention_backward_dq(float* dq, const float* dOut, const float* q, const float* k, const float* v,
                                      const float* lse, const float* D, const int* segStarts, int T, int NH, int NKV,
                                      int HS, float scale, int* err) {
  extern __shared__ float smem[];
  const int HSP = padded_head_size(HS);
  float* Qs = smem;
  float* dOs = Qs + TILE * HSP;
  float* Ks = dOs + TILE * HSP;
  float* Vs = Ks + TILE * (HSP + 4);

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int g = h / (NH / NKV);
  const int t0 = blockIdx.x * TILE;
  const int rows = min(TILE, T - t0);
  const i64 ldq = (i64)NH * HS;
  const i64 ldkv = (i64)NKV * HS;
  const i64 qOffset = ((i64)b * T + t0) * ldq + (i64)h * HS;
  const float* kBase = k + (i64)b * T * ldkv + (i64)g * HS;
  const float* vBase = v + (i64)b * T * ldkv + (i64)g * HS;

  for (int e = threadIdx.x; e < TILE * HSP; e += ATTN_THREADS) {
    int r = e / HSP;
    int d = e - r * HSP;
    bool valid = r < rows && d < HS;
    Qs[e] = valid ? q[qOffset + r * ldq + d] : 0.0f;
    dOs[e] = valid ? dOut[qOffset + r * ldq + d] : 0.0f;
  }

  float acc[ROWS_PER_WARP][HSC];
  float rowLSE[ROWS_PER_WARP], rowD[ROWS_PER_WARP];
  int lo[ROWS_PER_WARP], hi[ROWS_PER_WARP];
#pragma unroll
  for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
    int r = warp * ROWS_PER_WARP + rr;
    query_range(segStarts, b, T, t0 + r, T, 0, err, &lo[rr], &hi[rr]);
    i64 at = ((i64)b * NH + h) * T + t0 + r;
    rowLSE[rr] = r < rows ? lse[at] : 0.0f;
    rowD[rr] = r < rows ? D[at] : 0.0f;
#pragma unroll
    for (int c = 0; c < HSC; c++) acc[rr][c] = 0.0f;
  }

  const int jStart = first_key(segStarts, b, T, t0, 0);
  const int jEnd = t0 + rows;
  for (int j0 = jStart; j0 < jEnd; j0 += TILE) {
    __syncthreads();
    for (int e = threadIdx.x; e < TILE * HSP; e += ATTN_THREADS) {
      int jj = e / HSP;
      int d = e - jj * HSP;
      bool valid = j0 + jj < jEnd && d < HS;
      Ks[jj * (HSP + 4) + d] = valid ? kBase[(i64)(j0 + jj) * ldkv + d] : 0.0f;
      Vs[jj * (HSP + 4) + d] = valid ? vBase[(i64)(j0 + jj) * ldkv + d] : 0.0f;
    }
    __syncthreads();

    float s[ROWS_PER_WARP], dp[ROWS_PER_WARP];
#pragma unroll
    for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
      s[rr] = 0.0f;
      dp[rr] = 0.0f;
    }
    const float* kRow = Ks + lane * (HSP + 4);
    const float* vRow = Vs + lane * (HSP + 4);
    const float* qRows = Qs + warp * ROWS_PER_WARP * HSP;
    const float* gRows = dOs + warp * ROWS_PER_WARP * HSP;
    for (int d = 0; d < HSP; d += 4) {
      float4 kd = load4(kRow + d);
      float4 vd = load4(vRow + d);
#pragma unroll
      for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
        s[rr] = dot4(load4(qRows + rr * HSP + d), kd, s[rr]);
        dp[rr] = dot4(load4(gRows + rr * HSP + d), vd, dp[rr]);
      }
    }
    const int j = j0 + lane;
#pragma unroll
    for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
      bool visible = j >= lo[rr] && j <= hi[rr];
      float p = visible ? expf(s[rr] * scale - rowLSE[rr]) : 0.0f;
      s[rr] = p * (dp[rr] - rowD[rr]);  // dS
    }
#pragma unroll 4
    for (int jj = 0; jj < TILE; jj++) {
      float kv[HSC];
#pragma unroll
      for (int c = 0; c < HSC; c++) {
        int d = lane + 32 * c;
        kv[c] = d < HS ? Ks[jj * (HSP + 4) + d] : 0.0f;
      }
#pragma unroll
      for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
        float ds = __shfl_sync(0xffffffffu, s[rr], jj);
#pragma unroll
        for (int c = 0; c < HSC; c++) acc[rr][c] += ds * kv[c];
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
    int r = warp * ROWS_PER_WARP + rr;
    if (r >= rows) continue;
    float* row = dq + qOffset + r * ldq;
#pragma unroll
    for (int c = 0; c < HSC; c++) {
      int d = lane + 32 * c;
      if (d < HS) row[d] = acc[rr][c] * scale;
    }
  }
}

// attention_backward_dkdv: for the 32 keys of a block and every query head
// of their key/value head, dv = Σ_t P[t, j]·dO[t] and
// dk = scale·Σ_t dS[t, j]·Q[t]. Grid (ceil(T/32), NKV, B). Dynamic shared
// memory: K, V (32, HSP), Q, dO (32, HSP+4), then lse, D (32 floats) and the
// visible ranges (2·32 ints).
template <int HSC>
__device__ void attention_backward_dkdv(float* dk, float* dv, const float* dOut, const float* q, const float* k,
                                        const float* v, const float* lse, const float* D, const int* segStarts, int T,
                                        int NH, int NKV, int HS, float scale, int* err) {
  extern __shared__ float smem[];
  const int HSP = padded_head_size(HS);
  float* Ks = smem;
  float* Vs = Ks + TILE * HSP;
  float* Qs = Vs + TILE * HSP;
  float* dOs = Qs + TILE * (HSP + 4);
  float* lseS = dOs + TILE * (HSP + 4);
  float* DS = lseS + TILE;
  int* loS = (int*)(DS + TILE);
  int* hiS = loS + TILE;

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = blockIdx.y;
  const int b = blockIdx.z;
  const int group = NH / NKV;
  const int j0 = blockIdx.x * TILE;
  const int keys = min(TILE, T - j0);
  const int jLast = j0 + keys - 1;
  const i64 ldq = (i64)NH * HS;
  const i64 ldkv = (i64)NKV * HS;
  const i64 kvOffset = ((i64)b * T + j0) * ldkv + (i64)g * HS;

  for (int e = threadIdx.x; e < TILE * HSP; e += ATTN_THREADS) {
    int jj = e / HSP;
    int d = e - jj * HSP;
    bool valid = jj < keys && d < HS;
    Ks[e] = valid ? k[kvOffset + jj * ldkv + d] : 0.0f;
    Vs[e] = valid ? v[kvOffset + jj * ldkv + d] : 0.0f;
  }

  float accK[ROWS_PER_WARP][HSC], accV[ROWS_PER_WARP][HSC];
#pragma unroll
  for (int kk = 0; kk < ROWS_PER_WARP; kk++) {
#pragma unroll
    for (int c = 0; c < HSC; c++) {
      accK[kk][c] = 0.0f;
      accV[kk][c] = 0.0f;
    }
  }
  const float* kRows = Ks + warp * ROWS_PER_WARP * HSP;
  const float* vRows = Vs + warp * ROWS_PER_WARP * HSP;

  for (int h = g * group; h < (g + 1) * group; h++) {
    const i64 qHead = (i64)b * T * ldq + (i64)h * HS;
    // Queries before j0 see none of the keys (causal), and once a query's
    // segment starts after jLast, so do those of every later query.
    for (int t0 = (j0 / TILE) * TILE; t0 < T; t0 += TILE) {
      if (first_key(segStarts, b, T, t0, 0) > jLast) break;
      const int rows = min(TILE, T - t0);
      __syncthreads();  // the previous tile's reads are done
      for (int e = threadIdx.x; e < TILE * HSP; e += ATTN_THREADS) {
        int r = e / HSP;
        int d = e - r * HSP;
        bool valid = r < rows && d < HS;
        Qs[r * (HSP + 4) + d] = valid ? q[qHead + (i64)(t0 + r) * ldq + d] : 0.0f;
        dOs[r * (HSP + 4) + d] = valid ? dOut[qHead + (i64)(t0 + r) * ldq + d] : 0.0f;
      }
      if (threadIdx.x < TILE) {
        int r = threadIdx.x;
        int lo, hi;
        query_range(segStarts, b, T, t0 + r, T, 0, err, &lo, &hi);
        loS[r] = lo;
        hiS[r] = hi;
        i64 at = ((i64)b * NH + h) * T + t0 + r;
        lseS[r] = r < rows ? lse[at] : 0.0f;
        DS[r] = r < rows ? D[at] : 0.0f;
      }
      __syncthreads();

      // Lane r takes query t0 + r against the warp's keys.
      float s[ROWS_PER_WARP], dp[ROWS_PER_WARP];
#pragma unroll
      for (int kk = 0; kk < ROWS_PER_WARP; kk++) {
        s[kk] = 0.0f;
        dp[kk] = 0.0f;
      }
      const float* qRow = Qs + lane * (HSP + 4);
      const float* gRow = dOs + lane * (HSP + 4);
      for (int d = 0; d < HSP; d += 4) {
        float4 qd = load4(qRow + d);
        float4 gd = load4(gRow + d);
#pragma unroll
        for (int kk = 0; kk < ROWS_PER_WARP; kk++) {
          s[kk] = dot4(qd, load4(kRows + kk * HSP + d), s[kk]);
          dp[kk] = dot4(gd, load4(vRows + kk * HSP + d), dp[kk]);
        }
      }
      const int lo = loS[lane];
      const int hi = hiS[lane];
      const float rowLSE = lseS[lane];
      const float rowD = DS[lane];
#pragma unroll
      for (int kk = 0; kk < ROWS_PER_WARP; kk++) {
        int j = j0 + warp * ROWS_PER_WARP + kk;
        bool visible = j <= jLast && j >= lo && j <= hi;
        float p = visible ? expf(s[kk] * scale - rowLSE) : 0.0f;
        s[kk] = p;
        dp[kk] = p * (dp[kk] - rowD);  // dS
      }
#pragma unroll 2
      for (int r = 0; r < TILE; r++) {
        float qv[HSC], gv[HSC];
#pragma unroll
        for (int c = 0; c < HSC; c++) {
          int d = lane + 32 * c;
          qv[c] = d < HS ? Qs[r * (HSP + 4) + d] : 0.0f;
          gv[c] = d < HS ? dOs[r * (HSP + 4) + d] : 0.0f;
        }
#pragma unroll
        for (int kk = 0; kk < ROWS_PER_WARP; kk++) {
          float p = __shfl_sync(0xffffffffu, s[kk], r);
          float ds = __shfl_sync(0xffffffffu, dp[kk], r);
#pragma unroll
          for (int c = 0; c < HSC; c++) {
            accV[kk][c] += p * gv[c];
            accK[kk][c] += ds * qv[c];
          }
        }
      }
    }
  }

#pragma unroll
  for (int kk = 0; kk < ROWS_PER_WARP; kk++) {
    int jj = warp * ROWS_PER_WARP + kk;
    if (jj >= keys) continue;
    float* kRow = dk + kvOffset + jj * ldkv;
    float* vRow = dv + kvOffset + jj * ldkv;
#pragma unroll
    for (int c = 0; c < HSC; c++) {
      int d = lane + 32 * c;
      if (d < HS) {
        kRow[d] = accK[kk][c] * scale;
        vRow[d] = accV[kk][c];
      }
    }
  }
}

#define ATTENTION_BUILDS(HSMAX, HSC)                                                                                 \
  extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_forward_hs##HSMAX(                           \
      float* out, float* lse, const float* q, const float* k, const float* v, const int* segStarts, int Tq, int Tkv, \
      int NH, int NKV, int HS, int qPos0, float scale, int* err) {                                                   \
    attention_forward<HSC>(out, lse, q, k, v, segStarts, Tq, Tkv, NH, NKV, HS, qPos0, scale, err);                  \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_backward_dq_hs##HSMAX(                       \
      float* dq, const float* dOut, const float* q, const float* k, const float* v, const float* lse, const float* D, \
      const int* segStarts, int T, int NH, int NKV, int HS, float scale, int* err) {                                 \
    attention_backward_dq<HSC>(dq, dOut, q, k, v, lse, D, segStarts, T, NH, NKV, HS, scale, err);                   \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_backward_dkdv_hs##HSMAX(                     \
      float* dk, float* dv, const float* dOut, const float* q, const float* k, const float* v, const float* lse,     \
      const float* D, const int* segStarts, int T, int NH, int NKV, int HS, float scale, int* err) {                 \
    attention_backward_dkdv<HSC>(dk, dv, dOut, q, k, v, lse, D, segStarts, T, NH, NKV, HS, scale, err);             \
  }

ATTENTION_BUILDS(64, 2)
ATTENTION_BUILDS(128, 4)
ATTENTION_BUILDS(256, 8)
