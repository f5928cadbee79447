"""Sizes, schedule, output rows and worker supervision shared by the peer all-reduce benchmarks.

Everything here matches `ringtune bench allreduce`, so that the peers and ringtune time
the same sizes the same number of times and print rows with the same JSON keys.
Sizes are in bytes of float32 data, with binary units (1 KiB = 1024 bytes).
GB/s is 1e9 bytes/s, as in nccl-tests.
"""

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

DEFAULT_SIZES = "4KiB,64KiB,1MiB,16MiB,64MiB,256MiB"

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# Checked in this order, so that "KiB" is matched before "B".
SIZE_SUFFIXES = (("GIB", GIB), ("MIB", MIB), ("KIB", KIB), ("G", GIB), ("M", MIB), ("K", KIB), ("B", 1))

MAX_SIZE = 1 << 40


def parse_size(text):
    """Parse one size such as 4096, 4K, 4KiB or 1GiB into bytes, or raise ValueError if it is invalid."""
    token = text.strip()
    multiplier = 1
    for suffix, unit in SIZE_SUFFIXES:
        if token.upper().endswith(suffix):
            multiplier = unit
            token = token[: -len(suffix)].strip()
            break
    if not token.isdigit():
        raise ValueError(f"invalid size {text!r}: use a byte count such as 4096, 4KiB or 64MiB")
    size = int(token) * multiplier
    if size <= 0:
        raise ValueError(f"invalid size {text!r}: the size must be positive")
    if size > MAX_SIZE:
        raise ValueError(f"invalid size {text!r}: the size is larger than 1 TiB")
    if size % 4 != 0:
        raise ValueError(f"invalid size {text!r}: the size is not a multiple of 4 bytes (one float32)")
    return size


def parse_size_list(text):
    """Parse a comma-separated size list into bytes, or raise ValueError if it is invalid or empty."""
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise ValueError(f"empty size list {text!r}: give sizes such as {DEFAULT_SIZES}")
    return sizes


def format_size(size):
    """Format bytes in the largest binary unit that divides them, such as 4KiB or 256MiB."""
    for suffix, unit in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}B"


def schedule(size, iters=0, warmup=-1):
    """Return (warmup, timed iterations) for one size.

    The defaults are 5 warmup and 100 timed all-reduces up to 64 KiB, 3 and 20 up to
    1 MiB, and 2 and 10 above. A positive iters or a non-negative warmup replaces them.
    """
    if size <= 64 * KIB:
        scheduled_warmup, scheduled_iters = 5, 100
    elif size <= MIB:
        scheduled_warmup, scheduled_iters = 3, 20
    else:
        scheduled_warmup, scheduled_iters = 2, 10
    if iters > 0:
        scheduled_iters = iters
    if warmup >= 0:
        scheduled_warmup = warmup
    return scheduled_warmup, scheduled_iters


def make_row(size, mean_time_s, nodes, cores_busy):
    """Build one output row with nccl-tests' definitions of algbw and busbw.

    mean_time_s is the mean seconds per all-reduce, averaged over ranks.
    algbw = size / time and busbw = algbw * 2(N-1)/N, both in GB/s.
    cores_busy is the CPU time of one rank over the wall time of the timed loop,
    averaged over ranks.
    """
    algbw = size / mean_time_s
    return {
        "bytes": size,
        "time_s": mean_time_s,
        "algbw_GBps": algbw / 1e9,
        "busbw_GBps": algbw * 2 * (nodes - 1) / nodes / 1e9,
        "nodes": nodes,
        "dtype": "fp32",
        "cores_busy": cores_busy,
    }


