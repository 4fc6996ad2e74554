#!/usr/bin/env bash
# Peer test against llama.cpp itself (llama-cpp-python, built from source into the cache's
# virtual environment by setup_env.sh). Checks (1) SmolLM2 token ids (byte-level BPE) of 100
# FLORES lines in each of ten languages equal llama.cpp's; (2) the same for the SentencePiece
# tokenizer, with a GGUF written from the 32000-token Llama 2 vocabulary; (3) qforge's next-token
# distributions on WikiText-2 match llama.cpp's on SmolLM2's FP32 weights (Q4_1-ref, written as
# an F32 GGUF): mean KLD < 1e-3 and top-1 agreement >= 99% (llamacpp_logits.py).
# Usage: run_llamacpp_peer.sh SOURCE_DIR TEST_BPE_BINARY TEST_SPM_BINARY PEER_LOGITS_BINARY DATA_DIR
set -euo pipefail
src=$1
bpe_bin=$2
spm_bin=$3
logits_bin=$4
data=$5
source "$src/tests/peer/env.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" "$src/tests/peer/llamacpp_encode.py" "$model" "$data/eval/flores200/devtest" 100 "$work/bpe_ids.txt"
QFORGE_BPE_PEER_IDS=$work/bpe_ids.txt QFORGE_SMOLLM2=$model "$bpe_bin" --run_test=test_bpe/bpe_matches_peer_ids --log_level=message
"$python" "$src/tests/peer/spm_gguf.py" "$data/models/llama2-tokenizer/tokenizer.bin" "$work/spm.gguf"
"$python" "$src/tests/peer/llamacpp_encode.py" "$work/spm.gguf" "$data/eval/flores200/devtest" 100 "$work/spm_ids.txt"
QFORGE_SPM_PEER_IDS=$work/spm_ids.txt QFORGE_SPM_GGUF=$work/spm.gguf QFORGE_DATA=$data "$spm_bin" --run_test=test_spm/spm_matches_peer_ids \
  --log_level=message
"$python" "$src/tests/peer/gguf_to_f32.py" "$model" "$work/smollm2_f32.gguf"
"$python" "$src/tests/peer/llamacpp_logits.py" "$model" "$work/smollm2_f32.gguf" "$data/eval/wikitext-2-raw/wiki.test.raw" 256 \
  "$logits_bin" 1e-3 0.99
