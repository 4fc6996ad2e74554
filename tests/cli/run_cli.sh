#!/usr/bin/env bash
# End-to-end checks of the qforge binary on stories260K: greedy generation reproduces the
# documented story, 'quantize' writes a container that 'generate'/'ppl' read back, 'eval --json'
# is one JSON object, and bad input gives an error naming the file (no partial output); type mixes
# and importance matrices end to end.
# Usage: run_cli.sh QFORGE_BINARY DATA_DIR. Exit 77 (skip) when data is missing, unless
# QFORGE_REQUIRE_DATA=1.
set -euo pipefail
q=$1
data=${QFORGE_DATA:-$2}
export QFORGE_DATA=$data
if [ ! -f "$data/models/stories260K/stories260K.bin" ] || [ ! -f "$data/eval/wikitext-2-raw/wiki.test.raw" ]; then
  echo "stories260K or WikiText-2 missing under $data"
  [ "${QFORGE_REQUIRE_DATA:-0}" = 1 ] && exit 1
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$q" generate --max-tokens 40 --json > "$tmp/gen.json"
grep -q '"text":"Once upon a time, there was a little girl named Lily' "$tmp/gen.json" || fail "greedy story: $(cat "$tmp/gen.json")"

"$q" quantize --scheme rtn:w8g32s --override 'output.weight=f32' --out "$tmp/q.safetensors" --json > "$tmp/quant.json"
[ -f "$tmp/q.safetensors" ] && [ ! -e "$tmp/q.safetensors.tmp" ] || fail "container not written (or temporary left)"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert 8 < d['block_bits_per_weight'] < 9, d" "$tmp/quant.json"
"$q" generate --model "$tmp/q.safetensors" --max-tokens 20 --json | grep -q '"text":"Once upon a time' || fail "container generate"
# the container at w8 scores like the in-memory w8 model: same PPL up to the head (f32 in both)
a=$("$q" ppl --model "$tmp/q.safetensors" --max-tokens 600 --context 128 --json)
b=$("$q" ppl --scheme rtn:w8g32s --max-tokens 600 --context 128 --json)
python3 - "$a" "$b" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert a["tokens"] == b["tokens"] > 500, (a, b)
assert abs(a["ppl"] / b["ppl"] - 1) < 1e-3, (a["ppl"], b["ppl"])
PY

"$q" eval --max-tokens 600 --context 128 --scheme rtn:w8g32s --scheme rtn:w2g32a --json > "$tmp/eval.json"
python3 - "$tmp/eval.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = {row["label"]: row for row in d["rows"]}
assert d["kernels"] == "fp32" and d["tokens"] > 500
assert 0 <= r["rtn:w8g32s"]["kld"] < r["rtn:w2g32a"]["kld"], r
assert r["rtn:w2g32a"]["bits_per_weight"] < r["rtn:w8g32s"]["bits_per_weight"]
PY

# GPTQ through the CLI: calibrated on the slice after the evaluated tokens, better than RTN at 3 bits
"$q" eval --max-tokens 1500 --context 256 --scheme rtn:w3g32a --scheme gptq:w3g32a,act --calib-tokens 2048 --json > "$tmp/gptq.json"
python3 - "$tmp/gptq.json" <<'PY'
import json, sys
r = {row["label"]: row for row in json.load(open(sys.argv[1]))["rows"]}
assert r["gptq:w3g32a,act"]["kld"] < r["rtn:w3g32a"]["kld"], r
PY
"$q" quantize --scheme gptq:w4g32a,act --calib-tokens 1024 --out "$tmp/g.safetensors" --json > /dev/null
"$q" generate --model "$tmp/g.safetensors" --max-tokens 20 --json | grep -q '"text":"Once upon a time' || fail "gptq container generate"
# an override on a block linear of a calibrated run is refused before any work, naming the tensor
if "$q" quantize --scheme gptq:w4g32a --override 'blk.2.*=f32' --out "$tmp/g2.safetensors" 2> "$tmp/err.txt"; then fail "override on a gptq layer accepted"; fi
grep -q "blk.2.attn_q.weight=f32" "$tmp/err.txt" || fail "override error: $(cat "$tmp/err.txt")"
[ ! -e "$tmp/g2.safetensors" ] || fail "override error left a file"
# an override that names no weight (a typo) is refused, not silently ignored
if "$q" quantize --scheme rtn:w4g32a --override 'blk.0.atn_q.weight=f32' --out "$tmp/g3.safetensors" 2> "$tmp/err.txt"; then fail "typo override accepted"; fi
grep -q "matches no weight" "$tmp/err.txt" || fail "typo override error: $(cat "$tmp/err.txt")"

