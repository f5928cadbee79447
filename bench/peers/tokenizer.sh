#!/usr/bin/env bash
# Times ringtune's tokenizer and the two JavaScript-hosted references on the same 1 MiB of
# mixed text, interleaved, and prints one row per run and the medians.
#
#   bash bench/peers/tokenizer.sh [REPEATS=3]
#
# The references are transformers.js (@lenml/tokenizers 3.7.2) and Hugging Face's Rust
# tokenizers 0.23.2 through its Node bindings; install them with
# `scripts/fetch-tokenizer.sh --with-node-reference`. Every encoder runs on one thread:
# Go with -cpu 1 (GOMAXPROCS=1), the Rust library with RAYON_NUM_THREADS=1.
set -euo pipefail

REPEATS=${1:-3}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO_ROOT"

if ! [[ $REPEATS =~ ^[1-9][0-9]*$ ]]; then
  echo "tokenizer.sh: REPEATS must be a positive integer, got '$REPEATS'" >&2
  exit 2
fi

scripts/fetch-tokenizer.sh --with-node-reference >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
RINGTUNE_WRITE_BENCH_TEXT="$work/bench.txt" go test ./tokenizer -run '^TestWriteBenchText$' -count=1 >/dev/null
go test -c -o "$work/tokenizer.test" ./tokenizer

for r in $(seq "$REPEATS"); do
  go_rows=$("$work/tokenizer.test" -test.run '^$' -test.bench '^BenchmarkEncode$' -test.benchtime 10x -test.cpu 1 | grep '^BenchmarkEncode')
  while read -r name _ _ _ _ _ tps _; do
    echo "{\"repeat\": $r, \"impl\": \"ringtune ${name#BenchmarkEncode/}\", \"tokens_per_s\": $tps}"
  done <<<"$go_rows"
  for impl in transformers.js huggingface; do
    RAYON_NUM_THREADS=1 node tokenizer/testdata/reference/bench_encode.js "$work/bench.txt" 5 --impl="$impl" |
      python3 -c 'import json,sys; row=json.load(sys.stdin); print(json.dumps({"repeat": '"$r"', "impl": row["impl"], "tokens_per_s": row["tokens_per_s"]}))'
  done
done | tee "$work/rows.jsonl"

python3 - "$work/rows.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by_impl = {}
for row in rows:
    by_impl.setdefault(row["impl"], []).append(float(row["tokens_per_s"]))
best_ref = max(statistics.median(v) for k, v in by_impl.items() if not k.startswith("ringtune"))
print("\n| encoder | median tokens/s | vs fastest reference |\n| --- | --- | --- |")
for impl, values in by_impl.items():
    median = statistics.median(values)
    print(f"| {impl} | {median:,.0f} | {median / best_ref:.1f}x |")
PY
