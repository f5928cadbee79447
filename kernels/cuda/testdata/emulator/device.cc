// The kernel entry points of an emulated CUDA device: cuModuleGetFunction,
// cuLaunchKernel, cuFuncSetAttribute and cuFuncGetParamInfo, which run the
// kernels on the CPU through cuda_emu.h. emulator_test.go builds a shared
// library of this file, the kernel sources and
// internal/cudalib/testdata/fakecuda.c (a fake driver and cuBLAS in host
// memory, whose own versions of these four functions it renames). It
// defines EMU_KERNEL_TABLE, the EMU_KERNEL entries of every kernel the
// backend resolves, before including this file.
#include <stddef.h>
#include <stdint.h>
#include <type_traits>
#include <utility>

template <class... Args>
constexpr int emu_arity(void (*)(Args...)) {
  return sizeof...(Args);
}

// emu_invoke calls kernel k with the arguments that params point to, as
// cuLaunchKernel's kernelParams do.
template <class... Args, size_t... I>
static void emu_invoke(void (*k)(Args...), void** params, std::index_sequence<I...>) {
  k(*static_cast<std::remove_cv_t<std::remove_reference_t<Args>>*>(params[I])...);
}

struct emuKernelEntry {
  const char* name;
  int arity;
  void (*invoke)(void** params);
};

#define EMU_KERNEL(k) \
  { #k, emu_arity(k), [](void** p) { emu_invoke(k, p, std::make_index_sequence<emu_arity(k)>{}); } }

static const emuKernelEntry emuKernels[] = {EMU_KERNEL_TABLE};
static const int emuKernelCount = sizeof(emuKernels) / sizeof(emuKernels[0]);

// Function handles are the table index plus emuFunctionBase.
static const uintptr_t emuFunctionBase = 0x1000;
static const int emuMaxSharedOptin = 232448;  // an H100's, as the fake driver reports

enum { emuSuccess = 0, emuInvalidValue = 1, emuInvalidHandle = 400, emuNotFound = 500 };

static const emuKernelEntry* emu_entry(uintptr_t function) {
  if (function < emuFunctionBase || function >= emuFunctionBase + emuKernelCount) return nullptr;
  return &emuKernels[function - emuFunctionBase];
}

extern "C" int cuModuleGetFunction(uintptr_t* function, uintptr_t, const char* name) {
  for (int i = 0; i < emuKernelCount; i++) {
    if (strcmp(emuKernels[i].name, name) == 0) {
      *function = emuFunctionBase + i;
      return emuSuccess;
    }
  }
  return emuNotFound;
}

extern "C" int cuFuncSetAttribute(uintptr_t function, int, int value) {
  if (emu_entry(function) == nullptr) return emuInvalidHandle;
  return value >= 0 && value <= emuMaxSharedOptin ? emuSuccess : emuInvalidValue;
}

extern "C" int cuFuncGetParamInfo(uintptr_t function, size_t index, size_t* offset, size_t* size) {
  const emuKernelEntry* e = emu_entry(function);
  if (e == nullptr) return emuInvalidHandle;
  if (index >= (size_t)e->arity) return emuInvalidValue;
  *offset = 8 * index;
  *size = 8;
  return emuSuccess;
}

extern "C" int cuLaunchKernel(uintptr_t function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                              unsigned bz, unsigned shared, uintptr_t, void** params, void** extra) {
  const emuKernelEntry* e = emu_entry(function);
  if (e == nullptr) return emuInvalidHandle;
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 || bx * by * bz > 1024) return emuInvalidValue;
  if (shared > (unsigned)emuMaxSharedOptin || params == nullptr || extra != nullptr) return emuInvalidValue;
  dim3 grid, block;
  grid.x = gx;
  grid.y = gy;
  grid.z = gz;
  block.x = bx;
  block.y = by;
  block.z = bz;
  emu_launch(grid, block, shared, [&] { e->invoke(params); });
  return emuSuccess;
}
