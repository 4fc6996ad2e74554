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
#   llama.cpp's type mixes (qforge convert --mix): every tensor of the type llama-quantize gives it
#   (SmolLM2: Q4_K_M, Q3_K_M, Q2_K; stories260K: all ten), and llama.cpp runs SmolLM2's Q4_K_M.
#   qforge imatrix: the gguf package reads it, its legacy .dat agrees, llama-quantize uses it, and
#   qforge's RTN with it (convert --outtype q4_0 --imatrix) writes llama-quantize's Q4_0 bytes.
#   GPTQ/AWQ checkpoint directories (--format gptq|awq): the safetensors package reads them and the
#   reference unpacking of every layer equals what qforge imports (tests/peer/hf_checkpoint.py);
#   such a directory with a tokenizer.json becomes a GGUF whose tokenizer keys are SmolLM2's own
#   (tests/peer/tokenizer_json.py) and which llama.cpp runs.
# Two parts, two ctests that CI's two cores run side by side (the whole took 175 s after the
# 272 s environment build, the longest chain of the release stage): PART "convert" (F32, the
# mixes, the imatrix, Q8_0, stories260K) and "calibrated" (RTN/GPTQ exports, the GPTQ/AWQ
# checkpoint directories, tokenizer.json).
# Usage: run_export_peer.sh SOURCE_DIR QFORGE_BINARY TEST_GGUF_BINARY PEER_LOGITS_BINARY DATA_DIR PART
set -euo pipefail
src=$1
qforge=$2
gguf_bin=$3
logits_bin=$4
data=$5
part=$6
case $part in convert|calibrated) ;; *) echo "usage: $0 SOURCE_DIR QFORGE TEST_GGUF PEER_LOGITS DATA_DIR convert|calibrated (got '$part')" >&2; exit 2;; esac
source "$src/tests/peer/env.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
text=$data/eval/wikitext-2-raw/wiki.test.raw
check() {  # FILE LIMIT_KLD [REFERENCE]
  "$python" "$src/tests/peer/gguf_dequant.py" "$1" "$work/dump"
  QFORGE_GGUF_PEER_DIR=$work/dump QFORGE_GGUF_PEER_FILE=$1 "$gguf_bin" --run_test=test_gguf/gguf_matches_gguf_py --log_level=message
  rm -rf "$work/dump"
  "$python" "$src/tests/peer/llamacpp_export.py" "$1" "$text" 128 "$logits_bin" "$2" ${3:+"$3"}
}
if [ "$part" = convert ]; then
# F32: also against the gguf package's own F32 copy of the same model, in llama.cpp
"$qforge" convert --model "$model" --outtype f32 --format gguf --out "$work/f32.gguf"
"$python" "$src/tests/peer/gguf_to_f32.py" "$model" "$work/f32_gguf_py.gguf"
check "$work/f32.gguf" 1e-3 "$work/f32_gguf_py.gguf"
rm "$work/f32_gguf_py.gguf"
# llama.cpp's type mixes: each tensor the type llama-quantize gives it (from the same F32 file),
# and llama.cpp runs qforge's Q4_K_M
mkdir "$work/mixes"
for mix in q4_k_m q3_k_m q2_k; do
  "$qforge" convert --model "$model" --mix $mix --format gguf --out "$work/mixes/$mix.gguf"
done
"$python" "$src/tests/peer/llamacpp_types.py" "$work/f32.gguf" "$work/mixes" q4_k_m q3_k_m q2_k
check "$work/mixes/q4_k_m.gguf" 0.01
# qforge's importance matrix: the gguf package reads it, the legacy .dat agrees, llama-quantize uses it
"$qforge" imatrix --model "$model" --calib-tokens 1024 --out "$work/imatrix.gguf"
"$qforge" imatrix --model "$model" --calib-tokens 1024 --format dat --out "$work/imatrix.dat"
"$qforge" convert --model "$model" --outtype q4_0 --imatrix "$work/imatrix.dat" --format gguf --out "$work/q4_0_imatrix.gguf"
"$python" "$src/tests/peer/llamacpp_imatrix.py" "$work/imatrix.gguf" "$work/imatrix.dat" "$work/f32.gguf" "$work/q4_0_imatrix.gguf"
rm -rf "$work/mixes" "$work/f32.gguf" "$work/imatrix.gguf" "$work/imatrix.dat" "$work/q4_0_imatrix.gguf"
"$qforge" convert --model "$model" --outtype q8_0 --format gguf --out "$work/q8_0.gguf"
check "$work/q8_0.gguf" 0.01
rm "$work/q8_0.gguf"
fi