# GGUF export: stories260K onto Q4_0 (its 172-wide ffn_down rows fall back to F16, reported), read
# back by qforge's own GGUF loader (llama.cpp reads it in the peer test peer.gguf_export)
"$q" quantize --scheme rtn:q4_0 --format gguf --out "$tmp/s.gguf" --json > "$tmp/gguf.json" 2> "$tmp/gguf.err"
grep -q "fallback: blk.4.ffn_down.weight: 172 columns are not whole Q4_0 blocks: written as F16" "$tmp/gguf.err" || fail "gguf fallback: $(cat "$tmp/gguf.err")"
# bits per weight by hand (stories260K per block: q 4096, k 2048, v 2048, o 4096, gate and up
# 11008 weights as Q4_0 at 4.5 bits; down 11008 as F16): the file's own count (F16 16 bits) and
# the one definition (the layers as qforge holds them once read back: F16 in FP32, 32 bits)
python3 - "$tmp/gguf.json" <<'PY' || fail "gguf bits per weight"
import json, sys
d = json.load(open(sys.argv[1]))
assert d['format'] == 'gguf' and d['fallbacks'] == 5, d
assert abs(d['file_bits_per_weight'] - (34304 * 4.5 + 11008 * 16) / 45312) < 1e-9, d
assert abs(d['block_bits_per_weight'] - (34304 * 4.5 + 11008 * 32) / 45312) < 1e-9, d
PY
[ ! -e "$tmp/s.gguf.tmp" ] || fail "gguf temporary left"
"$q" generate --model "$tmp/s.gguf" --max-tokens 20 --json | grep -q '"text":"Once upon a time' || fail "gguf generate"
# back to the container: the same blocks, runnable
"$q" convert --model "$tmp/s.gguf" --format qforge --out "$tmp/s_back.safetensors" --json > /dev/null
"$q" generate --model "$tmp/s_back.safetensors" --max-tokens 20 --json | grep -q '"text":"Once upon a time' || fail "gguf -> container generate"
# a dense qforge layout has no GGUF type: refused before any file exists
if "$q" quantize --scheme rtn:w4g32a --format gguf --out "$tmp/d.gguf" 2> "$tmp/err"; then fail "dense layout written to gguf"; fi
grep -q "blk.0.attn_q.weight: scheme 'rtn:w4g32a' packs into a layout no GGUF type holds" "$tmp/err" || fail "gguf dense error: $(cat "$tmp/err")"
[ ! -e "$tmp/d.gguf" ] && [ ! -e "$tmp/d.gguf.tmp" ] || fail "refused gguf left a file"

