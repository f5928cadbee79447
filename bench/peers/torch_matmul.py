#!/usr/bin/python3
"""Time torch.mm on OpenBLAS for the shapes of ringtune's BenchmarkSgemm.

The peer for kernels/cpu's Sgemm: PyTorch's float32 matrix multiply on the CPU, which
calls the BLAS sgemm of the library that the dynamic loader finds. Debian's
python3-torch 1.13 links the generic libblas.so.3, so this script re-runs itself with
LD_LIBRARY_PATH pointing at Debian's OpenBLAS (package libopenblas0-openmp), sets
OMP_NUM_THREADS to --threads, and then checks /proc/self/maps to confirm that
libopenblas is the library in use. On a CPU with AVX-512 it also sets
OPENBLAS_CORETYPE=SkylakeX, because OpenBLAS 0.3.21 does not recognise newer Xeons
and would otherwise fall back to a slower kernel. Variables already set in the
environment are kept.

    /usr/bin/python3 bench/peers/torch_matmul.py --shapes square/NN/1024,square/NN/2048

Each row has the format of a Go benchmark line, named BenchmarkTorchMM/<shape>-<threads>,
so that Go's and PyTorch's rows can be read by the same tools. GFLOP/s counts 2·m·n·k
floating-point operations per call and uses the median time of the timed calls.
"""

import argparse
import os
import statistics
import sys
import time

OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"

# name: (m, n, k, transA, transB). These mirror benchShapes in
# kernels/cpu/bench_test.go; keep the two lists in step. Weights are stored out×in
# as in torch.nn.Linear, so the forward pass x·Wᵀ is NT, the input gradient dy·W
# is NN and the weight gradient dyᵀ·x is TN. TN shapes accumulate into C
# (C += op(A)·op(B), BLAS beta = 1) like the weight gradients they model; the
# others overwrite C.
SHAPES = {
    "square/NN/1024": (1024, 1024, 1024, False, False),
    "square/NN/2048": (2048, 2048, 2048, False, False),
    "square/NN/4096": (4096, 4096, 4096, False, False),
    "square/NT/1024": (1024, 1024, 1024, False, True),
    "square/TN/1024": (1024, 1024, 1024, True, False),
    "square/NT/2048": (2048, 2048, 2048, False, True),
    "square/TN/2048": (2048, 2048, 2048, True, False),
    "mlp_up/fwd/NT/m1024_n768_k256": (1024, 768, 256, False, True),
    "mlp_up/dx/NN/m1024_n256_k768": (1024, 256, 768, False, False),
    "mlp_up/dw/TN/m768_n256_k1024": (768, 256, 1024, True, False),
    "lm_head/fwd/NT/m1024_n18992_k256": (1024, 18992, 256, False, True),
    "lm_head/dx/NN/m1024_n256_k18992": (1024, 256, 18992, False, False),
    "lm_head/dw/TN/m18992_n256_k1024": (18992, 256, 1024, True, False),
    "lm_head/fwd/NT/m1024_n151936_k256": (1024, 151936, 256, False, True),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="square/NN/1024,square/NN/2048,square/NN/4096",
                        help="comma-separated shape names, or 'all'; known names: " + ", ".join(SHAPES))
    parser.add_argument("--threads", type=int, default=2,
                        help="OpenMP threads for OpenBLAS and PyTorch (default 2)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of timed calls per shape, at least 3 calls (default 1.0)")
    parser.add_argument("--allow-any-blas", action="store_true",
                        help="time whatever BLAS torch loads instead of failing when it is not OpenBLAS")
    args = parser.parse_args()
    names = list(SHAPES) if args.shapes == "all" else [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        parser.error(f"--shapes: unknown shape {', '.join(unknown)}; known shapes: {', '.join(SHAPES)}")
    if args.threads < 1:
        parser.error(f"--threads: invalid value {args.threads}: use a positive number")
    if args.min_time <= 0:
        parser.error(f"--min-time: invalid value {args.min_time:g}: use a positive number of seconds")
    args.names = names
    return args


def cpu_has_avx512():
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and " avx512f" in line for line in f)


def reexec_with_openblas(args):
    """Re-run this script with OpenBLAS first on the library path, once."""
    if os.environ.get("TORCH_MATMUL_REEXEC") == "1":
        return
    if not os.path.isdir(OPENBLAS_DIR):
        if args.allow_any_blas:
            return
        sys.exit(f"torch_matmul: {OPENBLAS_DIR} not found: install Debian's libopenblas0-openmp "
                 "(apt-get install libopenblas0-openmp) or pass --allow-any-blas")
    env = dict(os.environ)
    path = env.get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + (":" + path if path else "")
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    if cpu_has_avx512():
        env.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
    env["TORCH_MATMUL_REEXEC"] = "1"
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


def loaded_blas():
    """Return the paths of the BLAS libraries mapped into this process."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
    return sorted(paths)


def time_shape(torch, name, min_time):
    m, n, k, trans_a, trans_b = SHAPES[name]
    gen = torch.Generator().manual_seed(1)
    # Stored layouts: A is m×k, or k×m when transposed; B is k×n, or n×k when transposed.
    a = torch.rand(k, m, generator=gen) if trans_a else torch.rand(m, k, generator=gen)
    b = torch.rand(n, k, generator=gen) if trans_b else torch.rand(k, n, generator=gen)
    op_a = a.t() if trans_a else a
    op_b = b.t() if trans_b else b
    c = torch.zeros(m, n)
    accumulate = trans_a

    def call():
        if accumulate:
            c.addmm_(op_a, op_b)
        else:
            torch.mm(op_a, op_b, out=c)

    call()  # warm-up: OpenBLAS starts its threads and the pages of c are touched
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return len(times), seconds, 2.0 * m * n * k / seconds / 1e9


def main():
    args = parse_args()
    reexec_with_openblas(args)

    import torch

    torch.set_num_threads(args.threads)
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))
    blas = loaded_blas()
    if not any("openblas" in p for p in blas) and not args.allow_any_blas:
        sys.exit(f"torch_matmul: torch loaded {blas or 'no BLAS library'}, not OpenBLAS: "
                 f"check that {OPENBLAS_DIR} contains libblas.so.3, or pass --allow-any-blas")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}, BLAS {', '.join(blas)}", flush=True)

    for name in args.names:
        calls, seconds, gflops = time_shape(torch, name, args.min_time)
        print(f"BenchmarkTorchMM/{name}-{args.threads}\t{calls}\t{seconds * 1e9:.0f} ns/op\t{gflops:.1f} GFLOP/s",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
