#!/usr/bin/env bash
# Peer test of qforge's GGUF export: files written by `qforge convert` / `qforge quantize --format
# gguf` are read by the `gguf` package (every tensor dequantizes to what qforge reads, bit for
# bit) and run by llama.cpp (llama-cpp-python: it loads them, generates, and its next-token
# distributions on WikiText-2 agree with qforge's forward of the same file).
#   SmolLM2 as F32 (KLD < 1e-3: no activation quantization on either side), as Q8_0 and as
#   rtn:q4_0, gptq:q4_1 and gptq:q4_k exports (KLD < 0.01: each side quantizes activations its own
#   way; q4_k: SmolLM2's 576-wide rows take Q5_0, llama-quantize's fallback, its ffn_down Q4_K);
#   stories260K (llama2.c: its SentencePiece vocabulary written by qforge, F16 fallbacks for its
#   172-wide rows) as rtn:q4_0.
# Usage: run_export_peer.sh SOURCE_DIR QFORGE_BINARY TEST_GGUF_BINARY PEER_LOGITS_BINARY DATA_DIR
set -euo pipefail
src=$1
qforge=$2
gguf_bin=$3
logits_bin=$4
data=$5
source "$src/tests/peer/env.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
text=$data/eval/wikitext-2-raw/wiki.test.raw
check() {  # FILE LIMIT_KLD [REFERENCE]
  "$python" "$src/tests/peer/gguf_dequant.py" "$1" "$work/dump"
  QFORGE_GGUF_PEER_DIR=$work/dump QFORGE_GGUF_PEER_FILE=$1 "$gguf_bin" --run_test=gguf_matches_gguf_py --log_level=message
  rm -rf "$work/dump"
  "$python" "$src/tests/peer/llamacpp_export.py" "$1" "$text" 128 "$logits_bin" "$2" ${3:+"$3"}
}
# F32: also against the gguf package's own F32 copy of the same model, in llama.cpp
"$qforge" convert --model "$model" --outtype f32 --format gguf --out "$work/f32.gguf"
"$python" "$src/tests/peer/gguf_to_f32.py" "$model" "$work/f32_gguf_py.gguf"
check "$work/f32.gguf" 1e-3 "$work/f32_gguf_py.gguf"
rm "$work/f32.gguf" "$work/f32_gguf_py.gguf"
"$qforge" convert --model "$model" --outtype q8_0 --format gguf --out "$work/q8_0.gguf"
check "$work/q8_0.gguf" 0.01
"$qforge" quantize --model "$model" --scheme rtn:q4_0 --format gguf --out "$work/rtn_q4_0.gguf"
check "$work/rtn_q4_0.gguf" 0.01
"$qforge" quantize --model "$model" --scheme gptq:q4_1,act,static --calib-tokens 512 --format gguf --out "$work/gptq_q4_1.gguf"
check "$work/gptq_q4_1.gguf" 0.01
rm "$work/gptq_q4_1.gguf"
"$qforge" quantize --model "$model" --scheme gptq:q4_k --calib-tokens 512 --format gguf --out "$work/gptq_q4_k.gguf"
check "$work/gptq_q4_k.gguf" 0.01
"$qforge" quantize --model "$data/models/stories260K/stories260K.bin" --scheme rtn:q4_0 --format gguf --out "$work/stories.gguf" 2> "$work/stories.err"
cat "$work/stories.err"
grep -q "fallback: blk.0.ffn_down.weight: 172 columns" "$work/stories.err"
check "$work/stories.gguf" 0.01
