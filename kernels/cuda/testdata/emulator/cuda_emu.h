// A minimal CUDA emulator for testing the kernels' index arithmetic,
// synchronization and reductions on a CPU with g++ (C++20, glibc). Blocks run
// one after another. The threads of a block run as coroutines on the calling
// thread and switch only at barriers: makecontext starts each one, and
// _setjmp/_longjmp switch between them without swapcontext's system call.
// __syncthreads is a barrier of the block. A warp shuffle writes to a slot
// per lane and reads another lane's slot between two barriers of the warp.
// Static __shared__ arrays become function-level statics, which the threads
// of the running block share. Floating-point arithmetic is the host's,
// without the device's fused multiply-adds.
//
// Every thread of a warp must reach each shuffle, and every thread of a block
// each __syncthreads, as the kernels here guarantee. A thread that skips one
// makes the emulator spin forever.

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <ucontext.h>
#include <memory>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// float4 checks, when copied, that its source is 16-byte aligned, as the
// device's 128-bit loads require.
struct float4 {
  float x, y, z, w;
  float4() = default;
  float4(const float4& o) : x(o.x), y(o.y), z(o.z), w(o.w) {
    if ((uintptr_t)&o % 16 != 0) {
      fprintf(stderr, "emulator: a float4 load from %p is not 16-byte aligned\n", (const void*)&o);
      abort();
    }
  }
  float4& operator=(const float4&) = default;
};
static dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)

// emuThread is one emulated thread: its coroutine and index.
struct emuThread {
  ucontext_t context;  // the first start
  jmp_buf resume;      // where it yielded
  bool started = false;
  std::vector<char> stack;
  dim3 index;
  bool done = false;
};
static std::vector<std::unique_ptr<emuThread>> emuThreads;
static ucontext_t emuScheduler;
static jmp_buf emuSchedulerJump;
static int emuCurrent;
static std::vector<float> emuSmem;
static unsigned long long emuSlots[64][32];
// Barrier state: arrivals and a generation per barrier, the block's at index
// 0 and warp w's at 1 + w.
static std::vector<int> emuArrived, emuGeneration;

static inline float* emu_dynamic_smem() { return emuSmem.data(); }
static inline int emu_tid() { return threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y; }

// emu_yield switches to the scheduler, which resumes the next thread.
static void emu_yield() {
  emuThread* th = emuThreads[emuCurrent].get();
  th->index = threadIdx;
  if (_setjmp(th->resume) == 0) _longjmp(emuSchedulerJump, 1);
}

// emu_barrier waits until count threads have arrived at barrier b.
static void emu_barrier(int b, int count) {
  int generation = emuGeneration[b];
  if (++emuArrived[b] == count) {
    emuArrived[b] = 0;
    emuGeneration[b]++;
    return;
  }
  while (emuGeneration[b] == generation) emu_yield();
}

static inline void __syncthreads() { emu_barrier(0, (int)emuThreads.size()); }

template <class T>
static T emu_shfl(T v, int src) {
  int tid = emu_tid();
  int w = tid >> 5, lane = tid & 31;
  memcpy(&emuSlots[w][lane], &v, sizeof(T));
  emu_barrier(1 + w, 32);
  T r;
  memcpy(&r, &emuSlots[w][src & 31], sizeof(T));
  emu_barrier(1 + w, 32);
  return r;
}
template <class T>
static T __shfl_xor_sync(unsigned, T v, int offset) { return emu_shfl(v, (emu_tid() & 31) ^ offset); }
template <class T>
static T __shfl_sync(unsigned, T v, int src) { return emu_shfl(v, src); }

static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
// Threads switch only at barriers, so read-modify-writes are atomic.
static inline int atomicOr(int* p, int v) { int o = *p; *p |= v; return o; }
static inline float atomicAdd(float* p, float v) { float o = *p; *p += v; return o; }

static void (*emuKernel)(void*);
static void* emuKernelArg;

static void emu_thread_main() {
  threadIdx = emuThreads[emuCurrent]->index;
  emuKernel(emuKernelArg);
  emuThreads[emuCurrent]->done = true;
  _longjmp(emuSchedulerJump, 1);
}

// emu_launch runs f, a callable that calls one kernel, on every thread of
// every block of grid.
template <class F>
static void emu_launch(dim3 grid, dim3 block, size_t sharedBytes, F f) {
  blockDim = block;
  gridDim = grid;
  int threads = block.x * block.y * block.z;
  if (threads % 32 != 0 || threads / 32 > 64) {
    fprintf(stderr, "emu_launch: a block of %d threads is not 1 to 64 whole warps\n", threads);
    exit(2);
  }
  emuKernel = [](void* arg) { (*(F*)arg)(); };
  emuKernelArg = &f;
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        blockIdx.x = bx;
        blockIdx.y = by;
        blockIdx.z = bz;
        // Exactly the requested size, so that AddressSanitizer catches a read
        // past it, and NaN, so that a read of an element never written shows.
        emuSmem.assign(sharedBytes / 4, nanf(""));
        emuArrived.assign(1 + threads / 32, 0);
        emuGeneration.assign(1 + threads / 32, 0);
        // The threads and their stacks are reused from block to block.
        while ((int)emuThreads.size() < threads) {
          emuThreads.push_back(std::make_unique<emuThread>());
          emuThreads.back()->stack.resize(256 << 10);
        }
        emuThreads.resize(threads);
        for (int t = 0; t < threads; t++) {
          emuThread* th = emuThreads[t].get();
          th->started = false;
          th->done = false;
          th->index.x = t % block.x;
          th->index.y = t / block.x % block.y;
          th->index.z = t / (block.x * block.y);
          getcontext(&th->context);
          th->context.uc_stack.ss_sp = th->stack.data();
          th->context.uc_stack.ss_size = th->stack.size();
          th->context.uc_link = &emuScheduler;
          makecontext(&th->context, emu_thread_main, 0);
        }
        // Round-robin until every thread has returned. A thread that returns
        // early leaves its barriers short, which the kernels never do.
        for (bool running = true; running;) {
          running = false;
          for (emuCurrent = 0; emuCurrent < threads; emuCurrent++) {
            emuThread* th = emuThreads[emuCurrent].get();
            if (th->done) continue;
            running = true;
            threadIdx = th->index;
            if (_setjmp(emuSchedulerJump) == 0) {
              if (!th->started) {
                th->started = true;
                swapcontext(&emuScheduler, &th->context);
              } else {
                _longjmp(th->resume, 1);
              }
            }
          }
        }
      }
}
