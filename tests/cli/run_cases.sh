#!/usr/bin/env bash
# Regression checks for the kinds of fault in ../shared/cases/2026-11-30 (each block names its
# row), and every subcommand's --json parsed by a strict JSON parser (no NaN/Infinity), on
# degenerate inputs too. Usage: run_cases.sh QFORGE_BINARY DATA_DIR SOURCE_DIR.
# Uses SmolLM2 from the cache (the ctest fixture "smollm2" fetches it) and the case files when
# present. Exit 77 (skip) when data is missing, unless QFORGE_REQUIRE_DATA=1.
set -euo pipefail
q=$1
data=${QFORGE_DATA:-$2}
src=$3
export QFORGE_DATA=$data
cases=$src/../shared/cases/2026-11-30
cache=${QFORGE_CACHE:-$HOME/.cache/qforge}
M=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
T=$data/models/stories260K/tok512.bin
for f in "$T" "$data/eval/wikitext-2-raw/wiki.test.raw" "$M"; do
  if [ ! -f "$f" ]; then
    echo "missing $f"
    [ "${QFORGE_REQUIRE_DATA:-0}" = 1 ] && exit 1
    exit 77
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# QFORGE_CASES_KEEP_GOING=1 reports every failing check instead of stopping at the first (to see
# which rows an older binary fails)
failures=0
if [ "${QFORGE_CASES_KEEP_GOING:-0}" = 1 ]; then set +e; fi
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
  [ "${QFORGE_CASES_KEEP_GOING:-0}" = 1 ] || exit 1
}
# strict JSON: Python's json accepts NaN/Infinity unless told not to
cat > "$tmp/json_ok.py" <<'PY'
import json, sys
def no(c): raise ValueError("non-JSON constant " + c)
text = open(sys.argv[1], encoding="utf-8", errors="strict").read()
d = json.loads(text, parse_constant=no)
for expr in sys.argv[2:]:
    if not eval(expr, {"d": d}):
        sys.exit(f"check failed: {expr}\n{text[:2000]}")
PY
json() { python3 "$tmp/json_ok.py" "$@" || fail "json check on $1"; }
# expect_error 'TEXT' CMD...: non-zero exit and TEXT (a grep -E pattern) in stderr
expect_error() {
  local want=$1
  shift
  if "$@" > "$tmp/out" 2> "$tmp/err"; then fail "accepted: $* ($(cat "$tmp/out"))"; fi
  grep -Eq -- "$want" "$tmp/err" || fail "error for '$*' lacks '$want': $(cat "$tmp/err")"
}

# row 2: too little text is an error, never "ppl": 0 or NaN in JSON
: > "$tmp/empty"
printf 'Hi' > "$tmp/hi"
expect_error "nothing to score" "$q" ppl --text "$tmp/empty" --json
expect_error "nothing to score" "$q" eval --text "$tmp/empty" --json
expect_error "nothing to score" "$q" lens --text "$tmp/empty" --json
expect_error "max-tokens.*0" "$q" ppl --max-tokens 0
expect_error "max-tokens.*1" "$q" ppl --max-tokens 1
"$q" ppl --text "$tmp/hi" --scheme rtn:w4g32a --json > "$tmp/p.json" 2> "$tmp/perr"
grep -q "holds 3 tokens, fewer than the 16384 asked for" "$tmp/perr" || fail "no note for a text shorter than --max-tokens: $(cat "$tmp/perr")"
json "$tmp/p.json" 'd["tokens"] == d["text_tokens"] - 1 >= 1'

# every subcommand's --json, on small and degenerate inputs, through a strict parser
"$q" eval --text "$tmp/hi" --scheme rtn:w8g32s --json > "$tmp/e.json"
json "$tmp/e.json" 'd["tokens"] >= 1' 'len(d["rows"]) == 1'
mkdir -p "$tmp/flores"
for l in eng_Latn fra_Latn; do head -2 "$data/eval/flores200/devtest/$l.devtest" > "$tmp/flores/$l.devtest"; done
"$q" eval --max-tokens 300 --context 128 --scheme rtn:w4g32a --flores "$tmp/flores" --flores-lines 1-2 --json > "$tmp/ef.json"
json "$tmp/ef.json" 'd["flores"]["languages"] == ["eng_Latn", "fra_Latn"]' 'd["flores"]["sentences"] == [2, 2]'
"$q" lens --text "$tmp/hi" --json > "$tmp/l.json"
json "$tmp/l.json" 'd["tokens"] >= 2'
"$q" weights --scheme rtn:w8g32s --json > "$tmp/w.json"
json "$tmp/w.json" 'len(d["results"]) == 1'
"$q" neurons --flores "$tmp/flores" --lines 1-2 --out "$tmp/n.json" --json > "$tmp/nj.json"
json "$tmp/nj.json" 'set(d["languages"]) == {"eng_Latn", "fra_Latn"}'
"$q" quantize --scheme rtn:w4g32a --out "$tmp/r.safetensors" --json > "$tmp/qj.json"
json "$tmp/qj.json" '4 < d["block_bits_per_weight"] < 6'
# sampling at a high temperature emits byte tokens that are not whole UTF-8 characters
for seed in 1 2 3; do
  "$q" generate --temperature 3 --seed $seed --max-tokens 120 --json > "$tmp/g$seed.json" 2>/dev/null
  json "$tmp/g$seed.json" 'd["tokens"] >= 0'
