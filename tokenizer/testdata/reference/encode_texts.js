#!/usr/bin/env node
// Reads a JSON array of strings on stdin and writes a JSON array of
// {"ids": [...], "hf_ids": [...]} on stdout, one entry per string: ids from
// transformers.js and hf_ids from Hugging Face tokenizers, both without added special
// tokens. gen_chat_fixtures.py pipes the rendered chats through it.
"use strict";

const fs = require("fs");
const reference = require("./qwen3_reference.js");

async function main() {
  const texts = JSON.parse(fs.readFileSync(0, "utf8"));
  if (!Array.isArray(texts) || !texts.every((t) => typeof t === "string")) {
    throw new Error("stdin must be a JSON array of strings");
  }
  const js = reference.loadTransformersJS();
  const hf = reference.loadHuggingFace();
  const out = [];
  for (const text of texts) {
    out.push({
      ids: reference.encodeTransformersJS(js, text),
      hf_ids: await reference.encodeHuggingFace(hf, text),
    });
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  console.error(`encode_texts.js: ${err.message}`);
  process.exit(1);
});
