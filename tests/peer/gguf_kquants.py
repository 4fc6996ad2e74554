"""Writes a GGUF file of random blocks of every block type that llama-quantize emits (K-quants,
5-bit, i-quants, ternary) with the `gguf` package's writer, for the dequantization peer check.
Block scales are random finite fp16; every other byte is random, so every code, grid index, sign
pattern and sub-scale occurs.
Usage: gguf_kquants.py OUT.gguf [ROWS COLS] (default 6 x 768; 1 x 256 makes the fuzzer's seed
tests/fuzz/seeds/gguf/all_types.gguf)"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES


def random_blocks(rng, qtype, rows, cols, half_offsets):
    block, size = GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for off in half_offsets:  # fp16 super-block scales: finite, of either sign for dmin too
        h = rng.uniform(-0.05, 0.05, size=(rows, cols // block)).astype(np.float16)
        data[:, :, off:off + 2] = h.view(np.uint8).reshape(rows, cols // block, 2)
    return data.reshape(rows, -1)


def iq1_m_blocks(rng, rows, cols):
    """IQ1_M keeps its fp16 scale in the top 4 bits of its four scale words."""
    block, size = GGML_QUANT_SIZES[T.IQ1_M]
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    d = rng.uniform(-0.05, 0.05, size=(rows, cols // block)).astype(np.float16).view(np.uint16)
    words = data[:, :, 48:56].copy().view(np.uint16)  # (rows, blocks, 4)
    for k in range(4):
        words[:, :, k] = (words[:, :, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
    data[:, :, 48:56] = words.view(np.uint8)
    return data.reshape(rows, -1)


# type: offsets of its fp16 fields in a block
HALVES = {
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.Q8_0: [0], T.Q2_K: [80, 82], T.Q3_K: [108],
    T.Q5_0: [0], T.Q5_1: [0, 2], T.IQ2_XXS: [0], T.IQ2_XS: [0], T.IQ2_S: [0], T.IQ3_XXS: [0],
    T.IQ3_S: [0], T.IQ1_S: [0], T.IQ4_NL: [0], T.IQ4_XS: [0], T.TQ1_0: [52], T.TQ2_0: [64],
}


def main(out, rows=6, cols=768):
    rows, cols = int(rows), int(cols)
    rng = np.random.default_rng(7)
    w = GGUFWriter(out, "llama")
    for qtype, halves in HALVES.items():
        w.add_tensor(qtype.name.lower(), random_blocks(rng, qtype, rows, cols, halves), raw_dtype=qtype)
    w.add_tensor("iq1_m", iq1_m_blocks(rng, rows, cols), raw_dtype=T.IQ1_M)
    w.add_tensor("f16", rng.standard_normal((rows, cols)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
