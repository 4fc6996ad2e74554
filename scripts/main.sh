#!/usr/bin/env bash
# The main job: install what is needed, build (Release), and print the weight-error table of
# RTN schemes on the default real checkpoint. Extra arguments go to `qforge weights`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DQFORGE_BUILD_TESTS=OFF -DQFORGE_BUILD_BENCH=OFF \
      -DQFORGE_BUILD_DOCS=OFF >/dev/null
cmake --build build/release --target qforge_cli -j"$(nproc)"
./build/release/examples/qforge weights "$@"
