#!/usr/bin/env bash
# Peer test: SmolLM2 token ids of FLORES sentences in ten languages from qforge's BPE tokenizer
# equal those of Hugging Face `tokenizers`. Usage: run_bpe_peer.sh SOURCE_DIR TEST_BINARY DATA_DIR
set -euo pipefail
src=$1
bin=$2
data=$3
source "$src/tests/peer/env.sh"
out=$(mktemp)
trap 'rm -f "$out" "$out.tokenizer.json"' EXIT
"$python" "$src/tests/peer/bpe_encode.py" "$model" "$data/eval/flores200/devtest" 100 "$out" "$out.tokenizer.json"
QFORGE_BPE_PEER_IDS=$out QFORGE_SMOLLM2=$model "$bin" --run_test=test_bpe/bpe_matches_peer_ids --log_level=message
# the same ids from a tokenizer.json written by Hugging Face tokenizers
QFORGE_BPE_PEER_IDS=$out QFORGE_TOKENIZER_JSON=$out.tokenizer.json "$bin" --run_test=test_bpe/tokenizer_json_matches_peer_ids --log_level=message
