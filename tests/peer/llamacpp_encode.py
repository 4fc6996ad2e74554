"""Peer reference: llama.cpp's own tokenizer (through llama-cpp-python, which builds llama.cpp from
source) on lines 1..N of each FLORES file, with the SmolLM2 GGUF's vocabulary. Writes one line of
ids per input line, in the format bpe_encode.py writes. Usage: llamacpp_encode.py MODEL.gguf FLORES_DIR N OUT"""
import os
import sys

from llama_cpp import Llama


def main(model, flores, n, out):
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    with open(out, "w") as o:
        for name in sorted(os.listdir(flores)):
            with open(os.path.join(flores, name), encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if i >= int(n):
                        break
                    ids = llm.tokenize(line.rstrip("\n").encode("utf-8"), add_bos=False, special=False)
                    o.write(name + "\t" + " ".join(map(str, ids)) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
