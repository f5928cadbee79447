#!/usr/bin/python3
"""Time PyTorch's Gloo all-reduce among N local processes over loopback.

Without --worker, this script is the launcher: it picks a free port on 127.0.0.1,
starts N workers of itself (one per rank), waits at most --timeout seconds and then
prints rank 0's rows. On timeout or failure it stops only the workers it started.

    /usr/bin/python3 bench/peers/gloo_allreduce.py --nodes 4 --json

Each worker times torch.distributed.all_reduce (sum, in place) on a float32 tensor of
zeros, after a correctness check with the value rank+1 on every rank. The rows use the
definitions of `ringtune bench allreduce` and nccl-tests: time is the mean seconds per
all-reduce of each rank, averaged over ranks; algbw = bytes / time;
busbw = algbw * 2(N-1)/N; GB/s is 1e9 bytes/s.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import allreduce_sweep as sweep


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sweep.add_sweep_arguments(parser, "the workers are stopped")

    # Set by the launcher for its workers.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--launcher-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    try:
        args.size_list = sweep.parse_size_list(args.sizes)
    except ValueError as err:
        parser.error(f"--sizes: {err}")
    if args.timeout <= 0:
        parser.error(f"--timeout: invalid value {args.timeout:g}: use a positive number of seconds")
    return args


def free_loopback_port():
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(args):
    port = free_loopback_port()
    env = dict(os.environ)
    # Gloo connects its pairs through the addresses of this interface.
    env["GLOO_SOCKET_IFNAME"] = "lo"
    with tempfile.TemporaryDirectory(prefix="gloo_allreduce.") as tmp:
        result_file = os.path.join(tmp, "rows.json")
        workers = []
        for rank in range(args.nodes):
            command = [
                sys.executable, os.path.abspath(__file__), "--worker",
                "--rank", str(rank), "--nodes", str(args.nodes), "--port", str(port),
                "--sizes", args.sizes, "--iters", str(args.iters), "--warmup", str(args.warmup),
                "--timeout", str(args.timeout), "--launcher-pid", str(os.getpid()),
                "--result-file", result_file,
            ]
            # Worker stdout goes to stderr, so that stdout contains only the rows.
            workers.append(subprocess.Popen(command, env=env, stdout=sys.stderr))
        status = sweep.wait_for_children(workers, args.timeout, "gloo_allreduce")
        if status != 0:
            return status
        with open(result_file) as f:
            result = json.load(f)

    sweep.print_rows(result["rows"], args.json, f"PyTorch {result['torch']} Gloo all-reduce over loopback")
    return 0


def run_worker(args):
    import torch
    import torch.distributed as dist

    sweep.exit_with_parent(args.launcher_pid)
    nodes = args.nodes
    # NOTE: with PyTorch 1.13, rank 0's rendezvous store listens on all addresses of this
    # port. Every rank connects to it through 127.0.0.1 only.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                            rank=args.rank, world_size=nodes, timeout=timedelta(seconds=args.timeout))

    # One buffer for the whole sweep, written once so that its pages are resident:
    # the first touch of fresh memory would otherwise be timed with the all-reduce.
    buffer = torch.empty(max(args.size_list) // 4, dtype=torch.float32)
    buffer.fill_(0.0)
    expected = nodes * (nodes + 1) / 2

    rows = []
    for size in args.size_list:
        warmup, iters = sweep.schedule(size, args.iters, args.warmup)
        tensor = buffer[: size // 4]

        tensor.fill_(float(args.rank + 1))
        dist.all_reduce(tensor)
        correct = bool(torch.all(tensor == expected).item())
        # Zeros stay zeros over any number of in-place sums, so no value can overflow.
        tensor.zero_()

        for _ in range(warmup):
            dist.all_reduce(tensor)
        dist.barrier()
        cpu_start = time.process_time()
        wall_start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(tensor)
        wall = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start

        totals = torch.tensor([wall / iters, cpu / wall, 1.0 if correct else 0.0], dtype=torch.float64)
        dist.all_reduce(totals)
        if totals[2].item() != nodes:
            raise RuntimeError(f"all-reduce of {sweep.format_size(size)} returned wrong sums on "
                               f"{nodes - int(totals[2].item())} of {nodes} ranks (expected {expected:g})")
        rows.append(sweep.make_row(size, totals[0].item() / nodes, nodes, totals[1].item() / nodes))

    dist.barrier()
    if args.rank == 0:
        with open(args.result_file, "w") as f:
            json.dump({"rows": rows, "torch": torch.__version__}, f)
    dist.destroy_process_group()
    return 0


def main():
    args = parse_args()
    if args.worker:
        return run_worker(args)
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
