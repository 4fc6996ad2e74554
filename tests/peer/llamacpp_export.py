"""Peer check of a GGUF file qforge wrote: llama.cpp (llama-cpp-python) loads it, generates a few
tokens, and its next-token distributions over the first N tokens of a text agree with qforge's own
forward of the same file (peer_logits helper, 'stored' weights): mean KL(llama.cpp || qforge)
below LIMIT_KLD. Where the file holds block weights, the two sides quantize activations
differently (llama.cpp: Q8_0/Q8_1 blocks; qforge: its own 8-bit recipe), hence a looser limit
there than for F32. With REFERENCE.gguf (the same model written by another writer: the gguf
package's gguf_to_f32.py), llama.cpp's distributions on FILE must also equal its own on REFERENCE
(KLD < 1e-6): a metadata or tensor-layout error that qforge's own reader shares would show there.
Usage: llamacpp_export.py FILE.gguf TEXT N HELPER LIMIT_KLD [REFERENCE.gguf]"""
import os
import sys

import numpy as np

from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llamacpp_logits import compare, llama_cpp_logits, log_softmax  # noqa: E402


def main(path, text_path, n, helper, limit_kld, reference=None):
    n = int(n)
    llm = Llama(model_path=path, n_ctx=64, n_threads=2, verbose=False)
    out = llm("Once upon a time", max_tokens=8, temperature=0.0)
    print(f"{os.path.basename(path)}: llama.cpp generates {out['choices'][0]['text']!r}")
    text = open(text_path, encoding="utf-8").read().replace("\r", "")[: n * 16]
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:n]
    del llm
    import tempfile
    with tempfile.TemporaryDirectory() as work:
        with open(work + "/tokens.txt", "w") as f:
            f.write(" ".join(map(str, tokens)))
        kld, top1 = compare(os.path.basename(path), path, tokens, helper, work)
    if kld >= float(limit_kld):
        print(f"FAIL: llama.cpp and qforge differ on {path} beyond KLD < {limit_kld}")
        sys.exit(1)
    if reference:
        lp, lq = log_softmax(llama_cpp_logits(reference, tokens)), log_softmax(llama_cpp_logits(path, tokens))
        kref = float((np.exp(lp) * (lp - lq)).sum(axis=-1).mean())
        print(f"llama.cpp on {os.path.basename(path)} against {os.path.basename(reference)}: mean KLD {kref:.3e}")
        if kref >= 1e-6:
            print("FAIL: qforge's file runs differently in llama.cpp from the reference file of the same weights")
            sys.exit(1)


if __name__ == "__main__":
    main(*sys.argv[1:])
