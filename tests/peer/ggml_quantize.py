"""ggml's own quantizer (ggml_quantize_chunk in llama-cpp-python's libggml-base) on random rows,
with and without an importance matrix, for qforge's RTN to be compared with block for block.

Writes OUT.gguf holding: `x` (F32, ROWS x COLS, heavy-tailed), `imatrix` (F32, COLS: positive,
spread over three orders of magnitude), and for each type T of Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K
Q4_K Q5_K Q6_K: `T.plain` (ggml's blocks of x without an imatrix, as llama-quantize writes
without one) and `T.imatrix` (with it). Usage: ggml_quantize.py OUT.gguf [ROWS COLS SEED]"""
import ctypes
import glob
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

import llama_cpp

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def ggml():
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = ctypes.CDLL(sorted(glob.glob(os.path.join(lib_dir, "libggml-base.so*")))[0])
    f = lib.ggml_quantize_chunk
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return f


def main(out, rows="16", cols="512", seed="7"):
    rows, cols = int(rows), int(cols)
    rng = np.random.default_rng(int(seed))
    x = (rng.standard_t(4, size=(rows, cols)) * 0.02).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero group
    im = np.exp(rng.uniform(np.log(1e-3), np.log(1.0), size=cols)).astype(np.float32)
    quantize = ggml()
    w = GGUFWriter(out, "ggml-peer")
    w.add_tensor("x", x)
    w.add_tensor("imatrix", im)
    for name in TYPES:
        t = GGMLQuantizationType[name]
        block, size = GGML_QUANT_SIZES[t]
        for label, imp in (("plain", None), ("imatrix", im)):
            dst = np.zeros(rows * cols // block * size, dtype=np.uint8)
            n = quantize(int(t), x.ctypes.data, dst.ctypes.data, 0, rows, cols, None if imp is None else imp.ctypes.data)
            assert n == dst.size, (name, n, dst.size)
            w.add_tensor(f"{name}.{label}", dst.reshape(rows, cols // block * size), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