done

# row 3: exactly the requested tokens, whatever the bytes per token
python3 -c "print('\n'.join(['#' * 80] * 2000))" > "$tmp/hashes"
"$q" ppl --model "$M" --text "$tmp/hashes" --max-tokens 256 --context 256 --json > "$tmp/h.json"
json "$tmp/h.json" 'd["text_tokens"] == 256' 'd["tokens"] == 255'
# calibration slices take the same route: 300 calibration tokens after a 256-token skip
"$q" quantize --model "$M" --scheme gptq:w4g64a --calib "$tmp/hashes" --calib-skip 256 --calib-tokens 300 \
  --override 'output.weight=keep' --out "$tmp/hq.safetensors" --json > /dev/null 2> "$tmp/err" || fail "calibration on hashes: $(cat "$tmp/err")"

# row 5: option values at their edges; every bad number names the option and the value
"$q" generate --max-tokens 0 --json > "$tmp/g0.json"
json "$tmp/g0.json" 'd["tokens"] == 0' 'd["text"] == ""'
expect_error "temperature.*abc" "$q" generate --temperature abc
expect_error "temperature.*inf" "$q" generate --temperature inf
expect_error "temperature.*nan" "$q" generate --temperature nan
expect_error "top-p.*1.5" "$q" generate --temperature 1 --top-p 1.5
"$q" generate --temperature 0 --top-p 0 --max-tokens 3 --json > "$tmp/gt.json"
json "$tmp/gt.json" 'd["tokens"] == 3'
expect_error "context.*x" "$q" ppl --context x
expect_error "lines.*7-3" "$q" neurons --lines 7-3 --out "$tmp/n2.json"
expect_error "calib-tokens.*-5" "$q" eval --calib-tokens -5
expect_error "kernels.*gpu" "$q" eval --kernels gpu
expect_error "seed: needs a whole number >= 0, got '-3'" "$q" generate --seed -3
mkdir -p "$tmp/a_dir"
expect_error "a_dir: is a directory" "$q" ppl --text "$tmp/a_dir"
expect_error "unknown|extra|not expected|The following" "$q" ppl --bogus 1

# row 6: thread counts above the machine's are capped with one note; negative ones are refused
"$q" ppl --max-tokens 300 --threads 2000000000 --json > "$tmp/t.json" 2> "$tmp/terr"
grep -q "capped to the" "$tmp/terr" || fail "no note for capped threads: $(cat "$tmp/terr")"
[ "$(grep -c "capped" "$tmp/terr")" = 1 ] || fail "the note is said more than once"
json "$tmp/t.json" 'd["text_tokens"] == 300'
expect_error "threads.*-1" "$q" ppl --threads -1

# rows 7, 8: non-finite packed values and quantization errors name the file and the tensor
if [ -d "$cases" ]; then
  for k in nan inf; do
    expect_error "s260k_q8_$k.gguf.*blk.0.attn_q.weight" "$q" ppl --model "$cases/s260k_q8_$k.gguf" --tokenizer "$T"
    expect_error "s260k_q8_$k.gguf.*blk.0.attn_q.weight" "$q" quantize --model "$cases/s260k_q8_$k.gguf" --tokenizer "$T" \
      --override 'blk.*=keep' --out "$tmp/k.safetensors"
    [ ! -e "$tmp/k.safetensors" ] || fail "partial output from a bad model"
  done
  expect_error "hf_huge.*(ffn_up|up_proj).*row" "$q" ppl --model "$cases/hf_huge" --tokenizer "$T" --scheme rtn:w4g32a
  # row 12: a GGUF with a SentencePiece vocabulary, made from stories260K.bin + tok512.bin, scores as they do
  flores=$data/eval/flores200/devtest/eng_Latn.devtest
  "$q" ppl --model "$cases/s260k_spm.gguf" --text "$flores" --max-tokens 512 --json > "$tmp/spm.json"
  "$q" ppl --text "$flores" --max-tokens 512 --json > "$tmp/bin.json"
  python3 - "$tmp/spm.json" "$tmp/bin.json" <<'PY' || fail "SentencePiece GGUF and llama2.c files disagree"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["text_tokens"] == b["text_tokens"] == 512 and abs(a["ppl"] / b["ppl"] - 1) < 1e-5, (a, b)
PY
else
  echo "cases directory $cases missing: rows 7, 8, 12 (files) not checked"
  [ "${QFORGE_REQUIRE_DATA:-0}" = 1 ] && exit 1
fi
# row 12: an option no format can store is not in the grammar
expect_error "'f32' is not offered" "$q" eval --scheme rtn:w4g32a,f32
# a bad scheme is a usage error naming the option and the value, in every subcommand that takes one
for sub in eval ppl lens generate weights; do
  expect_error "--scheme: bad scheme 'gptq:w5g7q': unknown zero-point letter 'q'" "$q" $sub --scheme gptq:w5g7q
