#!/usr/bin/env bash
# The main job: install what is needed, build (Release), fetch SmolLM2-135M-Instruct (Q4_1 GGUF)
# into the cache, and print its quality table: `qforge eval` over about 16K WikiText-2 tokens at
# context 512, RTN schemes against the Q4_1-ref model (a few minutes on 2 cores). Extra arguments
# go to `qforge eval` (e.g. --scheme rtn:w4g32a --max-tokens 4096).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
model=$(bash scripts/fetch-models.sh)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DQFORGE_BUILD_TESTS=OFF -DQFORGE_BUILD_BENCH=OFF \
      -DQFORGE_BUILD_DOCS=OFF >/dev/null
cmake --build build/release --target qforge_cli -j"$(nproc)"
./build/release/examples/qforge eval --model "$model" "$@"