if [ "$part" = calibrated ]; then
"$qforge" quantize --model "$model" --scheme rtn:q4_0 --format gguf --out "$work/rtn_q4_0.gguf"
check "$work/rtn_q4_0.gguf" 0.01
"$qforge" quantize --model "$model" --scheme gptq:q4_1,act,static --calib-tokens 512 --format gguf --out "$work/gptq_q4_1.gguf"
check "$work/gptq_q4_1.gguf" 0.01
rm "$work/gptq_q4_1.gguf"
"$qforge" quantize --model "$model" --scheme gptq:q4_k --calib-tokens 512 --format gguf --out "$work/gptq_q4_k.gguf"
check "$work/gptq_q4_k.gguf" 0.01
# GPTQ and AWQ checkpoint directories: the safetensors package reads them, every layer
# dequantized as AutoGPTQ's/AutoAWQ's reference code unpacks it equals qforge's import
"$qforge" quantize --model "$model" --scheme gptq:w4g64s,act --calib-tokens 512 --format gptq --out "$work/gptq"
"$qforge" quantize --model "$model" --scheme awq:w4g64a --calib-tokens 512 --format awq --out "$work/awq"
# a directory exported from a GGUF carries no tokenizer: said so, with the remedy
if "$qforge" ppl --model "$work/gptq" --max-tokens 64 > /dev/null 2> "$work/err"; then echo "FAIL: a directory without a tokenizer was accepted"; exit 1; fi
grep -qF "has no tokenizer.json" "$work/err" && grep -qF "pass --tokenizer" "$work/err" || { echo "FAIL: $(cat "$work/err")"; exit 1; }
for ck in gptq awq; do
  "$qforge" convert --model "$work/$ck" --tokenizer "$model" --outtype f32 --format gguf --out "$work/${ck}_f32.gguf" > /dev/null
  "$python" "$src/tests/peer/hf_checkpoint.py" "$work/$ck" "$work/${ck}_f32.gguf"
  rm -rf "$work/$ck" "$work/${ck}_f32.gguf"
done
# a Hugging Face directory's tokenizer.json into GGUF (SmolLM2's vocabulary as the tokenizers
# package writes it): the tokenizer keys equal the original GGUF's, llama.cpp tokenizes alike and
# runs the file
"$qforge" quantize --model "$model" --scheme rtn:w4g64s --format gptq --out "$work/hf" > /dev/null
"$python" "$src/tests/peer/tokenizer_json.py" make "$model" "$work/hf"
"$qforge" convert --model "$work/hf" --format gguf --outtype q8_0 --out "$work/hf.gguf"
"$python" "$src/tests/peer/tokenizer_json.py" compare "$model" "$work/hf.gguf" 100 "$text" "$data/eval/flores200/devtest/zho_Hans.devtest" \
  "$data/eval/flores200/devtest/hin_Deva.devtest"
check "$work/hf.gguf" 0.01
rm -rf "$work/hf" "$work/hf.gguf"
fi

if [ "$part" = convert ]; then
"$qforge" quantize --model "$data/models/stories260K/stories260K.bin" --scheme rtn:q4_0 --format gguf --out "$work/stories.gguf" 2> "$work/stories.err"
cat "$work/stories.err"
grep -q "fallback: blk.0.ffn_down.weight: 172 columns" "$work/stories.err"
check "$work/stories.gguf" 0.01
# every mix on stories260K (5 blocks, 2 query heads per kv head, rows of 64 and 172: a fallback
# for nearly every tensor), types only
mkdir "$work/mixes"
"$qforge" convert --model "$data/models/stories260K/stories260K.bin" --outtype f32 --format gguf --out "$work/stories_f32.gguf"
mixes=(q2_k q2_k_s q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k)
for mix in "${mixes[@]}"; do
  "$qforge" convert --model "$data/models/stories260K/stories260K.bin" --mix $mix --format gguf --out "$work/mixes/$mix.gguf" 2>/dev/null
done
"$python" "$src/tests/peer/llamacpp_types.py" "$work/stories_f32.gguf" "$work/mixes" "${mixes[@]}"
fi
echo "peer.gguf_export ($part): passed"
