#!/usr/bin/env bash
# Installs what dsa needs to build and test (Debian/Ubuntu), then configures and builds into build/.
# Packages already present are not reinstalled; without root or apt-get it only checks and builds.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="cmake make gcc g++ libhdf5-dev hdf5-tools libopenmpi-dev openmpi-bin python3 python3-torch python3-h5py python3-numpy"
missing=""
for p in $PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    # A machine without a package mirror (an offline GPU host) still builds with what it has.
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
      echo "setup: could not install$missing; building with what is installed" >&2
    fi
  else
    echo "setup: missing packages:$missing (need root + apt-get to install them); trying to build anyway" >&2
  fi
fi

# nvcc is used when present (CUDA toolkit in /usr/local/cuda); the CPU build works without it.
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
BUILD_DIR="${DSA_BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${DSA_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "setup: built $BUILD_DIR/dsa"
