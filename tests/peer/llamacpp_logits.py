"""Peer reference: llama.cpp (through llama-cpp-python) runs SmolLM2 over the first N tokens of a
text; qforge's helper runs the same token ids through its decoder on the same file; this compares
the next-token distributions: mean KL(llama.cpp || qforge) and top-1 agreement.

Two pairs. The checked one runs both on the F32 copy of the model (gguf_to_f32.py: the "Q4_1-ref"
weights), where neither side quantizes activations: KLD must stay below LIMIT_KLD and top-1
agreement at or above MIN_TOP1. The other runs both on the Q4_1 file itself, each with its own
8-bit activation quantization (llama.cpp's Q8_1 blocks, qforge's recipe): printed for the record.
Both use an F32 KV cache in llama.cpp (its default is F16, which qforge does not use).
Usage: llamacpp_logits.py Q4_1.gguf F32.gguf TEXT N HELPER LIMIT_KLD MIN_TOP1"""
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def llama_cpp_logits(model, tokens):
    llm = Llama(model_path=model, n_ctx=len(tokens), n_batch=len(tokens), n_ubatch=len(tokens), logits_all=True, n_threads=2,
                verbose=False, type_k=0, type_v=0, flash_attn=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def compare(label, model, tokens, helper, work):
    ref = llama_cpp_logits(model, tokens)
    subprocess.run([helper, model, work + "/tokens.txt", work + "/logits.bin", "stored"], check=True)
    ours = np.fromfile(work + "/logits.bin", dtype=np.float32).reshape(len(tokens), -1)
    lp, lq = log_softmax(ref), log_softmax(ours)
    kld = float((np.exp(lp) * (lp - lq)).sum(axis=-1).mean())
    top1 = float((ref.argmax(-1) == ours.argmax(-1)).mean())
    print(f"{label}: {len(tokens)} positions, mean KLD(llama.cpp || qforge) {kld:.3e}, top-1 agreement {100 * top1:.2f}%")
    return kld, top1


def main(q41, f32, text_path, n, helper, limit_kld, min_top1):
    n = int(n)
    text = open(text_path, encoding="utf-8").read().replace("\r", "")[: n * 16]
    vocab = Llama(model_path=q41, vocab_only=True, verbose=False)
    tokens = vocab.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:n]
    with tempfile.TemporaryDirectory() as work:
        with open(work + "/tokens.txt", "w") as f:
            f.write(" ".join(map(str, tokens)))
        kld, top1 = compare("F32 model (Q4_1-ref), checked", f32, tokens, helper, work)
        compare("Q4_1 blocks, 8-bit activations on both sides (informative)", q41, tokens, helper, work)
    if kld >= float(limit_kld) or top1 < float(min_top1):
        print(f"FAIL: qforge's decoder differs from llama.cpp's beyond KLD < {limit_kld}, top-1 >= {min_top1}")
        sys.exit(1)


if __name__ == "__main__":
    main(*sys.argv[1:])
