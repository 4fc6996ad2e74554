#!/usr/bin/env bash
# SmolLM2-135M prompt processing and decode speed, llama.cpp's llama-bench next to qforge's
# bench_model, in one session on the same machine and thread count (issue #14).
#
# llama.cpp is built from the sources inside the llama-cpp-python source package that the peer
# tests pin (vendor/llama.cpp; its commit is printed), CPU only, for this machine (GGML_NATIVE).
# Its llama-quantize makes Q4_0, F32, Q8_0 and Q4_K_M files from the cached Q4_1 GGUF (--allow-requantize:
# the Q4_1 values dequantized and rounded again; speed is what is compared here, not quality).
# qforge's bench_model then runs its own variants and those files as stored (Q4_K_M: its Q5_0,
# Q4_K and Q6_K tensors in place: prompts through their kernel form, formats/gguf_kq.hpp; decode over
# row panels kept in each type's own 4-6 bits, backends/panel.hpp).
#
# Usage: bench/llamacpp_side_by_side.sh [BUILD_DIR]   (BUILD_DIR: where bench_model is built,
# default build/ci-release). Env: QFORGE_THREADS (default 2), QFORGE_BENCH_PROMPT (512),
# QFORGE_BENCH_DECODE (128), QFORGE_CACHE (default ~/.cache/qforge). Takes about 15 minutes on
# 2 cores the first time (the llama.cpp build), a few minutes after.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/ci-release}
threads=${QFORGE_THREADS:-2}
prompt=${QFORGE_BENCH_PROMPT:-512}
decode=${QFORGE_BENCH_DECODE:-128}
cache=${QFORGE_CACHE:-$HOME/.cache/qforge}
version=0.3.36  # the llama-cpp-python of tests/peer/setup_env.sh
src="$cache/llama-cpp-python-$version"
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"

[ -x "$build/bench/bench_model" ] || { echo "no $build/bench/bench_model: build qforge first (scripts/test.sh)" >&2; exit 1; }
[ -f "$model" ] || bash scripts/fetch-models.sh

if [ ! -d "$src/vendor/llama.cpp" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$tmp"
  mkdir -p "$src.partial"
  tar xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$src.partial" --strip-components=1
  rm -rf "$tmp"
  mv "$src.partial" "$src"
fi
llama="$src/vendor/llama.cpp"
lbuild="$src/build-cpu"
if [ ! -x "$lbuild/bin/llama-bench" ] || [ ! -x "$lbuild/bin/llama-quantize" ]; then
  cmake -S "$llama" -B "$lbuild" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF >/dev/null
  cmake --build "$lbuild" --target llama-bench llama-quantize -j"$(nproc)" >/dev/null
fi
commit=$(git -C "$llama" rev-parse --short HEAD 2>/dev/null || echo "unknown (no .git in the package)")

for t in Q4_0 F32 Q8_0 Q4_K_M; do
  out="$cache/SmolLM2-135M-Instruct.$t.gguf"
  if [ ! -f "$out" ]; then
    "$lbuild/bin/llama-quantize" --allow-requantize "$model" "$out.partial" "$t" >/dev/null 2>&1
    mv "$out.partial" "$out"
  fi
done

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; threads $threads"
echo "llama.cpp: commit $commit (llama-cpp-python $version sdist), $("$lbuild/bin/llama-bench" --version 2>&1 | head -1 || true)"
echo
for t in Q4_0 Q4_1 F32 Q8_0 Q4_K_M; do
  f="$cache/SmolLM2-135M-Instruct.$t.gguf"
  echo "+ llama-bench -m $(basename "$f") -t $threads -p $prompt -n $decode -r 3"
  "$lbuild/bin/llama-bench" -m "$f" -t "$threads" -p "$prompt" -n "$decode" -r 3 -o md 2>/dev/null
done
echo
echo "+ QFORGE_THREADS=$threads QFORGE_BENCH_PROMPT=$prompt QFORGE_BENCH_DECODE=$decode bench_model --benchmark_filter=SmolLM2 --benchmark_repetitions=3 (median)"
QFORGE_THREADS=$threads QFORGE_BENCH_PROMPT=$prompt QFORGE_BENCH_DECODE=$decode \
QFORGE_BENCH_GGUF="$cache/SmolLM2-135M-Instruct.Q4_0.gguf:$cache/SmolLM2-135M-Instruct.F32.gguf:$cache/SmolLM2-135M-Instruct.Q8_0.gguf:$cache/SmolLM2-135M-Instruct.Q4_K_M.gguf" \
  "$build/bench/bench_model" --benchmark_filter=SmolLM2 --benchmark_repetitions=3 2>&1 | sed -n '/^model\/variant/,$p'
