#!/usr/bin/python3
"""Time Open MPI's MPI_Allreduce among N local processes, through mpi4py and numpy.

Without --worker, this script is the launcher: it starts N ranks of itself under
mpirun, waits at most --timeout seconds and then prints rank 0's rows. On timeout or
failure it stops only the mpirun process it started, which stops the ranks.

    /usr/bin/python3 bench/peers/mpi_allreduce.py --nodes 4 --transport tcp --json

mpirun uses the ob1 point-to-point layer, so that the --transport choice is the byte
transfer layer (BTL) that carries the data: tcp is the TCP BTL on the loopback
interface only, and shm is the shared-memory BTL (vader). mpirun's own out-of-band
traffic also stays on loopback.

Each rank times MPI_Allreduce (MPI.SUM, in place) on a float32 array of zeros, after a
correctness check with the value rank+1 on every rank. The rows use the definitions of
`ringtune bench allreduce` and nccl-tests: time is the mean seconds per all-reduce of
each rank, averaged over ranks; algbw = bytes / time; busbw = algbw * 2(N-1)/N;
GB/s is 1e9 bytes/s.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import allreduce_sweep as sweep

# Open MPI options of each --transport, for the byte transfer layer (BTL).
TRANSPORT_OPTIONS = {
    "tcp": ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo"],
    "shm": ["--mca", "btl", "self,vader"],
}
TRANSPORT_TITLES = {
    "tcp": "TCP BTL on loopback",
    "shm": "shared-memory BTL (vader)",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sweep.add_sweep_arguments(parser, "mpirun is stopped")
    parser.add_argument("--transport", choices=sorted(TRANSPORT_OPTIONS), default="tcp",
                        help="tcp: TCP BTL on loopback; shm: shared-memory BTL (vader) (default tcp)")
    parser.add_argument("--mpirun", default="mpirun", help="mpirun executable (default: mpirun on PATH)")

    # Set by the launcher for its ranks.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    try:
        args.size_list = sweep.parse_size_list(args.sizes)
    except ValueError as err:
        parser.error(f"--sizes: {err}")
    if args.timeout <= 0:
        parser.error(f"--timeout: invalid value {args.timeout:g}: use a positive number of seconds")
    if not args.worker and "OMPI_COMM_WORLD_SIZE" in os.environ:
        parser.error("this script starts mpirun itself: run it directly, not under mpirun")
    return args


def launch(args):
    mpirun = shutil.which(args.mpirun)
    if mpirun is None:
        print(f"mpi_allreduce: mpirun executable {args.mpirun!r} not found. Install openmpi-bin "
              "with bench/peers/setup.sh, or pass its path with --mpirun.", file=sys.stderr)
        return 127
    with tempfile.TemporaryDirectory(prefix="mpi_allreduce.") as tmp:
        result_file = os.path.join(tmp, "rows.json")
        # NOTE: with Open MPI 4.1, mpirun and the TCP BTL still listen on all addresses
        # (IPv4 and IPv6). The *_if_include options only restrict the connections to lo.
        command = [
            mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(args.nodes),
            "--mca", "pml", "ob1", "--mca", "oob_tcp_if_include", "lo",
            *TRANSPORT_OPTIONS[args.transport],
            sys.executable, os.path.abspath(__file__), "--worker", "--transport", args.transport,
            "--sizes", args.sizes, "--iters", str(args.iters), "--warmup", str(args.warmup),
            "--result-file", result_file,
        ]
        # mpirun forwards the ranks' stdout, which goes to stderr here so that stdout contains only the rows.
        process = subprocess.Popen(command, stdout=sys.stderr)
        status = sweep.wait_for_children([process], args.timeout, "mpi_allreduce")
        if status != 0:
            return status
        with open(result_file) as f:
            result = json.load(f)

    sweep.print_rows(result["rows"], args.json,
                     f"{result['library']} MPI_Allreduce, {TRANSPORT_TITLES[args.transport]}")
    return 0


def run_worker(args):
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    nodes = comm.Get_size()

    # One buffer for the whole sweep, written once so that its pages are resident:
    # the first touch of fresh memory would otherwise be timed with the all-reduce.
    # np.zeros is not enough because calloc may map untouched zero pages.
    buffer = np.empty(max(args.size_list) // 4, dtype=np.float32)
    buffer.fill(0.0)
    expected = nodes * (nodes + 1) / 2

    rows = []
    for size in args.size_list:
        warmup, iters = sweep.schedule(size, args.iters, args.warmup)
        array = buffer[: size // 4]

        array.fill(rank + 1)
        comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        correct = bool(np.all(array == expected))
        # Zeros stay zeros over any number of in-place sums, so no value can overflow.
        array.fill(0.0)

        for _ in range(warmup):
            comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        comm.Barrier()
        cpu_start = time.process_time()
        wall_start = time.perf_counter()
        for _ in range(iters):
            comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        wall = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start

        totals = np.array([wall / iters, cpu / wall, 1.0 if correct else 0.0], dtype=np.float64)
        comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        if totals[2] != nodes:
            raise RuntimeError(f"MPI_Allreduce of {sweep.format_size(size)} returned wrong sums on "
                               f"{nodes - int(totals[2])} of {nodes} ranks (expected {expected:g})")
        rows.append(sweep.make_row(size, float(totals[0]) / nodes, nodes, float(totals[1]) / nodes))

    comm.Barrier()
    if rank == 0:
        library = MPI.Get_library_version().strip().splitlines()[0].split(",")[0]
        with open(args.result_file, "w") as f:
            json.dump({"rows": rows, "library": library}, f)
    return 0


def main():
    args = parse_args()
    if args.worker:
        return run_worker(args)
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
