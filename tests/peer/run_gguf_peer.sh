#!/usr/bin/env bash
# Peer test: every tensor qforge dequantizes from a GGUF file equals what llama.cpp's `gguf`
# Python package dequantizes, bit for bit: all of SmolLM2's tensors, and a file of random
# blocks of every type llama-quantize emits (K-quants, Q5_0/Q5_1, i-quants, TQ1_0/TQ2_0) written
# here with the package's own writer. Then qforge's RTN against ggml's own quantizer
# (ggml_quantize_chunk of llama-cpp-python's libggml) on random rows, with and without an importance
# matrix: the 32-weight types block for block, the K-quants measured (ggml_quantize.py).
# Usage: run_gguf_peer.sh SOURCE_DIR TEST_GGUF_BINARY TEST_GGUF_EXPORT_BINARY
set -euo pipefail
src=$1
bin=$2
export_bin=$3
source "$src/tests/peer/env.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$python" "$src/tests/peer/gguf_dequant.py" "$model" "$out/smollm2"
QFORGE_GGUF_PEER_DIR=$out/smollm2 QFORGE_GGUF_PEER_FILE=$model "$bin" --run_test=test_gguf/gguf_matches_gguf_py --log_level=message
"$python" "$src/tests/peer/gguf_kquants.py" "$out/kquants.gguf"
"$python" "$src/tests/peer/gguf_dequant.py" "$out/kquants.gguf" "$out/kquants"
QFORGE_GGUF_PEER_DIR=$out/kquants QFORGE_GGUF_PEER_FILE=$out/kquants.gguf "$bin" --run_test=test_gguf/gguf_matches_gguf_py --log_level=message
"$python" "$src/tests/peer/ggml_quantize.py" "$out/ggml.gguf" 16 768 7
QFORGE_GGML_PEER_FILE=$out/ggml.gguf "$export_bin" --run_test=test_gguf_export/rtn_matches_ggml_blocks --log_level=message
