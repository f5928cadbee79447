#!/usr/bin/env bash
# Runs the CUDA backend's tests and benchmarks, and times training steps of
# Qwen3-0.6B, on a machine with an NVIDIA GPU and no Go toolchain, from binaries
# built beforehand on another machine:
#
#   make gpu-bin                        # gpu-bin/cuda.test and gpu-bin/cudalib.test
#   make build                          # bin/ringtune, CGO_ENABLED=0, loads CUDA through purego
#   scripts/gpu-check.sh [OUT]          # on the GPU machine, from the repository root
#
# It needs the NVIDIA driver and CUDA's NVRTC and cuBLAS (CUDA 11.2 or later) where
# kernels/cuda/internal/cudalib searches for them (RINGTUNE_NVRTC_PATH,
# LD_LIBRARY_PATH, CUDA_PATH, /usr/local/cuda, the system's library folders and
# scripts/install-nvrtc.sh's folder). It writes into OUT (default $OUT, else
# ./out/gpu-check):
#
#   system.log       nvidia-smi, the CUDA libraries found, the binaries run
#   NAME-tests.log   go test -v output of gpu-bin/NAME.test
#   bench.log        the benchmarks of gpu-bin/cuda.test (-test.v), with TFLOP/s
#                    per shape
#   bench-step.json  one JSON line per configuration of `bin/ringtune bench step`:
#                    Qwen3-0.6B in lora, full and lora with --frozen-bf16, batch 8
#                    × seq 1024, with tokens/s, TFLOP/s, MFU and peak device memory
#   bench-step.log   the log of those runs
#   summary.log      one line per step with its exit status and time
#
# BenchmarkGemmBF16 measures cuBLAS's bf16×bf16 GEMM with fp32 accumulation on
# Qwen3-0.6B's shapes. Its TFLOP/s is the peak that the backend's products can
# reach on this GPU, because cuBLAS runs them. It needs neither PyTorch nor
# nvcc. The highest of its rates is the --peak-tflops that bench step divides
# by for MFU. Without a rate in bench.log, bench step runs without MFU.
# The timeouts below bound the whole run to about 8 minutes.
#
# The run fails instead of passing on a machine without a usable GPU: a preflight
# check stops it at once unless `nvidia-smi -L` lists a GPU, and
# RINGTUNE_REQUIRE_GPU=1 makes the tests and benchmarks that need a GPU fail
# instead of skipping or running on kernels/cuda's emulated device. A benchmark
# run that skips or fails a benchmark, or prints no result line, counts as a failure.
#
# Exit status: 0 when every step passed, 1 otherwise. A missing binary fails
# its step and the others still run.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${OUT:-${root}/out/gpu-check}}"
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"
bin="${root}/gpu-bin"
# The fresh cache below also moves $RINGTUNE_CACHE/nvrtc/lib, the folder where
# scripts/install-nvrtc.sh puts NVRTC and cudalib looks for it. So an NVRTC in
# the usual cache is passed on in RINGTUNE_NVRTC_PATH, unless that is set.
nvrtc_cache="${RINGTUNE_CACHE:-${HOME:+${HOME}/.cache/ringtune}}"
if [[ -z "${RINGTUNE_NVRTC_PATH:-}" && -n "${nvrtc_cache}" && -d "${nvrtc_cache}/nvrtc/lib" ]]; then
  export RINGTUNE_NVRTC_PATH="${nvrtc_cache}/nvrtc/lib"
fi
# Compiled kernels go to a fresh cache, so the run includes NVRTC's compile.
export RINGTUNE_CACHE="${out}/cache"
# The NVRTC compile test fails, instead of skipping, when NVRTC is missing.
export RINGTUNE_REQUIRE_NVRTC=1
# The GPU tests and benchmarks fail, instead of skipping or emulating the
# device, when no GPU is usable.
export RINGTUNE_REQUIRE_GPU=1

status=0
summary="${out}/summary.log"
: >"${summary}"

# step [--stdout FILE] NAME TIMEOUT DIR LOG COMMAND...: runs COMMAND in DIR
# with a timeout, appends its output to LOG, or only its stderr when --stdout
# appends its stdout to FILE, and appends a line to the summary.
step() {
  local stdout=""
  if [[ "$1" == --stdout ]]; then
    stdout="$2"
    shift 2
  fi
  local name="$1" limit="$2" dir="$3" log="$4"
  shift 4
  local start end rc
  start=$(date +%s)
  echo "== ${name}: $*" >>"${log}"
  if [[ -n "${stdout}" ]]; then
    (cd "${dir}" && timeout --kill-after=10 "${limit}" "$@") >>"${stdout}" 2>>"${log}"
  else
    (cd "${dir}" && timeout --kill-after=10 "${limit}" "$@") >>"${log}" 2>&1
  fi
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
  echo "RINGTUNE_NVRTC_PATH=${RINGTUNE_NVRTC_PATH:-}"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "CUDA_PATH=${CUDA_PATH:-}"
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-(unset)}"
  echo "binaries:"
  ls -l "${bin}" 2>/dev/null || echo "  ${bin} is missing; build the test binaries first (see the top of this script)"
  ls -l "${root}/bin/ringtune" 2>/dev/null || echo "  ${root}/bin/ringtune is missing; run make build first"
} >"${out}/system.log" 2>&1

