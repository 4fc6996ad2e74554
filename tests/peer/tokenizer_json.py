"""Peer check of qforge's tokenizer.json -> GGUF conversion on SmolLM2's real vocabulary.

make GGUF DIR: Hugging Face `tokenizers` builds SmolLM2's tokenizer from the GGUF's vocabulary and
merges (digits one by one, then GPT-2 byte level: SmolLM2's pre-tokenizer), its control tokens as
special added tokens, and saves DIR/tokenizer.json with its own writer; tokenizer_config.json says
add_bos_token false (SmolLM2's GGUF: no BOS added).

compare ORIGINAL.gguf WRITTEN.gguf N TEXT...: the tokenizer.ggml.* keys of the GGUF qforge wrote from
that tokenizer.json equal the original's (model, pre, tokens, token types, merges, BOS/EOS ids,
add-BOS/EOS), and llama.cpp (llama-cpp-python, vocabulary only) tokenizes the first N lines of
each TEXT (and a line of every special token) to the same ids with both files.
"""
import json
import sys

from gguf import GGUFReader

KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"]


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types and f.types[0].name == "ARRAY":
        if f.types[-1].name == "STRING":
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [int(f.parts[i][0]) for i in f.data]
    if f.types[0].name == "STRING":
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def make(gguf_path, out_dir):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    r = GGUFReader(gguf_path)
    tokens, types = field(r, "tokenizer.ggml.tokens"), field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    tok.save(f"{out_dir}/tokenizer.json")
    json.dump({"add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token")), "add_eos_token": False},
              open(f"{out_dir}/tokenizer_config.json", "w"))
    print(f"tokenizer.json: {len(tokens)} tokens, {sum(1 for t in types if t == 3)} special, {len(merges)} merges")


def compare(original, written, n, *texts):
    a, b = GGUFReader(original), GGUFReader(written)
    for key in KEYS:
        va, vb = field(a, key), field(b, key)
        if key == "tokenizer.ggml.add_eos_token" and va is None:
            va = False
        if va != vb:
            sys.exit(f"{key}: the written GGUF has {str(vb)[:200]}, the original {str(va)[:200]}")
    import llama_cpp
    lines = []
    for text in texts:
        lines += [l.rstrip("\n") for l in open(text, encoding="utf-8") if l.strip()][: int(n)]
    tokens, types = field(a, "tokenizer.ggml.tokens"), field(a, "tokenizer.ggml.token_type")
    lines.append(" x ".join(t for t, ty in zip(tokens, types) if ty == 3) + " 2026-12-05")
    ids = []
    for path in (original, written):
        m = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        ids.append([m.tokenize(l.encode("utf-8"), add_bos=False, special=True) for l in lines])
    if ids[0] != ids[1]:
        bad = next(i for i in range(len(lines)) if ids[0][i] != ids[1][i])
        sys.exit(f"llama.cpp tokenizes line {bad} differently: {ids[1][bad][:20]} vs {ids[0][bad][:20]}")
    print(f"tokenizer.json -> GGUF: {len(KEYS)} tokenizer keys equal to the original's; llama.cpp gives the same ids on "
          f"{len(lines)} lines ({sum(len(x) for x in ids[0])} tokens)")


if __name__ == "__main__":
    {"make": make, "compare": compare}[sys.argv[1]](*sys.argv[2:])
