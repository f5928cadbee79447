#!/usr/bin/env bash
# Times one training step (forward, backward, AdamW) in ringtune and in PyTorch,
# interleaved, and prints a markdown table of median tokens/s, peak RSS and the ratios
# ringtune : torch.
#
#   bash bench/peers/step.sh [REPEATS=3]
#
# Configurations, each with --warmup 1 and --steps 5 unless WARMUP or STEPS set other counts:
#   tiny 4×256 full, LoRA on q,k,v,o (ringtune's default), LoRA on all seven projections;
#   small 4×256 full and LoRA on q,k,v,o;
#   qwen3-0.6b 1×128 LoRA on q,k,v,o, in ringtune with fp32 and with bf16 frozen weights,
#   both against the same fp32 torch run (torch_train_step.py has no bf16 option);
#   qwen3-0.6b 1×128 full only with FULL_06B=1, because torch needs about 12 GiB for it.
#
# Each configuration runs in its own process, so each peak RSS covers one configuration.
# Within a repeat the two implementations of a configuration run back to back, and the
# one that goes first alternates between repeats, so that a busy phase of the machine
# falls on both. Raw JSON, stderr logs, machine.txt and summary.md go to
# bench/peers/results/step-<UTC timestamp>/.
#
# Environment:
#   RINGTUNE_BIN    ringtune binary to use; without it, `make build` builds bin/ringtune
#   THREADS         threads of both implementations (default: nproc)
#   STEPS, WARMUP   timed and untimed steps per run (default 5 and 1)
#   FULL_06B        1 adds qwen3-0.6b 1×128 full training
#   ONLY            bash regular expression: run only the configurations whose names match,
#                   such as ONLY='^(tiny_lora-all|0\.6b_lora)' (names are listed in CONFIGS below)
#                   0.6b_lora-bf16 reuses the torch run of 0.6b_lora, so select both
#   RUN_TIMEOUT_S   maximum seconds for one run (default 1800)
set -euo pipefail

REPEATS=${1:-3}
THREADS=${THREADS:-$(nproc)}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-1}
FULL_06B=${FULL_06B:-0}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-1800}
PYTHON=/usr/bin/python3

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO_ROOT"
PEERS_DIR=bench/peers

check_positive() { # NAME VALUE
  if ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "step.sh: invalid $1 '$2': use a positive integer" >&2
    exit 2
  fi
}
check_positive REPEATS "$REPEATS"
check_positive THREADS "$THREADS"
check_positive STEPS "$STEPS"
check_positive RUN_TIMEOUT_S "$RUN_TIMEOUT_S"
if ! [[ $WARMUP =~ ^[0-9]+$ ]]; then
  echo "step.sh: invalid WARMUP '$WARMUP': use 0 or a positive integer" >&2
  exit 2
fi
if [[ $FULL_06B != 0 && $FULL_06B != 1 ]]; then
  echo "step.sh: invalid FULL_06B '$FULL_06B': use 0 or 1" >&2
  exit 2
fi

# One configuration per line: name, shape, mode, batch, seq, extra ringtune flags, extra
# torch flags, and the name of the configuration whose torch run it shares ("-": its own).
# Flags inside a field are separated by commas, and "-" means none.
CONFIGS="tiny_full tiny full 4 256 - - -
tiny_lora tiny lora 4 256 - - -
tiny_lora-all tiny lora 4 256 --lora-targets,all --lora-targets,all -
small_full small full 4 256 - - -
small_lora small lora 4 256 - - -
0.6b_lora qwen3-0.6b lora 1 128 - - -
0.6b_lora-bf16 qwen3-0.6b lora 1 128 --frozen-bf16 - 0.6b_lora"
if [[ $FULL_06B == 1 ]]; then
  CONFIGS+=$'\n'"0.6b_full qwen3-0.6b full 1 128 - - -"