# Preflight: without a GPU that nvidia-smi lists, every later step would fail
# or measure nothing, so the run stops here.
if ! gpus="$(nvidia-smi -L 2>&1)" || ! grep -q '^GPU [0-9]' <<<"${gpus}"; then
  {
    echo "== preflight: nvidia-smi -L"
    echo "${gpus:-nvidia-smi printed nothing}"
  } >>"${out}/system.log"
  printf '%-28s failed: nvidia-smi -L failed or lists no GPU; see system.log\n' "preflight" | tee -a "${summary}"
  echo "gpu-check: no usable NVIDIA GPU (nvidia-smi -L failed or lists none), so nothing else ran; logs in ${out}" >&2
  exit 1
fi

# Package folder of each test binary: tests read testdata relative to it.
declare -A packages=(
  [cuda]=kernels/cuda
  [cudalib]=kernels/cuda/internal/cudalib
)
# Time limits: with the benchmarks' 140 s and bench step's 90 s and 40 s, at
# most 480 s in all. Each test binary's own -test.timeout is 10 s shorter, so
# that it prints which test hung.
declare -A limits=(
  [cuda]=170
  [cudalib]=40
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
  # -test.v prints a skip's reason; without it a skipped benchmark prints nothing.
  step "cuda benchmarks" 140s "${root}/kernels/cuda" "${log}" \
    "${bin}/cuda.test" -test.v -test.run='^$' -test.bench=. -test.benchtime=1s -test.timeout=130s
  # A result line reads "BenchmarkNAME-P  N  T ns/op ...".
  results=$(grep -cE '^Benchmark[^[:space:]]+[[:space:]]+[0-9]+[[:space:]]+[0-9.]+ ns/op' "${log}")
  skipped=$(grep -cE -- '--- SKIP: Benchmark' "${log}")
  if [[ ${results} -eq 0 || ${skipped} -gt 0 ]]; then
    printf '%-28s failed: %d result lines, %d skipped; see bench.log\n' "cuda benchmark results" "${results}" "${skipped}" | tee -a "${summary}"
    status=1
  fi
fi

# bench step divides its TFLOP/s by the highest rate of BenchmarkGemmBF16, whose
# lines read "BenchmarkGemmBF16/MxKxN-P  N  T ns/op  R TFLOP/s".
peak_tflops=""
if [[ -f "${out}/bench.log" ]]; then
  peak_tflops=$(awk '
    BEGIN { best = 0 }
    $1 ~ /^BenchmarkGemmBF16\// {
      for (i = 2; i < NF; i++) if ($(i + 1) == "TFLOP/s" && $i + 0 > best) best = $i + 0
    }
    END { if (best > 0) print best }' "${out}/bench.log")
fi

log="${out}/bench-step.log"
json="${out}/bench-step.json"
: >"${log}"
: >"${json}"
if [[ -x "${root}/bin/ringtune" ]]; then
  step_args=(bench step --device cuda:0 --shape qwen3-0.6b --batch 8 --seq 1024 --steps 5 --warmup 2 --json)
  if [[ -n "${peak_tflops}" ]]; then
    step_args+=(--peak-tflops "${peak_tflops}")
    echo "gpu-check: --peak-tflops ${peak_tflops}, the highest BenchmarkGemmBF16 rate in bench.log" >>"${log}"
  else
    echo "gpu-check: bench.log has no BenchmarkGemmBF16 rate, so bench step reports no MFU" >>"${log}"
  fi
  # Each mode runs in a child process of its own, so each peak covers one.
  step --stdout "${json}" "bench step lora,full" 90s "${root}" "${log}" \
    "${root}/bin/ringtune" "${step_args[@]}" --mode lora,full
  step --stdout "${json}" "bench step lora bf16" 40s "${root}" "${log}" \
    "${root}/bin/ringtune" "${step_args[@]}" --mode lora --frozen-bf16
else
  echo "gpu-check: ${root}/bin/ringtune is missing; run make build first" >>"${log}"
  printf '%-28s missing\n' "bench step" | tee -a "${summary}"
  status=1
fi

echo "gpu-check: logs in ${out}" >&2
exit "${status}"