done
expect_error "--scheme: bad scheme 'gptq:w5g7q': unknown zero-point letter 'q'" "$q" quantize --scheme gptq:w5g7q --out "$tmp/never.qf"
[ ! -e "$tmp/never.qf" ] || fail "a refused quantize left $tmp/never.qf"

# row 9: the model's own add-BOS setting (SmolLM2: tokenizer.ggml.add_bos_token = false), with an override
"$q" generate --model "$M" --prompt Hello --max-tokens 1 --json > "$tmp/b.json" 2>/dev/null
json "$tmp/b.json" 'd["prompt_tokens"] == 1' 'd["add_bos"] is False'
"$q" generate --model "$M" --prompt Hello --max-tokens 1 --add-bos on --json > "$tmp/b2.json" 2>/dev/null
json "$tmp/b2.json" 'd["prompt_tokens"] == 2' 'd["add_bos"] is True'
"$q" ppl --model "$M" --max-tokens 64 --json > "$tmp/b3.json" 2>/dev/null
json "$tmp/b3.json" 'd["add_bos"] is False'

# row 10: the container names the scheme that made each weight; one bits-per-weight definition
"$q" quantize --scheme gptq:w4g32a,act --calib-tokens 2048 --out "$tmp/g.safetensors" --json > "$tmp/gq.json" 2>/dev/null
"$q" eval --scheme gptq:w4g32a,act --calib-tokens 2048 --max-tokens 1000 --context 256 --json > "$tmp/ge.json" 2>/dev/null
python3 - "$tmp/g.safetensors" "$tmp/gq.json" "$tmp/ge.json" <<'PY' || fail "container record / bits per weight"
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    meta = json.loads(f.read(n))["__metadata__"]
tensors = json.loads(meta["qforge.tensors"])
block = {k: v for k, v in tensors.items() if k.startswith("blk.") and v["format"] == "dense"}
assert block and all(v["scheme"] == "gptq:w4g32a,act" for v in block.values()), block
q = json.load(open(sys.argv[2]))["block_bits_per_weight"]
e = json.load(open(sys.argv[3]))["rows"][0]["bits_per_weight"]
assert abs(q - e) < 1e-9, (q, e)
PY
# keeping a container's weights keeps their record
"$q" quantize --model "$tmp/g.safetensors" --override 'output.weight=f32' --out "$tmp/g2.safetensors" > /dev/null 2>&1
python3 - "$tmp/g2.safetensors" <<'PY' || fail "kept weights lost their scheme"
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    t = json.loads(json.loads(f.read(n))["__metadata__"]["qforge.tensors"])
assert t["blk.0.attn_q.weight"]["scheme"] == "gptq:w4g32a,act", t["blk.0.attn_q.weight"]
PY

# row 11: output paths checked before the work; models recognised by content, not name
expect_error "missing_dir.*does not exist" "$q" quantize --scheme gptq:w4g32a --out "$tmp/missing_dir/x.safetensors"
mkdir -p "$tmp/existing_dir"
expect_error "existing_dir.*is a directory" "$q" quantize --scheme gptq:w4g32a --out "$tmp/existing_dir"
expect_error "missing_dir.*does not exist" "$q" neurons --out "$tmp/missing_dir/n.json"
expect_error "missing_dir.*does not exist" "$q" lens --svg "$tmp/missing_dir/l.svg"
"$q" quantize --scheme rtn:w4g32a --out "$tmp/q.bin" > /dev/null
"$q" ppl --model "$tmp/q.bin" --max-tokens 300 --json > "$tmp/qb.json"
"$q" ppl --scheme rtn:w4g32a --max-tokens 300 --json > "$tmp/qr.json"
python3 - "$tmp/qb.json" "$tmp/qr.json" <<'PY' || fail "container named .bin not read as a container"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert abs(a["ppl"] / b["ppl"] - 1) < 1e-3, (a, b)
PY
cp "$M" "$tmp/smol.bin"
"$q" ppl --model "$tmp/smol.bin" --max-tokens 64 --json > /dev/null 2>&1 || fail "GGUF named .bin not read as GGUF"
"$q" weights --model "$M" --scheme rtn:w4g32a --json > "$tmp/wm.json" 2>/dev/null || fail "weights cannot read a GGUF"
json "$tmp/wm.json" 'd["tensors"] == 210'
head -c 100 "$T" > "$tmp/junk.safetensors"
expect_error "junk.safetensors" "$q" ppl --model "$tmp/junk.safetensors"