fi
if [[ -n ${ONLY:-} ]]; then
  SELECTED=""
  while read -r LINE; do
    if [[ ${LINE%% *} =~ $ONLY ]]; then
      SELECTED+=${SELECTED:+$'\n'}$LINE
    fi
  done <<<"$CONFIGS"
  if [[ -z $SELECTED ]]; then
    echo "step.sh: ONLY='$ONLY' matches no configuration name. Names: $(cut -d' ' -f1 <<<"$CONFIGS" | tr '\n' ' ')" >&2
    exit 2
  fi
  CONFIGS=$SELECTED
fi

if [[ -z ${RINGTUNE_BIN:-} ]]; then
  make build
  RINGTUNE_BIN=bin/ringtune
fi
if [[ ! -x $RINGTUNE_BIN ]]; then
  echo "step.sh: ringtune binary '$RINGTUNE_BIN' not found or not executable. Unset RINGTUNE_BIN to build bin/ringtune." >&2
  exit 2
fi
export RINGTUNE_LOG_LEVEL=${RINGTUNE_LOG_LEVEL:-info}

RESULTS_DIR=$PEERS_DIR/results/step-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
CPU_MODEL=$(grep -m 1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uname -srm: $(uname -srm)"
  echo "nproc: $(nproc)"
  echo "CPU model: ${CPU_MODEL:-unknown (no model name line in /proc/cpuinfo)}"
  echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "ringtune commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "repeats: $REPEATS; threads: $THREADS; warm-up steps: $WARMUP; timed steps: $STEPS"
  echo "configurations: $(cut -d' ' -f1 <<<"$CONFIGS" | tr '\n' ' ')"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS_DIR/machine.txt"
echo "step.sh: writing results to $RESULTS_DIR" >&2

FAILED_RUNS=()

# Runs one benchmark: run_one NAME COMMAND..., with stdout to NAME.json and stderr to NAME.log.
# timeout(1) sends SIGTERM after RUN_TIMEOUT_S and SIGKILL 30 s later.
run_one() {
  local name=$1
  shift
  local start status=0
  start=$(date +%s)
  timeout -k 30 "$RUN_TIMEOUT_S" "$@" </dev/null >"$RESULTS_DIR/$name.json" 2>"$RESULTS_DIR/$name.log" || status=$?
  if ((status == 0)); then
    echo "step.sh: [$(date -u +%H:%M:%S)] $name finished in $(($(date +%s) - start)) s (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  else
    echo "step.sh: [$(date -u +%H:%M:%S)] $name failed with exit status $status. See $RESULTS_DIR/$name.log" >&2
    FAILED_RUNS+=("$name")
  fi
}

# Splits a comma-separated flag field into the array EXTRA ("-" gives none).
split_flags() {
  EXTRA=()
  if [[ $1 != - ]]; then
    IFS=, read -r -a EXTRA <<<"$1"
  fi
}

run_ringtune() { # NAME SHAPE MODE BATCH SEQ FLAGS REPEAT
  split_flags "$6"
  run_one "${1}_ringtune_r$7" "$RINGTUNE_BIN" bench step --shape "$2" --mode "$3" --batch "$4" --seq "$5" \
    --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" "${EXTRA[@]}" --json
}

run_torch() { # NAME SHAPE MODE BATCH SEQ FLAGS REPEAT
  split_flags "$6"
  run_one "${1}_torch_r$7" "$PYTHON" "$PEERS_DIR/torch_train_step.py" --shape "$2" --mode "$3" --batch "$4" \
    --seq "$5" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" "${EXTRA[@]}" --json
}

for REPEAT in $(seq "$REPEATS"); do
  while read -r NAME SHAPE MODE BATCH SEQ RT_FLAGS TORCH_FLAGS TORCH_OF; do
    if [[ $TORCH_OF != - ]]; then
      run_ringtune "$NAME" "$SHAPE" "$MODE" "$BATCH" "$SEQ" "$RT_FLAGS" "$REPEAT"
      continue
    fi
    if ((REPEAT % 2 == 1)); then
      run_ringtune "$NAME" "$SHAPE" "$MODE" "$BATCH" "$SEQ" "$RT_FLAGS" "$REPEAT"
      run_torch "$NAME" "$SHAPE" "$MODE" "$BATCH" "$SEQ" "$TORCH_FLAGS" "$REPEAT"
    else
      run_torch "$NAME" "$SHAPE" "$MODE" "$BATCH" "$SEQ" "$TORCH_FLAGS" "$REPEAT"
      run_ringtune "$NAME" "$SHAPE" "$MODE" "$BATCH" "$SEQ" "$RT_FLAGS" "$REPEAT"
    fi
  done <<<"$CONFIGS"
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS_DIR/machine.txt"

# The summary: medians over repeats, and the median over repeats of each repeat's ratio,
# which pairs runs that went back to back.
"$PYTHON" - "$RESULTS_DIR" "$REPEATS" "$CONFIGS" <<'EOF' | tee "$RESULTS_DIR/summary.md"
import json
import os
import statistics
import sys

results_dir, repeats, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
GIB = 1 << 30


def load(name, impl, repeat):
    """Return the JSON result of one run, or None when the run failed."""
    path = os.path.join(results_dir, f"{name}_{impl}_r{repeat}.json")
    try:
        with open(path) as f:
            result = json.loads(f.read())
        return result if result.get("tokens_per_s", 0) > 0 else None
    except (OSError, ValueError):
        return None


def spread(values, fmt):
    """Format the median, with (min–max) over more than one value, or "—" for none."""
    if not values:
        return "—"
    text = fmt.format(statistics.median(values))
    if len(values) > 1:
        text += " (" + fmt.format(min(values)) + "–" + fmt.format(max(values)) + ")"
    return text


print(f"Median over {repeats} repeat(s), (min–max) with more than one. A ratio is ringtune : torch, "
      "the median of the per-repeat ratios of back-to-back runs: above 1 for tokens/s means "
      "ringtune is faster, below 1 for peak RSS means it uses less memory.")
print()
print("| configuration | batch × seq | ringtune tokens/s | torch tokens/s | tokens/s ratio "
      "| ringtune peak RSS GiB | torch peak RSS GiB | RSS ratio |")
print("|---|---|--:|--:|--:|--:|--:|--:|")
for line in configs.splitlines():
    name, shape, mode, batch, seq, rt_flags, torch_flags, torch_of = line.split()
    torch_name = name if torch_of == "-" else torch_of
    rt, torch, speed_ratios, rss_ratios = [], [], [], []
    for repeat in range(1, repeats + 1):
        a, b = load(name, "ringtune", repeat), load(torch_name, "torch", repeat)
        if a:
            rt.append(a)
        if b:
            torch.append(b)
        if a and b:
            speed_ratios.append(a["tokens_per_s"] / b["tokens_per_s"])
            rss_ratios.append(a["peak_rss_bytes"] / b["peak_rss_bytes"])
    label = f"{shape} {mode}"
    if rt_flags != "-":
        label += " " + rt_flags.replace(",", " ")
    if torch_of != "-":
        label += f" (torch: {torch_of})"
    print(f"| {label} | {batch} × {seq} "
          f"| {spread([r['tokens_per_s'] for r in rt], '{:.1f}')} "
          f"| {spread([r['tokens_per_s'] for r in torch], '{:.1f}')} "
          f"| {spread(speed_ratios, '{:.2f}')} "
          f"| {spread([r['peak_rss_bytes'] / GIB for r in rt], '{:.2f}')} "
          f"| {spread([r['peak_rss_bytes'] / GIB for r in torch], '{:.2f}')} "
          f"| {spread(rss_ratios, '{:.2f}')} |")
EOF

if ((${#FAILED_RUNS[@]} > 0)); then
  echo "step.sh: ${#FAILED_RUNS[@]} run(s) failed: ${FAILED_RUNS[*]}" >&2
  exit 1
fi