def print_rows(rows, as_json, title, stream=sys.stdout):
    """Print rows as {"rows": [...]} on one line, or as a table with a title comment."""
    if as_json:
        stream.write(json.dumps({"rows": rows}) + "\n")
        stream.flush()
        return
    stream.write(f"# {title}; time: mean per all-reduce over ranks; GB/s = 1e9 B/s\n")
    stream.write(f"{'nodes':>6} {'dtype':>5} {'size':>10} {'time(us)':>12} {'algbw(GB/s)':>12} "
                 f"{'busbw(GB/s)':>12} {'cores/rank':>11}\n")
    for row in rows:
        stream.write(f"{row['nodes']:>6} {row['dtype']:>5} {format_size(row['bytes']):>10} "
                     f"{row['time_s'] * 1e6:>12.1f} {row['algbw_GBps']:>12.3f} "
                     f"{row['busbw_GBps']:>12.3f} {row['cores_busy']:>11.2f}\n")
    stream.flush()


def add_sweep_arguments(parser, stopped):
    """Add the flags that every peer benchmark shares with `ringtune bench allreduce`.

    stopped names what the run stops when --timeout expires, for the help text.
    """
    parser.add_argument("--nodes", type=positive_int, default=2,
                        help="number of ranks, one local process each (default 2)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="comma-separated buffer sizes in bytes of float32 data, with binary units "
                             "such as 4KiB, 1MiB or 1G (default %(default)s)")
    parser.add_argument("--iters", type=int, default=0,
                        help="timed all-reduces per size (0: 100 up to 64 KiB, 20 up to 1 MiB, 10 above)")
    parser.add_argument("--warmup", type=int, default=-1,
                        help="untimed all-reduces per size before timing (-1: 5 up to 64 KiB, 3 up to 1 MiB, 2 above)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help=f"maximum seconds for the whole run, after which {stopped} (default 600)")
    parser.add_argument("--json", action="store_true",
                        help='print only {"rows": [...]} on stdout; messages go to stderr')


def positive_int(text):
    """Parse an argparse value that must be an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use an integer of at least 1")
    return value


class Terminated(Exception):
    """Raised in a launcher when it receives SIGTERM, so that it can stop its child processes first."""


def raise_terminated(signum, frame):
    """Handle SIGTERM by raising Terminated in the main thread."""
    raise Terminated()


def stop_children(children, grace_s=5.0):
    """Send SIGTERM to the children still running, then SIGKILL to those alive after grace_s.

    Only the given Popen objects are signalled, never a process group or a name.
    """
    running = [child for child in children if child.poll() is None]
    for child in running:
        child.terminate()
    deadline = time.monotonic() + grace_s
    for child in running:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_for_children(children, timeout_s, label):
    """Wait at most timeout_s seconds for the child processes to exit and return an exit status.

    Returns 0 when every child exits with status 0. When one fails, the others are
    stopped and the status is 1. When the time runs out, all are stopped and the status
    is 124, as timeout(1) returns. SIGTERM or SIGINT to this process also stops them.
    """
    previous_handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, raise_terminated)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            statuses = [child.poll() for child in children]
            failed = [(child, status) for child, status in zip(children, statuses) if status not in (None, 0)]
            if failed:
                child, status = failed[0]
                print(f"{label}: child process {child.pid} ({os.path.basename(child.args[0])}) failed with "
                      f"exit status {status}. Stopping the other child processes.", file=sys.stderr)
                return 1
            if all(status == 0 for status in statuses):
                return 0
            if time.monotonic() >= deadline:
                print(f"{label}: timed out after {timeout_s:g} s. Stopping the child processes. "
                      "Raise --timeout for larger sizes or more nodes.", file=sys.stderr)
                return 124
            time.sleep(0.05)
    except Terminated:
        print(f"{label}: received SIGTERM. Stopping the child processes.", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{label}: interrupted. Stopping the child processes.", file=sys.stderr)
        return 130
    finally:
        # A second signal must not interrupt the cleanup, which ends with SIGKILL anyway.
        for signum in previous_handlers:
            signal.signal(signum, signal.SIG_IGN)
        stop_children(children)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def exit_with_parent(parent_pid):
    """Ask Linux to send SIGKILL to this process when its parent exits.

    A worker whose launcher was killed with SIGKILL would otherwise keep running.
    Does nothing on systems without prctl(2).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    # The parent may have exited before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(1)