# row 13: no silent change of what was asked
expect_error "stride 1000.*context \(256\)" "$q" ppl --context 256 --stride 1000 --json
expect_error "context 4096 exceeds the model's context of 512" "$q" ppl --context 4096
"$q" ppl --context 256 --stride 128 --max-tokens 600 --json > "$tmp/s.json"
json "$tmp/s.json" 'd["stride"] == 128 and d["context"] == 256'
"$q" generate --max-tokens 100000 --json > "$tmp/gl.json" 2> "$tmp/gerr"
grep -q "capped to" "$tmp/gerr" || fail "generate --max-tokens past the context: no note"
# layers no output format can hold yet (an input transform, PQ codes) are refused before any
# work, wherever a scheme can be named; `weights` measures them in the weights' own basis
expect_error "',had' layers cannot be written" "$q" quantize --scheme rtn:w4g32a,had --out "$tmp/had.safetensors"
expect_error "PQ layers cannot be written" "$q" quantize --scheme gptq:pq2n64g1024 --out "$tmp/pq.safetensors"
expect_error "PQ layers cannot be written" "$q" quantize --scheme rtn:w4g32a --override 'blk.*=rtn:pq2n16g64' --out "$tmp/pq.safetensors"
[ ! -e "$tmp/pq.safetensors" ] && [ ! -e "$tmp/had.safetensors" ] || fail "a refused quantize left an output file"
"$q" weights --scheme rtn:w8g32s,had --scheme rtn:pq2n16g64 --json > "$tmp/wh.json"
json "$tmp/wh.json" 'd["results"][0]["relative_frobenius"] < 0.02' 'd["results"][1]["relative_frobenius"] < 0.5' \
  '5.5 < d["results"][1]["bits_per_weight"] < 7'
# per-tensor scheme maps: the same container as --scheme with an override naming the tensor, byte
# for byte; evaluated as a row; every bad map refused before any work, naming the file and tensor
map() { printf '{"format": "qforge.scheme_map", "version": 1, "scheme": "%s", "tensors": {%s}}' "$1" "$2" > "$3"; }
map rtn:w4g32a '"blk.0.attn_q.weight": "rtn:w8g32a", "blk.2.ffn_down.weight": "rtn:w2g32a"' "$tmp/map.json"
"$q" quantize --scheme-map "$tmp/map.json" --out "$tmp/m1.safetensors" > /dev/null 2>&1 || fail "quantize --scheme-map"
"$q" quantize --scheme rtn:w4g32a --override 'blk.0.attn_q.weight=rtn:w8g32a' --override 'blk.2.ffn_down.weight=rtn:w2g32a' \
  --out "$tmp/m2.safetensors" > /dev/null 2>&1 || fail "quantize with overrides"
cmp -s "$tmp/m1.safetensors" "$tmp/m2.safetensors" || fail "a scheme map and the same overrides wrote different containers"
"$q" eval --max-tokens 600 --scheme rtn:w4g32a --scheme-map "$tmp/map.json" --json > "$tmp/em.json"
json "$tmp/em.json" 'd["rows"][1]["label"] == "map:map.json"' 'd["rows"][1]["bits_per_weight"] != d["rows"][0]["bits_per_weight"]'
map gptq:w4g32a '"blk.1.attn_k.weight": "gptq:w8g32a"' "$tmp/mapg.json"
"$q" eval --max-tokens 600 --calib-tokens 256 --scheme-map "$tmp/mapg.json" --json > "$tmp/emg.json"
json "$tmp/emg.json" 'd["rows"][0]["label"] == "map:mapg.json"'
for k in 1 2; do
  "$q" quantize --scheme-map "$tmp/mapg.json" --calib-tokens 256 --out "$tmp/g$k.safetensors" > /dev/null 2>&1 || fail "quantize --scheme-map (gptq)"
done
cmp -s "$tmp/g1.safetensors" "$tmp/g2.safetensors" || fail "the same gptq scheme map wrote different containers"
map rtn:w4g32a '"blk.9.attn_q.weight": "rtn:w8g32a"' "$tmp/bad1.json"
expect_error "bad1.json: tensor 'blk.9.attn_q.weight' is not a decoder weight" "$q" quantize --scheme-map "$tmp/bad1.json" --out "$tmp/b.safetensors"
map rtn:w4g32a '"blk.0.attn_q.weight": "gptq:w8g32a"' "$tmp/bad2.json"
expect_error "tensor 'blk.0.attn_q.weight'.*another method" "$q" quantize --scheme-map "$tmp/bad2.json" --out "$tmp/b.safetensors"
map rtn:w4g32a '"blk.0.attn_q.weight": "rtn:pq2n16g64"' "$tmp/bad3.json"
expect_error "tensor 'blk.0.attn_q.weight': PQ layers cannot be written" "$q" quantize --scheme-map "$tmp/bad3.json" --out "$tmp/b.safetensors"
map rtn:w4g32a '"blk.0.attn_q.weight": "rtn:w5g32a"' "$tmp/bad4.json"
expect_error "bad4.json: tensor 'blk.0.attn_q.weight'.*unsupported bit width 5" "$q" eval --scheme-map "$tmp/bad4.json"
expect_error "bad1.json.*blk.9.attn_q.weight" "$q" eval --scheme-map "$tmp/bad1.json"
expect_error "bad2.json.*blk.0.attn_q.weight.*another method" "$q" eval --scheme-map "$tmp/bad2.json"
# what a quantizer adjusted is said, for RTN as for GPTQ, with the scheme it belongs to
"$q" eval --scheme rtn:w4g32a,had --max-tokens 300 > /dev/null 2> "$tmp/hn"
grep -q "rtn:w4g32a,had: block 0: ffn_down: .*quantized without the transform" "$tmp/hn" || fail "no note for an untransformed ',had' layer: $(cat "$tmp/hn")"
expect_error "without --scheme" "$q" quantize --scheme rtn:w4g32a --scheme-map "$tmp/map.json" --out "$tmp/b.safetensors"
[ ! -e "$tmp/b.safetensors" ] || fail "a refused scheme map left an output file"
# qforge allocate (#17, stories260K): maps within their budgets whose models (quantize/eval
# --scheme-map) hold the bytes the allocation counted; bad requests refused before any work
"$q" allocate --candidates rtn:w2g32a,rtn:w4g32a,rtn:w8g32s --target-bpw 3,5 --calib-tokens 512 \
  --out "$tmp/alloc-{bpw}.json" --svg "$tmp/heat.svg" --json > "$tmp/al.json" 2> "$tmp/al.err" || fail "allocate: $(cat "$tmp/al.err")"
