"""qforge's GPTQ/AWQ exports against llama-quantize, both judged by llama.cpp (issue #15's claim).

On SmolLM2-135M: the reference is qforge's F32 export of the Q4_1 file's weights (the model
llama.cpp runs as F32). For each llama.cpp type mix (Q4_K_M, Q3_K_M, Q2_K by default):
  - llama-quantize (llama-cpp-python's llama_model_quantize) without and with an importance matrix
    (`qforge imatrix` on the calibration slice: llama-cpp-python has no llama-imatrix);
  - qforge quantize --mix MIX with GPTQ and AWQ on the mix's base grid, calibrated on the same slice.
llama.cpp then runs every file over the first EVAL tokens of WikiText-2 test in windows of CTX:
perplexity, mean KL divergence from the F32 model's next-token distributions, top-1 agreement.
Bits per weight are counted from the bytes of the blk.* tensors as written. Quantization times are
wall-clock seconds on this machine (llama-quantize: its own threads = all cores; qforge: --threads 0).
Calibration: WikiText-2 test after its first 16384 tokens (qforge's default slice), disjoint from
the evaluated tokens.

Usage: python bench/export_claim.py QFORGE_BINARY MODEL.gguf DATA_DIR WORK_DIR
       [--mixes q4_k_m,q3_k_m,q2_k] [--eval 4096] [--ctx 512] [--calib 4096] [--methods 'gptq;awq']
Prints a markdown table (and writes WORK_DIR/claim.json)."""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from gguf import GGUFReader
from llama_cpp import Llama

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "peer"))
from llamacpp_imatrix import llama_quantize, read_gguf  # noqa: E402
from llamacpp_logits import log_softmax  # noqa: E402


def run(cmd):
    t = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.time() - t


def block_bpw(path):
    bits = n = 0
    for t in GGUFReader(path).tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            bits += 8 * int(t.n_bytes)
            n += int(t.n_elements)
    return bits / n


def window_logits(path, windows, ctx):
    llm = Llama(model_path=path, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True, n_threads=os.cpu_count() or 1, verbose=False,
                type_k=0, type_v=0, flash_attn=False)
    for w in windows:
        llm.reset()
        llm.eval(w)
        yield np.array(llm.scores[: len(w)], dtype=np.float32)
    del llm


def evaluate(path, windows, ctx, ref=None):
    nll = kld = top = count = 0.0
    kept = []
    for i, logits in enumerate(window_logits(path, windows, ctx)):
        lp = log_softmax(logits)
        w = windows[i]
        nll -= float(lp[np.arange(len(w) - 1), w[1:]].sum())
        count += len(w) - 1
        if ref is None:
            kept.append(lp.astype(np.float32))
        else:
            lr = ref[i].astype(np.float64)
            kld += float((np.exp(lr) * (lr - lp)).sum())
            top += float((lr.argmax(-1) == lp.argmax(-1)).sum())
    positions = sum(len(w) for w in windows)
    return {"ppl": float(np.exp(nll / count)), "kld": kld / positions if ref is not None else 0.0,
            "top1": top / positions if ref is not None else 1.0}, kept


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("qforge")
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("work")
    ap.add_argument("--mixes", default="q4_k_m,q3_k_m,q2_k")
    ap.add_argument("--no-llama", action="store_true", help="only qforge's files (llama-quantize's rows already measured)")
    ap.add_argument("--methods", default="gptq;awq", help="';'-separated: a method, or a scheme with {base} for the mix's grid")
    ap.add_argument("--eval", type=int, default=4096)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--calib", type=int, default=4096)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    text = os.path.join(a.data, "eval", "wikitext-2-raw", "wiki.test.raw")
    f32 = os.path.join(a.work, "f32.gguf")
    run([a.qforge, "convert", "--model", a.model, "--outtype", "f32", "--format", "gguf", "--out", f32])
    imatrix = os.path.join(a.work, "imatrix.gguf")
    t_imatrix = run([a.qforge, "imatrix", "--model", a.model, "--calib-tokens", str(a.calib), "--out", imatrix])
    means = {k: v[0] for k, v in read_gguf(imatrix)[1].items()}

    vocab = Llama(model_path=f32, vocab_only=True, verbose=False)
    raw = open(text, encoding="utf-8").read().replace("\r", "")[: a.eval * 16]
    tokens = vocab.tokenize(raw.encode("utf-8"), add_bos=True, special=False)[: a.eval]
    del vocab
    windows = [tokens[i: i + a.ctx] for i in range(0, len(tokens) - 1, a.ctx) if len(tokens[i: i + a.ctx]) > 1]
    ref_stats, ref = evaluate(f32, windows, a.ctx)
    rows = [{"file": "F32 (reference)", "bpw": block_bpw(f32), "seconds": 0.0, **ref_stats}]
    print(f"reference F32: ppl {ref_stats['ppl']:.3f} on {len(tokens)} tokens; imatrix {t_imatrix:.1f} s", flush=True)

    for mix in a.mixes.split(","):
        base = {"q4_k_m": "q4_k", "q3_k_m": "q3_k", "q2_k": "q2_k", "q5_k_m": "q5_k", "q3_k_s": "q3_k", "q4_k_s": "q4_k"}[mix]
        files = []
        for label, im in () if a.no_llama else (("llama-quantize", None), ("llama-quantize + imatrix", means)):
            out = os.path.join(a.work, f"llama_{mix}{'_imatrix' if im else ''}.gguf")
            t = time.time()
            llama_quantize(f32, out, mix, im)
            files.append((f"{mix.upper()} {label}", out, time.time() - t))
        for method in a.methods.split(";"):
            # "gptq" -> gptq:q4_k; a scheme with options names the base as {base}: "gptq:{base},clip"
            scheme = method.format(base=base) if "{base}" in method else f"{method}:{base}"
            out = os.path.join(a.work, f"qforge_{mix}_{len(files)}.gguf")
            t = run([a.qforge, "quantize", "--model", a.model, "--mix", mix, "--scheme", scheme, "--calib-tokens", str(a.calib),
                     "--format", "gguf", "--out", out])
            files.append((f"{mix.upper()} qforge {scheme}", out, t))
        for label, path, seconds in files:
            stats, _ = evaluate(path, windows, a.ctx, ref)
            rows.append({"file": label, "bpw": block_bpw(path), "seconds": seconds, **stats})
            print(f"{label}: bpw {rows[-1]['bpw']:.3f}, ppl {stats['ppl']:.3f}, KLD {stats['kld']:.4f}, top-1 {100 * stats['top1']:.1f}%, "
                  f"{seconds:.1f} s", flush=True)
            os.remove(path)

    print()
    print(f"| file | decoder bpw | PPL | KLD vs F32 | top-1 | quantize s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['bpw']:.3f} | {r['ppl']:.3f} | {r['kld']:.4f} | {100 * r['top1']:.1f}% | {r['seconds']:.1f} |")
    with open(os.path.join(a.work, "claim.json"), "w") as f:
        json.dump({"eval_tokens": len(tokens), "ctx": a.ctx, "calib_tokens": a.calib, "imatrix_seconds": t_imatrix, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
