#!/usr/bin/python3
"""Summarize one results folder of bench/peers/run.sh as a markdown table.

    /usr/bin/python3 bench/peers/summarize.py [RESULTS_DIR]

RESULTS_DIR defaults to the newest folder in bench/peers/results/. The summary goes to
stdout and to RESULTS_DIR/summary.md. Each cell is the median (min–max) over repeats of
busbw in GB/s (1e9 bytes/s). The 4 KiB column is the mean time per all-reduce in ms
instead, because small all-reduces are bound by latency rather than bandwidth.
"""

import argparse
import json
import os
import re
import statistics
import sys

import allreduce_sweep as sweep

# File name prefix of each benchmark in run.sh, and its name in the table.
PEERS = {
    "ringtune": "ringtune",
    "gloo": "Gloo",
    "mpi-tcp": "MPI tcp",
    "mpi-shm": "MPI shm",
}
RESULT_NAME = re.compile(r"^(?P<peer>[a-z-]+)_n(?P<nodes>\d+)_r(?P<repeat>\d+)\.json$")
ROW_KEYS = ("bytes", "time_s", "algbw_GBps", "busbw_GBps", "nodes", "dtype")
TIME_COLUMN_BYTES = 4 * sweep.KIB


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="",
                        help="folder written by run.sh (default: the newest in bench/peers/results/)")
    args = parser.parse_args()
    if not args.results_dir:
        parent = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        runs = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
        if not runs:
            parser.error(f"no results folder in {parent}: run bench/peers/run.sh first")
        args.results_dir = os.path.join(parent, runs[-1])
    if not os.path.isdir(args.results_dir):
        parser.error(f"results folder {args.results_dir} not found")
    return args


def load_rows(path):
    """Return the rows of one result file, or raise ValueError when it is empty or malformed."""
    with open(path) as f:
        text = f.read()
    if not text.strip():
        raise ValueError("empty file")
    rows = json.loads(text)["rows"]
    for row in rows:
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"row missing {', '.join(missing)}")
    return rows


def collect(results_dir):
    """Group the rows of results_dir by (peer, nodes, bytes) and list the unusable files.

    Returns (rows by key, number of repeats seen, unusable file names with the reason).
    """
    grouped = {}
    repeats = set()
    unusable = []
    for name in sorted(os.listdir(results_dir)):
        match = RESULT_NAME.match(name)
        if not match or match["peer"] not in PEERS:
            continue
        repeats.add(int(match["repeat"]))
        try:
            rows = load_rows(os.path.join(results_dir, name))
        except (OSError, ValueError, KeyError, TypeError) as err:
            unusable.append(f"{name} ({err or type(err).__name__})")
            continue
        for row in rows:
            grouped.setdefault((match["peer"], int(row["nodes"]), int(row["bytes"])), []).append(row)
    return grouped, len(repeats), unusable


def format_number(value):
    """Format a positive measurement with about three significant digits."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_spread(values):
    """Format values as median (min–max), or as the single value when there is one."""
    median = format_number(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({format_number(min(values))}–{format_number(max(values))})"


def cell_values(rows, size):
    """Return the quantity shown in the column of size: time in ms for 4 KiB, else busbw in GB/s."""
    if size == TIME_COLUMN_BYTES:
        return [row["time_s"] * 1e3 for row in rows]
    return [row["busbw_GBps"] for row in rows]


def ratio_cell(grouped, nodes, size):
    """Return how many times faster ringtune is than Gloo, from the medians of both."""
    ringtune_rows = grouped.get(("ringtune", nodes, size))
    gloo_rows = grouped.get(("gloo", nodes, size))
    if not ringtune_rows or not gloo_rows:
        return "–"
    ringtune_median = statistics.median(cell_values(ringtune_rows, size))
    gloo_median = statistics.median(cell_values(gloo_rows, size))
    if size == TIME_COLUMN_BYTES:
        # Shorter time is faster, so the ratio of times is inverted.
        return f"{gloo_median / ringtune_median:.2f}"
    return f"{ringtune_median / gloo_median:.2f}"


def build_table(grouped):
    sizes = sorted({size for (_, _, size) in grouped})
    node_counts = sorted({nodes for (_, nodes, _) in grouped})
    headers = ["peer", "N"]
    for size in sizes:
        label = sweep.format_size(size)
        headers.append(f"{label} time ms" if size == TIME_COLUMN_BYTES else f"{label} busbw GB/s")
    lines = ["| " + " | ".join(headers) + " |", "|---|---:|" + "---:|" * len(sizes)]
    for nodes in node_counts:
        for peer, title in PEERS.items():
            if not any((peer, nodes, size) in grouped for size in sizes):
                continue
            cells = [title, str(nodes)]
            for size in sizes:
                rows = grouped.get((peer, nodes, size))
                cells.append(format_spread(cell_values(rows, size)) if rows else "–")
            lines.append("| " + " | ".join(cells) + " |")
        ratios = [ratio_cell(grouped, nodes, size) for size in sizes]
        lines.append(f"| ringtune/Gloo | {nodes} | " + " | ".join(ratios) + " |")
    return lines


def main():
    args = parse_args()
    grouped, repeats, unusable = collect(args.results_dir)

    lines = ["# ringtune and peers: all-reduce of float32 over loopback", ""]
    machine_file = os.path.join(args.results_dir, "machine.txt")
    if os.path.exists(machine_file):
        with open(machine_file) as f:
            lines += [f"- {line.strip()}" for line in f if line.strip()]
        lines.append("")
    if not grouped:
        lines.append(f"No usable results in {args.results_dir}.")
    else:
        lines += build_table(grouped)
        lines += [
            "",
            f"Cells are the median (min–max) over {repeats} repeat(s). busbw = algbw * 2(N-1)/N, where "
            "algbw = bytes / time and time is the mean seconds per all-reduce, averaged over ranks "
            "(nccl-tests definitions). GB/s is 1e9 bytes/s.",
            f"The {sweep.format_size(TIME_COLUMN_BYTES)} column is the mean time per all-reduce in ms. "
            "The ringtune/Gloo row divides the medians so that above 1 means ringtune is faster: "
            "busbw of ringtune over busbw of Gloo, and in the time column, time of Gloo over time of ringtune.",
        ]
    if unusable:
        lines += ["", "Failed or unusable runs (see the .log file of the same name): " + "; ".join(unusable)]

    summary = "\n".join(lines) + "\n"
    with open(os.path.join(args.results_dir, "summary.md"), "w") as f:
        f.write(summary)
    sys.stdout.write(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
