#!/usr/bin/env bash
# The AWQ/TWQ thesis table of docs/awq.md on SmolLM2-135M: LAPE neurons over FLORES lines 1-506,
# then one `qforge eval` with RTN / AWQ / AWQ+GPTQ at w4g128 and w3g128 and TWQ (LAPE set and
# random control) for three target languages at w3g128, per-language FLORES PPL on the first
# 100 lines of the held-out half (507-606). About 75 min on 2 cores (8 + 65). Writes into $1 (default
# build/twq): neurons.json, neurons.txt, table.md, table.json. Assumes scripts/main.sh has built
# build/release and fetched the model.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/twq}
mkdir -p "$out"
model=$(bash scripts/fetch-models.sh)
q=${QFORGE_CLI:-./build/release/examples/qforge}
flores=${QFORGE_DATA:-../shared/data}/eval/flores200/devtest
start=$SECONDS
[ -f "$out/neurons.json" ] || "$q" neurons --model "$model" --flores "$flores" --out "$out/neurons.json" > "$out/neurons.txt"
echo "neurons: $((SECONDS - start)) s"
args=(--model "$model" --max-tokens 8192 --flores "$flores" --flores-max-lines 100 --neurons "$out/neurons.json"
      --scheme rtn:w4g128a --scheme awq:w4g128a --scheme awq+gptq:w4g128a
      --scheme rtn:w3g128a --scheme awq:w3g128a --scheme awq+gptq:w3g128a --scheme twq:w3g128a
      --twq-target fra_Latn --twq-target hin_Deva --twq-target swh_Latn)
start=$SECONDS
"$q" eval "${args[@]}" --json > "$out/table.json.tmp" 2> "$out/eval.log"
mv "$out/table.json.tmp" "$out/table.json"
echo "eval: $((SECONDS - start)) s"
python3 - "$out/table.json" > "$out/table.md" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"WikiText-2: {d['tokens']} tokens, context {d['context']}; reference {d['reference']['label']} PPL {d['reference']['ppl']:.4f}\n")
print("| scheme | PPL | KLD | top-1 | quant s |\n|---|---|---|---|---|")
for r in d["rows"]:
    print(f"| `{r['label']}` | {r['ppl']:.2f} | {r['kld']:.4f} | {100*r['top1']:.2f}% | {r['quantize_seconds']:.0f} |")
f = d["flores"]
print("\nFLORES lines 507-606, PPL / reference PPL\n")
print("| scheme | " + " | ".join(f["languages"]) + " | mean |\n|---|" + "---|" * (len(f["languages"]) + 1))
print("| reference PPL | " + " | ".join(f"{p:.1f}" for p in f["reference_ppl"]) + " | |")
for label, v in f["normalised_ppl"].items():
    print(f"| `{label}` | " + " | ".join(f"{x:.3f}" for x in v) + f" | {sum(v)/len(v):.3f} |")
if "added_nll_per_sentence" in f:
    print("\nFLORES lines 507-606, NLL added per sentence (nats; the same content in every language)\n")
    print("| scheme | " + " | ".join(f["languages"]) + " | mean |\n|---|" + "---|" * (len(f["languages"]) + 1))
    print("| tokens per sentence | " + " | ".join(f"{t / n:.1f}" for t, n in zip(f["scored_tokens"], f["sentences"])) + " | |")
    for label, v in f["added_nll_per_sentence"].items():
        print(f"| `{label}` | " + " | ".join(f"{x:.1f}" for x in v) + f" | {sum(v)/len(v):.1f} |")
print("\n| target | TWQ against | sentences | mean NLL difference | 95% bootstrap CI |\n|---|---|---|---|---|")
for t in d.get("twq_intervals", []):
    print(f"| {t['target']} | {t['against']} | {t['sentences']} | {t['mean_nll_difference']:+.4f} | [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}] |")
PY
cat "$out/table.md"