json "$tmp/al.json" 'isinstance(d["calibration_tokens"], int) and isinstance(d["allocations"][0]["bytes"], int)' 'len(d["allocations"]) == 2' 'all(a["bpw"] <= a["target_bpw"] for a in d["allocations"])' \
  'all(a["measured_kl"] > 0 for a in d["allocations"])' 'd["allocations"][0]["predicted_loss"] > d["allocations"][1]["predicted_loss"]' \
  'len(d["blocks"]) == 5 and all(b["candidates"][0]["anchored"] > b["candidates"][2]["anchored"] for b in d["blocks"])' \
  'd["anchor"] == "rtn:w2g32a" and d["kl_tokens"] == 256 and d["allocations"][0]["loss"] == "anchored"' \
  'all(b["candidates"][0]["kl"] == b["candidates"][0]["anchored"] > 0 and b["candidates"][1]["kl"] is None for b in d["blocks"])' \
  'd["spearman"] is None and d["allocations"][0]["anchor"] == "rtn:w2g32a"'
# --loss kl measures every candidate (on all the tokens with --kl-tokens 0) and ranks the estimates against it
"$q" allocate --candidates rtn:w2g32a,rtn:w4g32a,rtn:w8g32s --target-bpw 3 --calib-tokens 512 --loss kl --kl-tokens 0 --no-verify --json > "$tmp/alkl.json" \
  || fail "allocate --loss kl"
json "$tmp/alkl.json" 'd["kl_tokens"] == 512 and all(c["kl"] > 0 for b in d["blocks"] for c in b["candidates"])' \
  '-1 <= d["spearman"]["blocks_anchored"] <= 1 and d["blocks"][0]["candidates"][0]["kl"] != d["blocks"][0]["candidates"][0]["block_output"]'
expect_error "anchor.*rtn:w3g32a is not one of the candidates" "$q" allocate --candidates rtn:w2g32a,rtn:w4g32a --anchor rtn:w3g32a --target-bpw 3
expect_error "anchor.*proxy-only" "$q" allocate --candidates rtn:w2g32a,rtn:w4g32a --anchor rtn:w2g32a --proxy-only --loss output --target-bpw 3
expect_error "anchored is a block's measure" "$q" allocate --unit linear --loss anchored --target-bpw 3
expect_error "kl-tokens.*whole number" "$q" allocate --kl-tokens -5 --target-bpw 3
# asked for more KL tokens than the calibration holds: refused, not silently capped (new-user trial)
expect_error "kl-tokens.*3000 is more than the 1024 calibration tokens" "$q" allocate --kl-tokens 3000 --calib-tokens 1024 --target-bpw 3
expect_error "anchor.*empty" "$q" allocate --anchor "" --target-bpw 3
grep -q "<svg" "$tmp/heat.svg" || fail "allocate --svg wrote no SVG"
"$q" eval --max-tokens 300 --scheme-map "$tmp/alloc-3.json" --json > "$tmp/ea.json" || fail "eval of an allocated map"
python3 - "$tmp/ea.json" "$tmp/alloc-3.json" <<'PY' || fail "the allocated map's bpw differs from the allocation's"
import json, sys
e, m = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert abs(e["rows"][0]["bits_per_weight"] - m["allocation"]["bpw"]) < 1e-9, (e["rows"][0]["bits_per_weight"], m["allocation"]["bpw"])
PY
expect_error "different methods" "$q" allocate --candidates rtn:w2g32a,gptq:w4g32a --target-bpw 3
# AWQ candidates: blocks measured whole (their scales fold into the norms); TWQ needs targets
"$q" allocate --candidates awq:w2g32a,awq:w4g32a --target-bpw 3 --calib-tokens 256 --out "$tmp/awq-map.json" --json > "$tmp/alawq.json" \
  2> "$tmp/alawq.err" || fail "allocate with awq candidates: $(cat "$tmp/alawq.err")"
json "$tmp/alawq.json" 'all(b["candidates"][0]["anchored"] > b["candidates"][1]["anchored"] for b in d["blocks"])' \
  'd["allocations"][0]["bpw"] <= 3 and d["allocations"][0]["measured_kl"] > 0'