# llama.cpp's type mixes and importance matrices: the types per tensor (llama-quantize's own
# choice is checked in peer.gguf_export), an imatrix file of each form, and the refusals
"$q" convert --mix Q4_K_M --format gguf --out "$tmp/m.gguf" --json > "$tmp/mix.json" 2> "$tmp/mix.err"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['matrix_types']=={'F16':5,'Q5_0':28,'Q8_0':3}, d" "$tmp/mix.json"
# 35 fallbacks: one stderr line per reason with its count and first tensors, not 35 lines
python3 - "$tmp/mix.json" "$tmp/mix.err" <<'PY' || fail "grouped fallbacks: $(cat "$tmp/mix.err")"
import json, re, sys
d = json.load(open(sys.argv[1]))
lines = [l for l in open(sys.argv[2]).read().splitlines() if l.startswith('qforge: fallback: ')]
assert f"qforge: {d['fallbacks']} tensors fell back to another type:" in open(sys.argv[2]).read() and d['fallbacks'] == 35, d
counts = [int(re.search(r': (\d+) tensors? \(', l).group(1)) for l in lines]
assert len(lines) == 4 and sum(counts) == 35, lines
assert any('written as Q5_0, as llama-quantize falls back: 28 tensors (blk.0.attn_q.weight, blk.0.attn_k.weight, blk.0.attn_v.weight, ...)' in l for l in lines), lines
PY
"$q" imatrix --calib-tokens 512 --chunk 128 --out "$tmp/im.gguf" --json > "$tmp/im.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert (d['entries'],d['tokens'],d['chunks'])==(35,512,4), d" "$tmp/im.json"
"$q" imatrix --calib-tokens 512 --format dat --out "$tmp/im.dat" > /dev/null
"$q" convert --outtype q4_0 --imatrix "$tmp/im.dat" --format gguf --out "$tmp/qi.gguf" > /dev/null 2>&1
"$q" generate --model "$tmp/qi.gguf" --max-tokens 20 --json | grep -q '"text":"Once upon a time' || fail "imatrix q4_0 generate"
refused() {  # EXPECTED_TEXT ARGS...: the command fails, says so, and writes nothing
  local want=$1; shift
  # no extension: a file for --format gguf/qforge, a directory for gptq/awq
  if "$q" "$@" --out "$tmp/r_out" > /dev/null 2> "$tmp/err"; then fail "accepted: $*"; fi
  grep -qF -- "$want" "$tmp/err" || fail "$*: $(cat "$tmp/err")"
  [ ! -e "$tmp/r_out" ] && [ ! -e "$tmp/r_out.tmp" ] || fail "refused command left a file: $*"
}
refused "unknown type mix 'q4_k_x'" convert --mix q4_k_x --format gguf
refused "--scheme rtn:q4_0 must be on that grid (e.g. gptq:q4_k)" quantize --mix q4_k_m --scheme rtn:q4_0 --format gguf
refused "calibrates on its own statistics" quantize --imatrix "$tmp/im.gguf" --scheme gptq:q4_0 --format gguf
refused "tok512.bin: imatrix entry 1 of 7" convert --outtype q4_0 --imatrix "$data/models/stories260K/tok512.bin" --format gguf
refused "not on qforge's own grids" convert --outtype w4g32s --imatrix "$tmp/im.gguf" --format qforge
# GPTQ/AWQ checkpoint directories (layouts and SmolLM2 end to end: unit test hf, peer.gguf_export):
# what they cannot hold is refused, naming the tensor, before anything is written
refused "--mix gives each tensor its own type" convert --mix q4_k_m --format gptq
refused "blk.0.ffn_gate.weight (172 x 64): GPTQ packs zero points into int32 words: 172 outputs of 4 bits" quantize --scheme rtn:w4g32s --format gptq
refused "blk.0.attn_q.weight is stored as dense 4-bit with float minimums ('m')" quantize --scheme rtn:w4g32m --format gptq_v2
refused "AWQ's GEMM layout is 4-bit" convert --outtype w8g32a --format awq
# a checkpoint is a directory: an --out that names a file (x.safetensors) is refused, not made a directory
if "$q" convert --outtype w4g32s --format gptq --out "$tmp/x.safetensors" > /dev/null 2> "$tmp/err"; then fail "gptq --out x.safetensors accepted"; fi
grep -qF "writes a directory" "$tmp/err" && grep -qF "x.safetensors" "$tmp/err" || fail "gptq file-like --out: $(cat "$tmp/err")"
[ ! -e "$tmp/x.safetensors" ] || fail "gptq file-like --out left something"
mkdir -p "$tmp/full/x"
if "$q" convert --outtype w4g32s --format gptq --out "$tmp/full" > /dev/null 2> "$tmp/err"; then fail "non-empty output directory accepted"; fi
grep -qF "exists and is not empty" "$tmp/err" || fail "non-empty directory: $(cat "$tmp/err")"

# AWQ, TWQ (a hand-written neuron file) and the per-language FLORES table
printf '%s' '{"format":"qforge-neurons","version":1,"layers":5,"hidden":172,"method":"lape","sets":{"fra_Latn":[[1,2],[3],[4],[5],[6]],"random:fra_Latn":[[7,8],[9],[10],[11],[12]]}}' > "$tmp/n.json"
"$q" eval --max-tokens 600 --context 128 --scheme rtn:w3g32a --scheme awq:w3g32a --scheme twq:w3g32a --neurons "$tmp/n.json" \
  --twq-target fra_Latn --flores "$data/eval/flores200/devtest" --flores-max-lines 3 --calib-tokens 512 --json > "$tmp/awq.json"
