#!/usr/bin/env bash
# Installs what qforge needs from Debian's packages; installs only what is missing, so it is
# cheap to run again. Needs root (or sudo) when something is missing.
set -euo pipefail
packages=(g++ cmake make libxtensor-dev libxsimd-dev libboost-test-dev libbenchmark-dev doxygen
          clang libclang-rt-dev python3 python3-venv python3-pip unzip libpcre2-dev pkg-config libcli11-dev libopenblas0)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: all present"
fi
# CUDA is optional: the toolkit's nvcc is used when found here
if [ -x /usr/local/cuda/bin/nvcc ]; then echo "deps: nvcc $(/usr/local/cuda/bin/nvcc --version | tail -1)"; fi