"$q" eval --max-tokens 300 --calib-tokens 256 --scheme-map "$tmp/awq-map.json" --json > "$tmp/eawq.json" || fail "eval of an awq map"
expect_error "measured whole" "$q" allocate --candidates awq:w4g32a --unit linear --target-bpw 3
expect_error "with --loss output: .*measured whole" "$q" allocate --candidates awq:w4g32a --loss output --target-bpw 3
# a map allocated with other calibration tokens than the run's: said (the model differs)
"$q" eval --max-tokens 300 --scheme-map "$tmp/awq-map.json" > /dev/null 2> "$tmp/eawq2.err" || fail "eval of an awq map (default tokens)"
grep -q "allocated with 256 calibration tokens; this run quantizes it with 8192" "$tmp/eawq2.err" || fail "no note on the map's calibration tokens: $(cat "$tmp/eawq2.err")"
expect_error "neuron targets" "$q" allocate --candidates twq:w4g32a --target-bpw 3
expect_error "measure-linears" "$q" allocate --unit linear --loss kl --target-bpw 3
expect_error "\{bpw\}" "$q" allocate --target-bpw 3,4 --out "$tmp/x.json"
expect_error "target-bpw" "$q" allocate --target-bpw nan
expect_error "target-bpw.*1 bits per weight is below the smallest choice.*bpw" "$q" allocate --candidates rtn:w4g32a,rtn:w8g32s --target-bpw 6,1 \
  --calib-tokens 256 --out "$tmp/low-{bpw}.json"
[ ! -e "$tmp/low-6.json" ] || fail "a refused allocation left a map for another budget"
# {bpw} is the budget's shortest exact form ("%g" once wrote 3.203125's map as 3.20312)
"$q" allocate --candidates rtn:w2g32a,rtn:w4g32a --target-bpw 3.203125,3.5 --calib-tokens 256 --no-verify --out "$tmp/fine-{bpw}.json" \
  --svg "$tmp/fine.svg" > "$tmp/fine.txt" 2>&1 || fail "allocate with a budget of 7 significant digits"
grep -q "^| 3.203125 |" "$tmp/fine.txt" && grep -q "^3.203125 bpw:" "$tmp/fine.txt" || fail "allocate's table cut the budget 3.203125: $(grep bpw "$tmp/fine.txt")"
grep -q "allocation at 3.203125 bpw" "$tmp/fine.svg" || fail "the heat map cut the budget 3.203125"
[ -f "$tmp/fine-3.203125.json" ] && [ -f "$tmp/fine-3.5.json" ] || fail "allocate --out {bpw}: $(ls "$tmp" | grep fine-)"
# --save-table, then --table: the same maps without measuring again (the file's doubles read back
# exactly), other budgets from it, verified on the table's calibration tokens; a table that does
# not fit the run is refused before any work
"$q" allocate --candidates gptq:w2g32a,gptq:w4g32a,gptq:w8g32s --target-bpw 3 --calib-tokens 512 --no-verify --save-table "$tmp/table.json" \
  --out "$tmp/t1-{bpw}.json" > /dev/null 2>&1 || fail "allocate --save-table"
"$q" allocate --table "$tmp/table.json" --target-bpw 3,4.5 --no-verify --out "$tmp/t2-{bpw}.json" > "$tmp/t2.txt" 2>&1 || fail "allocate --table: $(cat "$tmp/t2.txt")"
cmp -s "$tmp/t1-3.json" "$tmp/t2-3.json" || fail "the map from a saved table differs: $(diff <(tr , '\n' < "$tmp/t1-3.json") <(tr , '\n' < "$tmp/t2-3.json"))"
grep -q "sensitivity table 0.0 s (read)" "$tmp/t2.txt" || fail "allocate --table measured: $(tail -2 "$tmp/t2.txt")"
"$q" allocate --table "$tmp/table.json" --target-bpw 4 --calib-tokens 512 --loss block_output --json > "$tmp/t3.json" || fail "allocate --table, verified"
json "$tmp/t3.json" 'd["table"].endswith("table.json") and d["allocations"][0]["measured_kl"] > 0 and d["allocations"][0]["loss"] == "block_output"' \
  'd["calibration_tokens"] == 512 and d["kl_tokens"] == 256'
