#!/usr/bin/env bash
# Peer test: llama.cpp's `gguf` Python package dequantizes every SmolLM2 tensor, and qforge's
# reader must give the same floats bit for bit. Usage: run_gguf_peer.sh SOURCE_DIR TEST_BINARY
set -euo pipefail
src=$1
bin=$2
source "$src/tests/peer/env.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$python" "$src/tests/peer/gguf_dequant.py" "$model" "$out"
QFORGE_GGUF_PEER_DIR=$out QFORGE_SMOLLM2=$model "$bin" --run_test=smollm2_matches_gguf_py --log_level=test_suite
