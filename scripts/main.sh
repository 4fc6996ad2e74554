#!/usr/bin/env bash
# The main job: install what is needed, build (Release), fetch SmolLM2-135M-Instruct (Q4_1 GGUF)
# into the cache, and print its quality table: `qforge eval` over 4096 WikiText-2 tokens at
# context 512, RTN, GPTQ (act-order, damping 0.1: see the README) and AWQ at 4 and 3 bits (groups of 128: not aligned with the
# reference's Q4_1 groups of 32) against the Q4_1-ref model, GPTQ and AWQ calibrated on 2048 tokens
# of the text after the evaluated slice (about 5 minutes on 2 cores). Arguments, when given,
# replace these and go to `qforge eval` (e.g. --scheme rtn:w4g32a --max-tokens 16384).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
model=$(bash scripts/fetch-models.sh)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DQFORGE_BUILD_TESTS=OFF -DQFORGE_BUILD_BENCH=OFF \
      -DQFORGE_BUILD_DOCS=OFF >/dev/null
cmake --build build/release --target qforge_cli -j"$(nproc)"
if [ $# -eq 0 ]; then
  set -- --max-tokens 4096 --calib-tokens 2048 \
    --scheme rtn:w4g128a --scheme gptq:w4g128a,act,damp=0.1 --scheme awq:w4g128a \
    --scheme rtn:w3g128a --scheme gptq:w3g128a,act,damp=0.1 --scheme awq:w3g128a
fi
./build/release/examples/qforge eval --model "$model" "$@"
