"""Peer check of a GGUF file qforge wrote: llama.cpp (llama-cpp-python) loads it, generates a few
tokens, and its next-token distributions over the first N tokens of a text agree with qforge's own
forward of the same file (peer_logits helper, 'stored' weights): mean KL(llama.cpp || qforge)
below LIMIT_KLD. Where the file holds block weights, the two sides quantize activations
differently (llama.cpp: Q8_0/Q8_1 blocks; qforge: its own 8-bit recipe), hence a looser limit
there than for F32. Usage: llamacpp_export.py FILE.gguf TEXT N HELPER LIMIT_KLD"""
import os
import sys

from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llamacpp_logits import compare  # noqa: E402


def main(path, text_path, n, helper, limit_kld):
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


if __name__ == "__main__":
    main(*sys.argv[1:])
