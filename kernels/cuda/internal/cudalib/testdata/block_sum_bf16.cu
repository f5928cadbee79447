// A test kernel for NVRTC and the driver: shared memory, warp shuffles and
// bfloat16 conversions. NVRTC 11.x has no built-in cuda_bf16.h, so the
// conversions are written out on the raw 16-bit patterns.

// bf16_to_float widens a bfloat16 bit pattern exactly.
__device__ __forceinline__ float bf16_to_float(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// float_to_bf16 rounds to the nearest bfloat16, ties to even, and keeps NaNs quiet.
__device__ __forceinline__ unsigned short float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// warp_sum adds v across the 32 lanes of a warp; lane 0 gets the total.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    return v;
}

// block_sum_bf16 writes out[i] = bf16(scale * in[i]) and, per block, the float sum
// of the block's inputs to sums[blockIdx.x]. blockDim.x must be a multiple of 32
// and at most 1024.
extern "C" __global__ void block_sum_bf16(const unsigned short* in, unsigned short* out,
                                          float* sums, float scale, int n) {
    __shared__ float warp_sums[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? bf16_to_float(in[i]) : 0.0f;
    if (i < n) {
        out[i] = float_to_bf16(v * scale);
    }
    v = warp_sum(v);
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    if (lane == 0) {
        warp_sums[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? warp_sums[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) {
            sums[blockIdx.x] = v;
        }
    }
}