expect_error "table.*other calibration tokens \\(512\\) than this run's \\(1024\\)" "$q" allocate --table "$tmp/table.json" --target-bpw 4 --calib-tokens 1024
expect_error "candidates.*gptq:w2g32a,gptq:w4g32a,gptq:w8g32s" "$q" allocate --table "$tmp/table.json" --candidates gptq:w2g32a --target-bpw 4 --no-verify
expect_error "table.*--save-table says how to measure" "$q" allocate --table "$tmp/table.json" --save-table "$tmp/t4.json" --target-bpw 4 --no-verify
expect_error "kl-tokens.*first 256" "$q" allocate --table "$tmp/table.json" --kl-tokens 128 --target-bpw 4 --no-verify
python3 - "$tmp/table.json" "$tmp/table6.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["blocks"].pop(); d["linears"].pop()
json.dump(d, open(sys.argv[2], "w"))
PY
expect_error "table6.json.*a table of 4 blocks; the model .* has 5" "$q" allocate --table "$tmp/table6.json" --target-bpw 4 --no-verify
expect_error "table.*File does not exist" "$q" allocate --table "$tmp/none.json" --target-bpw 4
expect_error "alloc-3.json.*not a sensitivity table" "$q" allocate --table "$tmp/alloc-3.json" --target-bpw 4 --no-verify
expect_error "3.0000001 is given twice|3.0000001.*given twice" "$q" allocate --candidates rtn:w2g32a,rtn:w4g32a --target-bpw 3.0000001,3.0000001
expect_error "given twice" "$q" allocate --candidates rtn:w2g32a,rtn:w2g32a,rtn:w4g32a --target-bpw 3
expect_error "given twice" "$q" allocate --candidates rtn:w2g32a,rtn:w4g32a --target-bpw 3,3.0
expect_error "candidates.*bad scheme" "$q" allocate --candidates rtn:w9g32a --target-bpw 3
# a candidate with options: the pieces without 'method:' belong to the scheme before them
"$q" allocate --candidates gptq:w3g32a,gptq:w3g32a,salient=3,act --target-bpw 4 --calib-tokens 256 --no-verify --json > "$tmp/als.json" \
  || fail "allocate with an option in a candidate"
json "$tmp/als.json" 'd["blocks"][0]["candidates"][1]["scheme"] == "gptq:w3g32a,act,salient=3"'
# salient channels kept in FP16 (#17): evaluated with their bytes counted; written by quantize
# into a qforge container (its salient parts), which scores what the in-memory model scores
# (the same calibration slice: quantize skips the first 16384 tokens); GGUF refuses them before
# any work
"$q" eval --max-tokens 300 --calib-tokens 512 --scheme gptq:w3g32a --scheme gptq:w3g32a,salient=3 --json > "$tmp/sal.json" || fail "eval ,salient="
json "$tmp/sal.json" 'd["rows"][1]["label"] == "gptq:w3g32a,salient=3"' \
  'd["rows"][1]["bits_per_weight"] > d["rows"][0]["bits_per_weight"] + 0.3'
# (salient=40: ffn_down's 172 columns leave 103, 4 groups of 32 where the layer has 6: the
# header once counted 6 and the write stopped after the work)
for s in gptq:w3g32a,act,salient=3 awq:w3g32a,salient=3 awq:w3g32a rtn:w4g32a,salient=40; do
  f="$tmp/sal-${s//[:,=]/_}.safetensors"
  "$q" quantize --scheme "$s" --calib-tokens 512 --out "$f" > /dev/null 2>&1 || fail "quantize $s into a container"
  # the file's block norms too: AWQ folds its scales into them (--compare once took the reference's)
  "$q" eval --max-tokens 300 --calib-tokens 512 --calib-skip 16384 --scheme "$s" --compare "$f" --json > "$tmp/salf.json" || fail "eval --compare $f"
  json "$tmp/salf.json" 'd["rows"][0]["kld"] == d["rows"][1]["kld"]' 'd["rows"][0]["bits_per_weight"] == d["rows"][1]["bits_per_weight"]'
done
expect_error "',salient=' layers keep input channels in FP16.*--format qforge" "$q" quantize --scheme gptq:w3g32a,salient=1 --format gguf --out "$tmp/sal.gguf"
[ ! -e "$tmp/sal.gguf" ] || fail "a refused quantize left an output file"
# RTN and AWQ keep salient channels too (RTN calibrates to find them): lower KLD than without
"$q" eval --max-tokens 300 --calib-tokens 512 --scheme rtn:w3g32a --scheme rtn:w3g32a,salient=3 --scheme awq:w3g32a,salient=3 --json > "$tmp/rsal.json" \
  || fail "eval rtn/awq ,salient="
json "$tmp/rsal.json" 'd["rows"][1]["label"] == "rtn:w3g32a,salient=3"' 'd["rows"][1]["kld"] < d["rows"][0]["kld"]' \
  'd["rows"][1]["bits_per_weight"] > d["rows"][0]["bits_per_weight"] + 0.3' 'd["rows"][2]["bits_per_weight"] == d["rows"][1]["bits_per_weight"]'
# an allocation mixing RTN with and without kept channels: its map checked through the calibrated pipeline
"$q" allocate --candidates rtn:w3g32a,rtn:w3g32a,salient=3 --target-bpw 4 --calib-tokens 256 --json > "$tmp/alr.json" \
  || fail "allocate rtn candidates with and without salient channels"
json "$tmp/alr.json" 'd["allocations"][0]["measured_kl"] is not None and d["allocations"][0]["measured_kl"] > 0'
# its map written by quantize (an RTN map with kept channels calibrates; it once went the
# uncalibrated route and stopped at the first salient tensor) scores what eval's map row scores
"$q" allocate --candidates rtn:w3g32a,rtn:w3g32a,salient=3 --target-bpw 4 --calib-tokens 512 --no-verify --out "$tmp/alr-map.json" > /dev/null 2>&1 \
  || fail "allocate --out with rtn salient candidates"
