#!/usr/bin/env bash
# Runs ringtune's all-reduce benchmark and its peers (Gloo, Open MPI over TCP and over
# shared memory) interleaved, then prints a summary table in markdown.
#
#   bash bench/peers/run.sh [REPEATS=3] [NODES="2 3 4"] [SIZES=4KiB,64KiB,1MiB,16MiB,64MiB,256MiB]
#
# For each repeat and each N, the four benchmarks run one after the other, so that a
# slow phase of the machine affects all of them rather than one. Raw JSON rows and each
# run's stderr go to bench/peers/results/<UTC timestamp>/, together with summary.md.
#
# Environment:
#   RINGTUNE_BIN    ringtune binary to use; without it, `make build` builds bin/ringtune
#   RUN_TIMEOUT_S   maximum seconds for one benchmark run (default 600)
#
# Every process binds and connects to 127.0.0.1 only. Peers run on Debian's
# /usr/bin/python3 (install them with bench/peers/setup.sh).
set -euo pipefail

REPEATS=${1:-3}
NODES=${2:-"2 3 4"}
SIZES=${3:-4KiB,64KiB,1MiB,16MiB,64MiB,256MiB}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-600}
PYTHON=/usr/bin/python3

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO_ROOT"
PEERS_DIR=bench/peers

NODES=${NODES//,/ }
if ! [[ $REPEATS =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: invalid REPEATS '$REPEATS': use a positive integer, such as 3" >&2
  exit 2
fi
for N in $NODES; do
  if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: invalid entry '$N' in NODES: use positive integers, such as \"2 3 4\"" >&2
    exit 2
  fi
done
if [[ -z ${NODES// /} ]]; then
  echo "run.sh: NODES is empty: give world sizes, such as \"2 3 4\"" >&2
  exit 2
fi
if ! [[ $RUN_TIMEOUT_S =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: invalid RUN_TIMEOUT_S '$RUN_TIMEOUT_S': use a positive number of seconds" >&2
  exit 2
fi
# Checks the sizes once here, so that a typo fails before the first run.
"$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); import allreduce_sweep as s
try:
    s.parse_size_list(sys.argv[2])
except ValueError as err:
    sys.exit(f"run.sh: SIZES: {err}")' "$PEERS_DIR" "$SIZES"

if [[ -z ${RINGTUNE_BIN:-} ]]; then
  make build
  RINGTUNE_BIN=bin/ringtune
fi
if [[ ! -x $RINGTUNE_BIN ]]; then
  echo "run.sh: ringtune binary '$RINGTUNE_BIN' not found or not executable. Unset RINGTUNE_BIN to build bin/ringtune." >&2
  exit 2
fi
export RINGTUNE_LOG_LEVEL=${RINGTUNE_LOG_LEVEL:-warn}

RESULTS_DIR=$PEERS_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
CPU_MODEL=$(grep -m 1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uname -srm: $(uname -srm)"
  echo "nproc: $(nproc)"
  echo "CPU model: ${CPU_MODEL:-unknown (no model name line in /proc/cpuinfo)}"
  echo "ringtune commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "repeats: $REPEATS; nodes: $NODES; sizes: $SIZES"
} >"$RESULTS_DIR/machine.txt"
echo "run.sh: writing results to $RESULTS_DIR" >&2

# Each benchmark's own --timeout stops its processes first. timeout(1) is the backstop,
# which sends SIGTERM to the process group 30 s later and SIGKILL 10 s after that.
OUTER_TIMEOUT_S=$((RUN_TIMEOUT_S + 30))
FAILED_RUNS=()

# Runs one benchmark: run_one NAME COMMAND..., with stdout to NAME.json and stderr to NAME.log.
run_one() {
  local name=$1
  shift
  local start status=0
  start=$(date +%s)
  timeout -k 10 "$OUTER_TIMEOUT_S" "$@" >"$RESULTS_DIR/$name.json" 2>"$RESULTS_DIR/$name.log" || status=$?
  if ((status == 0)); then
    echo "run.sh: [$(date -u +%H:%M:%S)] $name finished in $(($(date +%s) - start)) s" >&2
  else
    echo "run.sh: [$(date -u +%H:%M:%S)] $name failed with exit status $status. See $RESULTS_DIR/$name.log" >&2
    FAILED_RUNS+=("$name")
  fi
}

for REPEAT in $(seq "$REPEATS"); do
  for N in $NODES; do
    SUFFIX="n${N}_r${REPEAT}"
    run_one "ringtune_$SUFFIX" "$RINGTUNE_BIN" bench allreduce --nodes "$N" --sizes "$SIZES" \
      --timeout "${RUN_TIMEOUT_S}s" --json
    run_one "gloo_$SUFFIX" "$PYTHON" "$PEERS_DIR/gloo_allreduce.py" --nodes "$N" --sizes "$SIZES" \
      --timeout "$RUN_TIMEOUT_S" --json
    for TRANSPORT in tcp shm; do
      run_one "mpi-${TRANSPORT}_$SUFFIX" "$PYTHON" "$PEERS_DIR/mpi_allreduce.py" --nodes "$N" \
        --transport "$TRANSPORT" --sizes "$SIZES" --timeout "$RUN_TIMEOUT_S" --json
    done
  done
done

"$PYTHON" "$PEERS_DIR/summarize.py" "$RESULTS_DIR"

if ((${#FAILED_RUNS[@]} > 0)); then
  echo "run.sh: ${#FAILED_RUNS[@]} run(s) failed: ${FAILED_RUNS[*]}" >&2
  exit 1
fi