python3 - "$tmp/awq.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
labels = [row["label"] for row in d["rows"]]
assert labels[0] == "rtn:w3g32a" and labels[1] == "awq:w3g32a", labels
assert labels[2].startswith("twq:w3g32a@fra_Latn l=") and labels[3] == "twq:w3g32a@fra_Latn/random", labels
f = d["flores"]
assert len(f["languages"]) == 10 and all(len(v) == 10 for v in f["normalised_ppl"].values()), f
assert f["sentences"] == [3] * 10 and all(t > 3 for t in f["scored_tokens"]), f
import math
for label, v in f["added_nll_per_sentence"].items():  # the per-token ratio, re-expressed per sentence of the same content
    for k, x in enumerate(v):
        want = math.log(f["normalised_ppl"][label][k]) * f["scored_tokens"][k] / 3
        assert abs(x - want) < 1e-3 * max(1, abs(want)), (label, k, x, want)
iv = d["twq_intervals"]
assert [t["against"] for t in iv] == ["random control", "awq:w3g32a"], iv
for t in iv:
    assert t["target"] == "fra_Latn" and t["sentences"] == 3 and t["ci95"][0] <= t["mean_nll_difference"] <= t["ci95"][1], t
PY
# the same rows evaluated one model at a time (each beside the reference, then released, as a long
# eval does when its rows outgrow memory): every figure equal, FLORES and the TWQ intervals too
"$q" eval --max-tokens 600 --context 128 --scheme rtn:w3g32a --scheme awq:w3g32a --scheme twq:w3g32a --neurons "$tmp/n.json" \
  --twq-target fra_Latn --flores "$data/eval/flores200/devtest" --flores-max-lines 3 --calib-tokens 512 --models-in-memory 1 --json > "$tmp/awq1.json"
python3 - "$tmp/awq.json" "$tmp/awq1.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for d in (a, b):
    del d["eval_seconds"], d["model_tokens_per_second"]
    for r in d["rows"]:
        del r["quantize_seconds"]
assert a == b, [(k, a[k], b.get(k)) for k in a if a[k] != b.get(k)]
PY

# logit lens: the last layer reads the model's own output; the plot is written
"$q" lens --max-tokens 400 --context 128 --scheme rtn:w4g32a --svg "$tmp/lens.svg" --json > "$tmp/lens.json"
python3 - "$tmp/lens.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert [s["label"] for s in d["series"]] == ["reference", "rtn:w4g32a"], d["series"]
ref = d["series"][0]["layers"]
assert len(ref) == 5 and ref[-1]["p_next"] > ref[0]["p_next"], ref
PY
grep -q "<polyline" "$tmp/lens.svg" || fail "lens plot"

# bad input: an error naming the file, exit status 1, nothing written
if "$q" ppl --model "$tmp/missing.bin" 2> "$tmp/err"; then fail "missing model accepted"; fi
grep -q "missing.bin: cannot open" "$tmp/err" || fail "missing: $(cat "$tmp/err")"
head -c 2000 "$tmp/q.safetensors" > "$tmp/cut.safetensors"
if "$q" ppl --model "$tmp/cut.safetensors" 2> "$tmp/err"; then fail "truncated container accepted"; fi
grep -q "cut.safetensors: truncated" "$tmp/err" || fail "truncated: $(cat "$tmp/err")"
head -c 5000 "$data/models/stories260K/stories260K.bin" > "$tmp/cut.bin"
if "$q" quantize --model "$tmp/cut.bin" --scheme rtn:w4g32a --out "$tmp/x.safetensors" 2> "$tmp/err"; then fail "truncated checkpoint accepted"; fi
grep -q "cut.bin: truncated" "$tmp/err" || fail "truncated checkpoint: $(cat "$tmp/err")"
if "$q" quantize --scheme rtn:w5g32a --out "$tmp/x.safetensors" 2> "$tmp/err"; then fail "5-bit accepted"; fi
grep -q "unsupported bit width 5" "$tmp/err" || fail "unsupported bits: $(cat "$tmp/err")"
[ ! -e "$tmp/x.safetensors" ] && [ ! -e "$tmp/x.safetensors.tmp" ] || fail "partial output left behind"
echo "cli: all checks passed"
