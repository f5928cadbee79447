#!/usr/bin/env bash
# Installs NVRTC, the CUDA runtime compiler, from Debian 12 (bookworm) into a folder
# of its own, without root, a GPU or the CUDA toolkit, so that the NVRTC tests of
# kernels/cuda/internal/cudalib run in CI. It prints that folder on stdout:
#
#   export RINGTUNE_NVRTC_PATH=$(scripts/install-nvrtc.sh)
#
# Usage: install-nvrtc.sh [PREFIX]
#
# PREFIX defaults to $RINGTUNE_CACHE/nvrtc (RINGTUNE_CACHE defaults to ~/.cache/ringtune).
# The libraries land in PREFIX/lib. A second run finds them there and returns at once.
#
# The script uses a private apt configuration under a temporary folder (its own
# sources list, package lists and cache), so the system's sources and package
# database stay untouched. It downloads libnvrtc11.2 and libnvrtc-builtins11.8
# (NVRTC 11.8 in bookworm's non-free component, about 17 MB) with `apt-get download`,
# checks them against the signed Release file as apt always does, and unpacks them
# with `dpkg-deb -x`. It needs apt-get, dpkg-deb and Debian's archive keyring, so it
# runs on Debian, and on Ubuntu with the debian-archive-keyring package installed.
#
# Only a Debian 12 host finds a mirror by itself. On Ubuntu, other Debian releases
# or anywhere else, set RINGTUNE_DEBIAN_MIRROR, such as
# RINGTUNE_DEBIAN_MIRROR=http://deb.debian.org/debian.
#
# Environment:
#   RINGTUNE_DEBIAN_MIRROR   Debian mirror (default: the first Debian archive for
#                            bookworm in the system's apt sources, one-line or deb822:
#                            a URI that ends in /debian, suite bookworm)
#   RINGTUNE_DEBIAN_KEYRING  keyring that signs it (default /usr/share/keyrings/debian-archive-keyring.gpg)
set -euo pipefail

# find_debian_mirror prints the first bookworm archive of Debian in the system's
# apt sources. It skips other archives (security, updates, backports, third-party
# repositories such as nodesource) because their suites or URIs differ.
find_debian_mirror() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "${file}" ]] || continue
    # deb [options] URI suite component...
    sed -E 's/#.*//; s/\[[^]]*\]//' "${file}" | awk '
      $1 == "deb" && $3 == "bookworm" && $2 ~ /\/debian\/?$/ { print $2; exit }'
  done
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -r "${file}" ]] || continue
    # Blank lines separate the stanzas, whose fields read like "URIs: A B" or
    # "Suites: bookworm bookworm-updates". A line that starts with a space
    # continues the field above it.
    awk '
      function flush(   n, i, words) {
        if (found) return
        if (types ~ /(^| )deb( |$)/ && enabled != "no" && suites ~ /(^| )bookworm( |$)/) {
          n = split(uris, words, " ")
          for (i = 1; i <= n; i++) {
            if (words[i] ~ /\/debian\/?$/) { print words[i]; found = 1; exit }
          }
        }
        types = uris = suites = field = ""
        enabled = "yes"
      }
      BEGIN { enabled = "yes" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { value = $0; sub(/^[ \t]+/, "", value); append(value); next }
      {
        field = tolower($0); sub(/:.*/, "", field)
        value = $0; sub(/^[^:]*:[ \t]*/, "", value)
        append(value)
      }
      function append(value) {
        if (field == "types") types = types " " value
        else if (field == "uris") uris = uris " " value
        else if (field == "suites") suites = suites " " value
        else if (field == "enabled") enabled = tolower(value)
      }
      END { flush() }' "${file}"
  done
}

if [[ -n "${RINGTUNE_CACHE:-}" ]]; then
  cache="${RINGTUNE_CACHE}"
elif [[ -n "${HOME:-}" ]]; then
  cache="${HOME}/.cache/ringtune"
elif [[ -z "${1:-}" ]]; then
  echo "install-nvrtc.sh: HOME is not set, so there is no default folder: set RINGTUNE_CACHE or pass PREFIX." >&2
  exit 1
fi
prefix="${1:-${cache}/nvrtc}"
mirror="${RINGTUNE_DEBIAN_MIRROR:-}"
if [[ -z "${mirror}" ]]; then
  mirror="$(find_debian_mirror | head -n1 || true)"
  if [[ -z "${mirror}" ]]; then
    echo "install-nvrtc.sh: no Debian bookworm archive (a URI ending in /debian, suite bookworm) found in the apt sources; set RINGTUNE_DEBIAN_MIRROR to a Debian mirror URL, such as http://deb.debian.org/debian." >&2
    exit 1
  fi
fi
keyring="${RINGTUNE_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
packages=(libnvrtc11.2 libnvrtc-builtins11.8)

