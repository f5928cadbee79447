#!/usr/bin/env bash
# Runs the CUDA backend's tests and benchmarks on a machine with an NVIDIA GPU
# and no Go toolchain, from test binaries built beforehand on another machine:
#
#   mkdir -p gpu-bin
#   CGO_ENABLED=0 go test -c -o gpu-bin/cuda.test ./kernels/cuda
#   CGO_ENABLED=0 go test -c -o gpu-bin/cudalib.test ./kernels/cuda/internal/cudalib
#   scripts/gpu-check.sh [OUT]          # on the GPU machine, from the repository root
#
# It needs the NVIDIA driver and CUDA's NVRTC and cuBLAS (CUDA 11.2 or later) where
# kernels/cuda/internal/cudalib searches for them (LD_LIBRARY_PATH, CUDA_PATH,
# /usr/local/cuda). It writes into OUT (default $OUT, else ./out/gpu-check):
#
#   system.log       nvidia-smi, the CUDA libraries found, the binaries run
#   NAME-tests.log   go test -v output of gpu-bin/NAME.test
#   bench.log        the benchmarks of gpu-bin/cuda.test, with TFLOP/s per shape
#   summary.log      one line per step with its exit status and time
#
# BenchmarkGemmBF16 measures cuBLAS's bf16×bf16 GEMM with fp32 accumulation on
# Qwen3-0.6B's shapes. Its TFLOP/s is the peak that the backend's products can
# reach on this GPU, because cuBLAS runs them. It needs neither PyTorch nor
# nvcc. The timeouts below bound the whole run to about 7.5 minutes.
#
# Exit status: 0 when every step passed, 1 otherwise. A missing binary fails
# its step and the others still run.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${OUT:-${root}/out/gpu-check}}"
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"
bin="${root}/gpu-bin"
# Compiled kernels go to a fresh cache, so the run includes NVRTC's compile.
export RINGTUNE_CACHE="${out}/cache"
# The NVRTC compile test fails, instead of skipping, when NVRTC is missing.
export RINGTUNE_REQUIRE_NVRTC=1

status=0
summary="${out}/summary.log"
: >"${summary}"

# step NAME TIMEOUT DIR LOG COMMAND...: runs COMMAND in DIR with a timeout,
# appends its output to LOG and a line to the summary.
step() {
  local name="$1" limit="$2" dir="$3" log="$4"
  shift 4
  local start end rc
  start=$(date +%s)
  echo "== ${name}: $*" >>"${log}"
  (cd "${dir}" && timeout --kill-after=10 "${limit}" "$@") >>"${log}" 2>&1
  rc=$?
  end=$(date +%s)
  if [[ ${rc} -eq 124 || ${rc} -eq 137 ]]; then
    echo "gpu-check: ${name} timed out after ${limit}" >>"${log}"
  fi
  printf '%-28s exit %3d  %4d s\n' "${name}" "${rc}" "$((end - start))" | tee -a "${summary}"
  if [[ ${rc} -ne 0 ]]; then
    status=1
  fi
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  nvidia-smi || echo "nvidia-smi failed"
  nvidia-smi --query-gpu=name,compute_cap,memory.total,clocks.max.sm,power.limit --format=csv || true
  echo "CUDA libraries:"
  ls -l /usr/local/cuda/lib64/libnvrtc.so* /usr/local/cuda/lib64/libcublas.so* 2>/dev/null || echo "  none in /usr/local/cuda/lib64"
  echo "binaries:"
  ls -l "${bin}" 2>/dev/null || echo "  ${bin} is missing; build the test binaries first (see the top of this script)"
} >"${out}/system.log" 2>&1

# Package folder of each test binary: tests read testdata relative to it.
declare -A packages=(
  [cuda]=kernels/cuda
  [cudalib]=kernels/cuda/internal/cudalib
)
# Time limits: with the benchmarks' 180 s, at most 440 s in all. Each test
# binary's own -test.timeout is 10 s shorter, so that it prints which test hung.
declare -A limits=(
  [cuda]=200
  [cudalib]=60
)

for name in cuda cudalib; do
  log="${out}/${name}-tests.log"
  : >"${log}"
  if [[ ! -x "${bin}/${name}.test" ]]; then
    echo "gpu-check: ${bin}/${name}.test is missing" >>"${log}"
    printf '%-28s missing\n' "${name} tests" | tee -a "${summary}"
    status=1
    continue
  fi
  step "${name} tests" "${limits[${name}]}s" "${root}/${packages[${name}]}" "${log}" \
    "${bin}/${name}.test" -test.v -test.count=1 -test.timeout="$((limits[${name}] - 10))s"
done

if [[ -x "${bin}/cuda.test" ]]; then
  log="${out}/bench.log"
  : >"${log}"
  step "cuda benchmarks" 180s "${root}/kernels/cuda" "${log}" \
    "${bin}/cuda.test" -test.run='^$' -test.bench=. -test.benchtime=1s -test.timeout=170s
fi

echo "gpu-check: logs in ${out}" >&2
exit "${status}"
