"""Writes a vocabulary-only GGUF (tokenizer.ggml.model = "llama", SentencePiece) from a llama2.c
tokenizer.bin (the 32000-token Llama 2 vocabulary), with the `gguf` package's writer: pieces with
spaces as U+2581, scores, and token types (unknown, control, byte, normal). llama.cpp tokenizes
with it in the peer test. Usage: spm_gguf.py TOKENIZER.bin OUT.gguf"""
import struct
import sys

from gguf import GGUFWriter, TokenType


def main(src, out):
    data = open(src, "rb").read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, tokens, scores, types = 4, [], [], []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        piece = data[off:off + n].decode("utf-8")
        off += n
        i = len(tokens)
        tokens.append(piece.replace(" ", "\u2581"))
        scores.append(score)
        if i == 0:
            types.append(TokenType.UNKNOWN)
        elif i in (1, 2):
            types.append(TokenType.CONTROL)
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)
    w = GGUFWriter(out, "llama")
    # llama.cpp reads hyperparameters even for a vocabulary-only load
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
