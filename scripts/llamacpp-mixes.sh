#!/usr/bin/env bash
# llama.cpp's own type mixes of SmolLM2-135M, evaluated by qforge on the same tokens as its own
# schemes (docs/mixed.md). Steps:
#   1. builds llama-quantize from the llama.cpp sources that llama-cpp-python 0.3.36 vendors (the
#      version the peer tests pin), once, into $QFORGE_CACHE/llama.cpp-0.3.36;
#   2. writes the importance matrix of the reference with `qforge imatrix` on the calibration
#      tokens `qforge eval --max-tokens 4096` uses (the 2048 tokens after the scored 4096);
#   3. quantizes the Q4_1 file with llama-quantize --allow-requantize --imatrix (it dequantizes
#      the Q4_1 weights first, so it starts from the reference's values, as qforge does) to each type;
#   4. `qforge eval --compare` on every file (block linears as llama.cpp wrote them; embeddings,
#      norms and head the reference's, as in qforge's rows), with the schemes given after `--`.
# Usage: scripts/llamacpp-mixes.sh QFORGE_BINARY OUT_DIR [TYPE ...] [-- qforge-eval-options ...]
# (types default: Q2_K Q3_K_M Q4_K_M Q5_K_M IQ2_M IQ3_XXS IQ3_M IQ4_XS). Prints eval's table (or its
# JSON with --json after `--`). Needs cmake and a C++ compiler; minutes on 2 cores the first time.
set -euo pipefail
qforge=$(realpath "$1")
out=$2
shift 2
types=()
while (($#)) && [ "$1" != "--" ]; do types+=("$1"); shift; done
(($#)) && shift
((${#types[@]})) || types=(Q2_K Q3_K_M Q4_K_M Q5_K_M IQ2_M IQ3_XXS IQ3_M IQ4_XS)
cache=${QFORGE_CACHE:-$HOME/.cache/qforge}
model=$(bash "$(dirname "$0")/fetch-models.sh")
mkdir -p "$out" "$cache"

tools=$cache/llama.cpp-0.3.36
quantize=$tools/build/bin/llama-quantize
if [ ! -x "$quantize" ]; then
  exec 7>"$cache/.llamacpp-tools.lock"
  flock 7
  if [ ! -x "$quantize" ]; then
    work=$(mktemp -d "$cache/llama.cpp-build.XXXXXX")
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$work" >&2
    tar xzf "$work"/llama_cpp_python-0.3.36.tar.gz -C "$work"
    # no AMX: see tests/peer/setup_env.sh (ggml's native build died on SIGILL in these VMs)
    cmake -S "$work/llama_cpp_python-0.3.36/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
          -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF \
          "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" >&2
    cmake --build "$work/build" --target llama-quantize -j"$(nproc)" >&2
    rm -rf "$tools"
    mkdir -p "$tools/build/bin"
    cp "$work/build/bin/llama-quantize" "$tools/build/bin/llama-quantize.part"
    mv "$tools/build/bin/llama-quantize.part" "$quantize"
    rm -rf "$work"
  fi
fi

imatrix=$out/smollm2.imatrix.gguf
if [ ! -s "$imatrix" ]; then
  "$qforge" imatrix --model "$model" --calib-skip 4096 --calib-tokens 2048 --out "$imatrix" >&2
fi
compare=()
for t in "${types[@]}"; do
  f=$out/smollm2-$t.gguf
  if [ ! -s "$f" ]; then
    "$quantize" --allow-requantize --imatrix "$imatrix" "$model" "$f.part" "$t" > "$f.log" 2>&1 || { tail -20 "$f.log" >&2; exit 1; }
    mv "$f.part" "$f"
  fi
  compare+=(--compare "$f")
done
"$qforge" eval --model "$model" --max-tokens 4096 --calib-tokens 2048 "${compare[@]}" "$@"
