#!/usr/bin/python3
"""Compare Sgemm with torch.mm on OpenBLAS, shape by shape, on a shared machine.

For each repeat and shape, this script runs BenchmarkSgemm for that shape and then
bench/peers/torch_matmul.py for the same shape, so that both peers see the machine in
nearly the same state. Around each run it reads /proc/stat and the CPU time of the
child, and records the foreign load: the average number of CPUs that other processes
kept busy during the run. The summary gives median GFLOP/s over all runs and over the
quiet runs (foreign load at most --quiet-load CPUs), and the ratio of the medians.

    /usr/bin/python3 kernels/cpu/compare_torch.py --repeats 7 --shapes square/NN/1024

Raw rows, the machine description and summary.md go to
bench/peers/results/sgemm-<UTC timestamp>/, which git ignores.
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "bench", "peers"))
import torch_matmul  # noqa: E402  (the shape table; importing it does not import torch)

ROW = re.compile(r"^Benchmark(?:Sgemm|TorchMM)/(\S+)-\d+\s+\d+\s.*?([\d.]+) GFLOP/s")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each peer per shape (default 5)")
    parser.add_argument("--shapes", default="square/NN/1024,square/NN/2048,square/NN/4096",
                        help="comma-separated shape names from BenchmarkSgemm, or 'all'")
    parser.add_argument("--benchtime", type=float, default=1.0,
                        help="seconds of timed calls per run and peer (default 1)")
    parser.add_argument("--threads", type=int, default=2,
                        help="GOMAXPROCS for Go and OpenMP threads for OpenBLAS (default 2)")
    parser.add_argument("--quiet-load", type=float, default=0.2,
                        help="maximum foreign load, in CPUs, of a run counted as quiet (default 0.2)")
    args = parser.parse_args()
    names = list(torch_matmul.SHAPES) if args.shapes == "all" else [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in torch_matmul.SHAPES]
    if unknown:
        parser.error(f"--shapes: unknown shape {', '.join(unknown)}; known: {', '.join(torch_matmul.SHAPES)}")
    if args.repeats < 1 or args.threads < 1 or args.benchtime <= 0:
        parser.error("--repeats, --threads and --benchtime must be positive")
    args.names = names
    return args


def busy_cpu_seconds():
    """Return the CPU seconds that all processes have spent busy since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command, env, log):
    """Run command and return (GFLOP/s, foreign load in CPUs)."""
    busy0, child0, wall0 = busy_cpu_seconds(), children_cpu_seconds(), time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - wall0
    foreign = max(0.0, (busy_cpu_seconds() - busy0) - (children_cpu_seconds() - child0)) / wall
    log.write(result.stdout)
    if result.returncode != 0:
        sys.exit(f"compare_torch: {' '.join(command)} failed with status {result.returncode}:\n{result.stderr}")
    for line in result.stdout.splitlines():
        match = ROW.match(line)
        if match:
            return float(match.group(2)), foreign
    sys.exit(f"compare_torch: no GFLOP/s row in the output of {' '.join(command)}:\n{result.stdout}")


def go_pattern(shape):
    # go test matches a sub-benchmark level by level, split at '/'.
    return "^BenchmarkSgemm$" + "".join(f"/^{re.escape(part)}$" for part in shape.split("/"))


def summarize(args, runs):
    lines = [
        f"| shape | Sgemm GFLOP/s | torch.mm GFLOP/s | ratio | quiet pairs | Sgemm quiet | torch.mm quiet | ratio quiet |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in args.names:
        pairs = runs[shape]
        go = [g for g, _, _, _ in pairs]
        torch = [t for _, _, t, _ in pairs]
        quiet = [(g, t) for g, gl, t, tl in pairs if gl <= args.quiet_load and tl <= args.quiet_load]
        row = f"| {shape} | {statistics.median(go):.1f} | {statistics.median(torch):.1f} | " \
              f"{statistics.median(go) / statistics.median(torch):.2f} | {len(quiet)} |"
        if quiet:
            go_quiet = statistics.median(g for g, _ in quiet)
            torch_quiet = statistics.median(t for _, t in quiet)
            row += f" {go_quiet:.1f} | {torch_quiet:.1f} | {go_quiet / torch_quiet:.2f} |"
        else:
            row += " – | – | – |"
        lines.append(row)
    lines.append("")
    lines.append(f"Medians over {args.repeats} runs per peer and shape, {args.threads} threads, "
                 f"about {args.benchtime:g} s of timed calls per run. Quiet pairs are those in which "
                 f"other processes kept at most {args.quiet_load:g} CPUs busy during both runs.")
    return "\n".join(lines)


def main():
    args = parse_args()
    out = os.path.join(REPO, "bench", "peers", "results", time.strftime("sgemm-%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(out)
    test_binary = os.path.join(out, "cpu.test")
    subprocess.run(["go", "test", "-c", "-o", test_binary, "./kernels/cpu"], cwd=REPO, check=True)
    with open(os.path.join(out, "machine.txt"), "w") as f:
        model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {os.uname().sysname} "
                f"{os.uname().release} {os.uname().machine}\n{model}, {os.cpu_count()} CPUs\n")

    env = dict(os.environ, GOMAXPROCS=str(args.threads))
    runs = {shape: [] for shape in args.names}
    with open(os.path.join(out, "runs.txt"), "w") as log:
        for repeat in range(1, args.repeats + 1):
            for shape in args.names:
                go, go_load = run_measured(
                    [test_binary, "-test.run", "^$", "-test.bench", go_pattern(shape),
                     "-test.benchtime", f"{args.benchtime:g}s"], env, log)
                torch, torch_load = run_measured(
                    [sys.executable, os.path.join(REPO, "bench", "peers", "torch_matmul.py"), "--shapes", shape,
                     "--threads", str(args.threads), "--min-time", f"{args.benchtime:g}"], env, log)
                runs[shape].append((go, go_load, torch, torch_load))
                print(f"repeat {repeat} {shape}: Sgemm {go:.1f} GFLOP/s (foreign load {go_load:.2f}), "
                      f"torch.mm {torch:.1f} GFLOP/s (foreign load {torch_load:.2f})", flush=True)

    summary = summarize(args, runs)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary + "\n")
    print(summary)
    print(f"\nRaw rows in {out}/runs.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
