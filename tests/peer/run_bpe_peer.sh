#!/usr/bin/env bash
# Peer test: SmolLM2 token ids of FLORES sentences in ten languages from qforge's BPE tokenizer
# equal those of Hugging Face `tokenizers`. Usage: run_bpe_peer.sh SOURCE_DIR TEST_BINARY DATA_DIR
set -euo pipefail
src=$1
bin=$2
data=$3
cache=${QFORGE_CACHE:-$HOME/.cache/qforge}
model=$(bash "$src/scripts/fetch-models.sh")
venv=$cache/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import gguf, numpy, tokenizers" 2>/dev/null ||
  "$venv/bin/pip" install --quiet gguf==0.19.0 numpy==2.4.6 tokenizers==0.23.3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$venv/bin/python" "$src/tests/peer/bpe_encode.py" "$model" "$data/eval/flores200/devtest" 100 "$out"
QFORGE_BPE_PEER_IDS=$out QFORGE_SMOLLM2=$model "$bin" --run_test=bpe_matches_hf_tokenizers --log_level=test_suite
