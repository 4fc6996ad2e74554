"""Peer reference: dequantize every tensor of a GGUF file with the `gguf` package (llama.cpp's own
Python reader) and write each as raw little-endian float32 to OUT/<name>.f32."""
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main(path, out):
    os.makedirs(out, exist_ok=True)
    reader = GGUFReader(path)
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        values.tofile(os.path.join(out, t.name + ".f32"))
    print(f"{len(reader.tensors)} tensors dequantized by gguf into {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
