"""Checks that qforge's type mixes give each tensor the type llama-quantize gives it.

For each MIX (q4_k_m, q2_k, ...): llama-quantize (llama-cpp-python's llama_model_quantize, no
importance matrix) writes F32.gguf as that mix into a temporary file; QFORGE_DIR/MIX.gguf (written
by `qforge convert --mix MIX` from the same model) must hold the same tensors with the same GGUF
type, tensor by tensor (as the `gguf` package reads both files).
Usage: llamacpp_types.py F32.gguf QFORGE_DIR MIX [MIX ...]"""
import os
import sys
import tempfile
from collections import Counter

import llama_cpp
from gguf import GGUFReader


def types_of(path):
    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


def llama_quantize(src, dst, mix):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + mix.upper())
    p.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize {mix}: status {rc}")


def main(f32, qforge_dir, *mixes):
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for mix in mixes:
            ref_path = os.path.join(tmp, mix + ".gguf")
            llama_quantize(f32, ref_path, mix)
            ref, ours = types_of(ref_path), types_of(os.path.join(qforge_dir, mix + ".gguf"))
            os.remove(ref_path)
            counts = Counter(ref.values())
            print(f"{mix}: llama-quantize {dict(sorted(counts.items()))}")
            if ref.keys() != ours.keys():
                print(f"  tensors differ: only llama-quantize {sorted(ref.keys() - ours.keys())[:5]}, only qforge {sorted(ours.keys() - ref.keys())[:5]}")
                bad += 1
            diff = [(n, ref[n], ours[n]) for n in ref if n in ours and ref[n] != ours[n]]
            for n, a, b in diff[:10]:
                print(f"  {n}: llama-quantize {a}, qforge {b}")
            if diff:
                print(f"  {len(diff)} tensors of another type")
                bad += 1
            else:
                print(f"  qforge: same type for all {len(ref)} tensors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
