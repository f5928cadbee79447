// Definitions shared by every kernel source. The Go side prepends this file to
// each .cu file before NVRTC compiles it, so the kernels include no header,
// not even CUDA's: they compile with the NVRTC of CUDA 11.2 to 13 alone.

typedef unsigned short bf16_t;  // bfloat16 bits
typedef long long i64;

// Bits of the device error word, which Backend.Sync reads. A kernel sets one
// when it meets an element value out of range, skips that element and goes on.
#define ERR_ID_RANGE 1        // an embedding id outside [0, V)
#define ERR_POSITION 2        // a negative RoPE position
#define ERR_SEGMENT 4         // a segment start outside [0, token]

// bf16_from_float rounds to nearest even. A NaN stays a quiet NaN, as in
// kernels.BF16FromFloat32.
__device__ __forceinline__ bf16_t bf16_from_float(float f) {
  unsigned int bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    return (bf16_t)((bits >> 16) | 0x0040u);
  }
  unsigned int rounding = 0x7fffu + ((bits >> 16) & 1u);
  return (bf16_t)((bits + rounding) >> 16);
}

__device__ __forceinline__ float float_from_bf16(bf16_t h) {
  return __uint_as_float(((unsigned int)h) << 16);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ double warp_sum_double(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// block_sum_double returns the sum of v over the block to every thread.
// scratch is an array of 32 doubles in shared memory. Every thread of the block must call it.
__device__ __forceinline__ double block_sum_double(double v, double* scratch) {
  int lane = threadIdx.x & 31;
  int warp = threadIdx.x >> 5;
  int warps = (blockDim.x + 31) >> 5;
  v = warp_sum_double(v);
  __syncthreads();  // scratch may still be read by an earlier call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < warps; w++) total += scratch[w];
  return total;
}
