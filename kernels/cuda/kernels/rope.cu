// Rotary position embedding, rotate-half convention, on (B·T, heads, HS).
// invFreq contains 1/theta^(2i/HS) rounded to float32, computed on the host by
// the CPU backend's formula. As there, the angle is float32(pos)·invFreq in
// float32, and its cos and sin are computed in float64 and rounded to
// float32. One thread per (token, i < HS/2) rotates that pair in every head.
// sinSign is +1 forward and −1 backward. out may be x: each thread reads both
// elements of a pair before it writes them.
extern "C" __global__ void rope(float* out, const float* x, const int* positions, const float* invFreq,
                                i64 tokens, int heads, int hs, float sinSign, int* err) {
  int half = hs / 2;
  i64 total = tokens * half;
  for (i64 item = (i64)blockIdx.x * blockDim.x + threadIdx.x; item < total; item += (i64)gridDim.x * blockDim.x) {
    i64 token = item / half;
    int i = (int)(item % half);
    int p = positions[token];
    if (p < 0) {
      atomicOr(err, ERR_POSITION);
      continue;
    }
    float angle = __fmul_rn((float)p, invFreq[i]);
    float c = (float)cos((double)angle);
    float s = sinSign * (float)sin((double)angle);
    i64 base = token * heads * hs + i;
    for (int h = 0; h < heads; h++) {
      i64 lo = base + (i64)h * hs;
      float xl = x[lo];
      float xh = x[lo + half];
      out[lo] = __fsub_rn(__fmul_rn(xl, c), __fmul_rn(xh, s));
      out[lo + half] = __fadd_rn(__fmul_rn(xh, c), __fmul_rn(xl, s));
    }
  }
}
