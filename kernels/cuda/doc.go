// Package cuda implements kernels.Backend on an NVIDIA GPU. It loads the CUDA
// driver, NVRTC and cuBLAS at run time (package internal/cudalib, no cgo),
// compiles its CUDA C kernels (kernels/*.cu, embedded) with NVRTC for the
// device's compute capability at New and caches the images on disk.
//
// # Semantics
//
// Every op has the semantics of kernels/cpu, the reference, and validates its
// arguments with the same kernels.Check functions, so a contract violation
// panics with the same error. Ops are queued on one compute stream and return
// before the device has run them. Sync, the copies to the host, SumSquares
// and LinearCrossEntropy wait for them.
//
// # Precision
//
//   - Matmul with an F32 b multiplies on tensor cores in TF32: the inputs
//     are rounded to 10-bit mantissas (a relative error up to 2⁻¹¹ each) and
//     the products accumulate in fp32. Options.StrictFP32 selects fp32
//     multiplies instead.
//   - Matmul with a BF16 b rounds a to bfloat16 (round to nearest even) into
//     a scratch buffer and multiplies bf16×bf16 with fp32 accumulation. With
//     StrictFP32, b is widened to fp32 instead, exactly as kernels/cpu does.
//   - LinearCrossEntropy takes its products from Matmul's rules. With a BF16
//     weight its dHidden product also rounds the logit gradients to bf16.
//   - The other ops compute in fp32, with float64 sums where kernels/cpu
//     uses them (RMSNorm, SumSquares, the cross-entropy's sum of
//     exponentials). Attention and the elementwise ops may differ from
//     kernels/cpu in the last bits, because the device fuses multiply-adds
//     and sums in another order. AdamW rounds each step as kernels/cpu does.
//   - EmbeddingBackward adds repeated ids with float atomics, in an order that
//     varies between runs. The kernels of the other ops are deterministic,
//     and cuBLAS documents bitwise reproducible results across runs on GPUs
//     of one architecture and SM count with one toolkit version.
//
// # Errors
//
// A failed driver or cuBLAS call inside an op is kept and returned by the
// next Sync (and by the copies, which also wait), because the ops return no
// error. After one, the device state is undefined: close the backend.
//
// NOTE: element values cannot be checked on the host without a copy. An
// embedding id outside [0, V), a negative RoPE position or a segment start
// outside [0, token] is skipped (its output is left unwritten or clamped) and
// makes the next Sync return an error, instead of the panic of kernels/cpu.
// LinearCrossEntropy copies the targets to the host and panics on one out of
// range, as kernels/cpu does. Segment starts that decrease along a row are not
// detected.
//
// # Tests
//
// The tests compare every op and a training step of a small Qwen3 with
// kernels/cpu. On a machine without a GPU they run on an emulated device: a
// fake driver and cuBLAS in host memory (internal/cudalib/testdata) with the
// kernels compiled by g++ against testdata/emulator/cuda_emu.h, which runs
// blocks, barriers and warp shuffles on the CPU. That checks the kernels'
// indexing, synchronization and arguments, but not streams running
// concurrently, TF32 and bf16 rounding in cuBLAS or device limits, which
// need a GPU (scripts/gpu-check.sh). Compiling the kernels needs NVRTC
// (scripts/install-nvrtc.sh), and the emulated device cc and g++.
package cuda