"$q" quantize --scheme-map "$tmp/alr-map.json" --calib-tokens 512 --out "$tmp/alr.safetensors" > /dev/null 2>&1 || fail "quantize an rtn map with salient tensors"
"$q" eval --max-tokens 300 --calib-tokens 512 --calib-skip 16384 --scheme-map "$tmp/alr-map.json" --compare "$tmp/alr.safetensors" --json > "$tmp/alrf.json" \
  || fail "eval the written rtn salient map"
json "$tmp/alrf.json" 'd["rows"][0]["kld"] == d["rows"][1]["kld"]' 'd["rows"][0]["bits_per_weight"] == d["rows"][1]["bits_per_weight"]'
expect_error "salient=' keeps original input channels" "$q" eval --scheme rtn:w4g32a,salient=1,had
# a scheme with '=' in an --override action (PATTERN=ACTION splits at the first '='): refused for
# what it is (kept channels need calibration, which overrides do not run), as a usage error
expect_error "salient=' picks channels by calibration" "$q" quantize --scheme rtn:w4g32a --override 'blk.0.attn_q.weight=rtn:w3g32a,salient=1' --out "$tmp/ov.safetensors"
[ ! -e "$tmp/ov.safetensors" ] || fail "a refused quantize left an output file"
"$q" quantize --scheme rtn:w4g32a --override 'blk.0.attn_q.weight=rtn:w2g32a,clip' --out "$tmp/ov2.safetensors" > /dev/null 2>&1 \
  || fail "--override with an option"
expect_error "override.*bad scheme" "$q" quantize --scheme rtn:w4g32a --override 'blk.0.attn_q.weight=rtn:w9g32a' --out "$tmp/ov3.safetensors"
# ppl quantizes without calibration: a calibrated scheme is refused saying why (RTN's salient channels too)
expect_error "needs calibration tokens.*salient" "$q" ppl --max-tokens 300 --scheme rtn:w4g32a,salient=1
expect_error "needs calibration tokens.*gptq calibrates" "$q" ppl --max-tokens 300 --scheme gptq:w4g32a
# eval --compare (#17): another file of the same model as a row, its block linears as stored: the
# reference written as F32 GGUF scores as the reference (KLD 0, its PPL); a Q4_0 export's row has
# the bits per weight its writer reported; a file of another model is refused naming it
"$q" convert --outtype f32 --format gguf --out "$tmp/cmp32.gguf" > /dev/null 2>&1 || fail "convert to F32 GGUF for --compare"
"$q" quantize --scheme rtn:q4_0 --format gguf --out "$tmp/cmp4.gguf" --json > "$tmp/cmpq.json" 2>/dev/null || fail "quantize to GGUF for --compare"
"$q" eval --max-tokens 300 --scheme rtn:w4g32a --compare "$tmp/cmp32.gguf" --compare "$tmp/cmp4.gguf" --json > "$tmp/cmp.json" || fail "eval --compare"
json "$tmp/cmp.json" 'len(d["rows"]) == 3' 'd["rows"][1]["label"] == "cmp32.gguf (FP32)"' 'd["rows"][1]["quantize_seconds"] is None' \
  'd["rows"][1]["kld"] == 0 and d["rows"][1]["ppl"] == d["reference"]["ppl"] and d["rows"][1]["bits_per_weight"] == 32' \
  'd["rows"][2]["label"] == "cmp4.gguf (Q4_0)" and d["rows"][2]["kld"] > 0' \
  'd["rows"][2]["path"].endswith("cmp4.gguf") and d["rows"][0]["path"] is None'
# a row asked for twice is refused (it would be measured twice and shown as two results)
expect_error "compare.*cmp4.gguf is given twice" "$q" eval --max-tokens 300 --compare "$tmp/cmp4.gguf" --compare "$tmp/./cmp4.gguf"
expect_error "scheme.*rtn:w4g32a is given twice" "$q" eval --max-tokens 300 --scheme rtn:w4g32a --scheme rtn:w4g32a
expect_error "scheme.*rtn:w4g32a is given twice" "$q" weights --scheme rtn:w4g32a --scheme rtn:w4g32a
expect_error "scheme-map.*given twice" "$q" eval --max-tokens 300 --scheme-map "$tmp/alloc-3.json" --scheme-map "$tmp/alloc-3.json"
python3 - "$tmp/cmp.json" "$tmp/cmpq.json" <<'PY' || fail "eval --compare: the file's bits per weight differ from its writer's"
import json, sys
e, q = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert abs(e["rows"][2]["bits_per_weight"] - q["file_bits_per_weight"]) < 1e-9, (e["rows"][2]["bits_per_weight"], q["file_bits_per_weight"])
PY
expect_error "SmolLM2-135M-Instruct.Q4_1.gguf: has 30 blocks; the reference .* has 5" "$q" eval --max-tokens 300 --compare "$M"
[ "$failures" = 0 ] || { echo "cases: $failures checks failed"; exit 1; }
echo "cases: all checks passed"
