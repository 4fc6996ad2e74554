"""Peer reference: Hugging Face `tokenizers` (the library SmolLM2's tokenizer is defined in) built
from the GGUF's vocabulary and merges with SmolLM2's pre-tokenizer (digits split one by one, then
GPT-2 byte-level), encoding lines 1..N of each FLORES file. Writes one line of ids per input line.
With a fifth argument, also saves that tokenizer as TOKENIZER_JSON (Hugging Face's own writer), for
qforge's tokenizer.json reader to be checked against the same ids.
Usage: bpe_encode.py MODEL.gguf FLORES_DIR N OUT [TOKENIZER_JSON]"""
import os
import sys

from gguf import GGUFReader
from tokenizers import Tokenizer, decoders, models, pre_tokenizers


def field_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def main(model, flores, n, out, json_out=None):
    reader = GGUFReader(model)
    tokens = field_strings(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field_strings(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    if json_out:
        tok.save(json_out)
    with open(out, "w") as o:
        for name in sorted(os.listdir(flores)):
            with open(os.path.join(flores, name), encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if i >= int(n):
                        break
                    ids = tok.encode(line.rstrip("\n"), add_special_tokens=False).ids
                    o.write(name + "\t" + " ".join(map(str, ids)) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
