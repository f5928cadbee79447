#!/usr/bin/env node
// Measures how fast a reference tokenizer encodes a text file.
//
//   RINGTUNE_WRITE_BENCH_TEXT=/tmp/bench.txt go test ./tokenizer -run TestWriteBenchText
//   node tokenizer/testdata/reference/bench_encode.js /tmp/bench.txt [RUNS] [--impl=NAME]
//
// RUNS (default 5) is the number of timed encodes, after one untimed warm-up encode.
// NAME is transformers.js (default) or huggingface (the Rust tokenizers through Node
// bindings, which may use several threads). Prints one JSON object:
//   {"impl", "bytes", "runs", "tokens", "seconds_median", "tokens_per_s"}
// tokens_per_s is tokens divided by the median wall-clock time of one encode.
"use strict";

const fs = require("fs");
const reference = require("./qwen3_reference.js");

function usage(message) {
  console.error(`bench_encode.js: ${message}`);
  console.error("usage: node bench_encode.js TEXT_FILE [RUNS] [--impl=transformers.js|huggingface]");
  process.exit(2);
}

function parseArgs(argv) {
  const positional = [];
  let impl = "transformers.js";
  for (const arg of argv) {
    if (arg.startsWith("--impl=")) {
      impl = arg.slice("--impl=".length);
    } else if (arg.startsWith("--")) {
      usage(`unknown option ${arg}`);
    } else {
      positional.push(arg);
    }
  }
  if (positional.length < 1 || positional.length > 2) usage("expected a text file and an optional run count");
  if (impl !== "transformers.js" && impl !== "huggingface") usage(`unknown --impl ${impl}`);
  const runs = positional.length === 2 ? Number(positional[1]) : 5;
  if (!Number.isInteger(runs) || runs < 1) usage(`invalid RUNS ${positional[1]}: use a positive integer`);
  return { file: positional[0], runs, impl };
}

function loadEncoder(impl) {
  if (impl === "huggingface") {
    const tokenizer = reference.loadHuggingFace();
    return (text) => reference.encodeHuggingFace(tokenizer, text);
  }
  const tokenizer = reference.loadTransformersJS();
  return async (text) => reference.encodeTransformersJS(tokenizer, text);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function main() {
  const { file, runs, impl } = parseArgs(process.argv.slice(2));
  const text = fs.readFileSync(file, "utf8");
  const encode = loadEncoder(impl);

  const tokens = (await encode(text)).length; // warm-up
  const seconds = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    const ids = await encode(text);
    seconds.push(Number(process.hrtime.bigint() - start) / 1e9);
    if (ids.length !== tokens) throw new Error(`run ${i} returned ${ids.length} tokens, the warm-up ${tokens}`);
  }
  const secondsMedian = median(seconds);
  console.log(
    JSON.stringify({
      impl,
      bytes: Buffer.byteLength(text, "utf8"),
      runs,
      tokens,
      seconds_median: secondsMedian,
      tokens_per_s: tokens / secondsMedian,
    }),
  );
}

main().catch((err) => {
  console.error(`bench_encode.js: ${err.message}`);
  process.exit(1);
});