# A complete earlier install has both the compiler and its builtins library.
if compgen -G "${prefix}/lib/libnvrtc.so.*" >/dev/null && compgen -G "${prefix}/lib/libnvrtc-builtins.so.*" >/dev/null; then
  echo "${prefix}/lib"
  exit 0
fi

for tool in apt-get dpkg-deb; do
  if ! command -v "${tool}" >/dev/null 2>&1; then
    echo "install-nvrtc.sh: ${tool} not found; this script needs a Debian or Ubuntu host." >&2
    echo "Elsewhere, install NVRTC from the CUDA toolkit and point RINGTUNE_NVRTC_PATH at the folder with libnvrtc.so." >&2
    exit 1
  fi
done
if [[ ! -r "${keyring}" ]]; then
  echo "install-nvrtc.sh: Debian archive keyring ${keyring} not found; install debian-archive-keyring or set RINGTUNE_DEBIAN_KEYRING." >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
mkdir -p "${work}/lists/partial" "${work}/cache/archives/partial" "${work}/debs" "${work}/root" "${work}/empty"
: >"${work}/status"
echo "deb [signed-by=${keyring}] ${mirror} bookworm non-free" >"${work}/sources.list"

# The sources, package lists, status, preferences and cache that apt reads or writes
# are all in ${work}; only the system's apt.conf settings, such as a proxy, still apply.
# APT::Sandbox::User=root keeps apt, when run as root, from downloading as the _apt
# user, who cannot write to ${work}. Debug::NoLocking=1 skips apt's lock files, because
# no other apt process uses ${work}.
apt_options=(
  -o "Dir::Etc::sourcelist=${work}/sources.list"
  -o "Dir::Etc::sourceparts=${work}/empty"
  -o "Dir::Etc::preferences=${work}/preferences"
  -o "Dir::State::Lists=${work}/lists"
  -o "Dir::State::status=${work}/status"
  -o "Dir::Cache=${work}/cache"
  -o "Dir::Etc::preferencesparts=${work}/empty"
  -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1"
)
echo "install-nvrtc.sh: fetching package lists of bookworm non-free from ${mirror}" >&2
# apt-get update can report a failed fetch with a warning and exit 0, so its
# output and the package lists it wrote are checked as well.
update_rc=0
apt-get "${apt_options[@]}" -q update >"${work}/update.log" 2>&1 || update_rc=$?
cat "${work}/update.log" >&2
if [[ ${update_rc} -ne 0 ]] || grep -qE '^(E: |W: Failed to fetch|W: Some index files failed)' "${work}/update.log" \
  || ! compgen -G "${work}/lists/*_non-free_binary-*_Packages*" >/dev/null; then
  echo "install-nvrtc.sh: could not fetch the package lists of bookworm non-free from the mirror ${mirror} (apt-get update exited with ${update_rc}, and its output is above). Check that the mirror is reachable and carries bookworm non-free, or set RINGTUNE_DEBIAN_MIRROR to another Debian mirror." >&2
  exit 1
fi
if ! (cd "${work}/debs" && apt-get "${apt_options[@]}" -q download "${packages[@]}" >&2); then
  echo "install-nvrtc.sh: could not download ${packages[*]} from the mirror ${mirror}. Check that it carries bookworm non-free, or set RINGTUNE_DEBIAN_MIRROR to another Debian mirror." >&2
  exit 1
fi

for deb in "${work}"/debs/*.deb; do
  dpkg-deb -x "${deb}" "${work}/root"
done

# Debian puts the libraries in the multiarch folder, such as usr/lib/x86_64-linux-gnu.
staging="${prefix}.partial.$$"
rm -rf "${staging}"
mkdir -p "${staging}/lib" "${staging}/share"
cp -a "${work}"/root/usr/lib/*/libnvrtc* "${staging}/lib/"
cp -a "${work}/root/usr/share/doc" "${staging}/share/"
if ! compgen -G "${staging}/lib/libnvrtc.so.*" >/dev/null || ! compgen -G "${staging}/lib/libnvrtc-builtins.so.*" >/dev/null; then
  echo "install-nvrtc.sh: the packages ${packages[*]} did not contain libnvrtc.so.* and libnvrtc-builtins.so.*" >&2
  rm -rf "${staging}"
  exit 1
fi

# Replace the folder in one rename so that a reader never sees half an install.
mkdir -p "$(dirname "${prefix}")"
rm -rf "${prefix}"
mv "${staging}" "${prefix}"
# libnvrtc.so.11.2 is the soname, a symlink to the library, such as libnvrtc.so.11.8.89.
library="$(find "${prefix}/lib" -maxdepth 1 -type f -name 'libnvrtc.so.*' -printf '%f\n' | sort -V | tail -n1)"
echo "install-nvrtc.sh: installed ${library} into ${prefix}/lib" >&2
echo "${prefix}/lib"
