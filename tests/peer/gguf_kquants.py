"""Writes a GGUF file of random K-quant blocks (Q4_K, Q5_K, Q6_K) and a few other types with the
`gguf` package's writer, for the dequantization peer check. Block scales are random finite fp16;
every other byte is random, so every code and 6-bit scale/min combination occurs.
Usage: gguf_kquants.py OUT.gguf"""
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


def main(out):
    rng = np.random.default_rng(7)
    w = GGUFWriter(out, "llama")
    rows, cols = 6, 768
    w.add_tensor("q4_k", random_blocks(rng, T.Q4_K, rows, cols, [0, 2]), raw_dtype=T.Q4_K)
    w.add_tensor("q5_k", random_blocks(rng, T.Q5_K, rows, cols, [0, 2]), raw_dtype=T.Q5_K)
    w.add_tensor("q6_k", random_blocks(rng, T.Q6_K, rows, cols, [208]), raw_dtype=T.Q6_K)
    w.add_tensor("q8_0", random_blocks(rng, T.Q8_0, rows, cols, [0]), raw_dtype=T.Q8_0)
    w.add_tensor("f16", rng.standard_normal((rows, cols)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1])
