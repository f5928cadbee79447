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
# Environment:
#   RINGTUNE_DEBIAN_MIRROR   Debian mirror (default: the first Debian archive in the
#                            system's apt sources that is not a security archive)
#   RINGTUNE_DEBIAN_KEYRING  keyring that signs it (default /usr/share/keyrings/debian-archive-keyring.gpg)
set -euo pipefail

cache="${RINGTUNE_CACHE:-${HOME}/.cache/ringtune}"
prefix="${1:-${cache}/nvrtc}"
mirror="${RINGTUNE_DEBIAN_MIRROR:-}"
if [[ -z "${mirror}" ]]; then
  # deb822 sources (URIs: ...) first, then one-line sources (deb URI suite ...).
  mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
  if [[ -z "${mirror}" ]]; then
    mirror="$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | sed -E 's/\[[^]]*\] //' | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
  fi
  if [[ -z "${mirror}" ]]; then
    echo "install-nvrtc.sh: no Debian archive found in the apt sources: set RINGTUNE_DEBIAN_MIRROR to a Debian mirror URL." >&2
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
apt-get "${apt_options[@]}" -q update >&2
(cd "${work}/debs" && apt-get "${apt_options[@]}" -q download "${packages[@]}" >&2)

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
echo "install-nvrtc.sh: installed $(basename "${prefix}"/lib/libnvrtc.so.*) into ${prefix}/lib" >&2
echo "${prefix}/lib"
