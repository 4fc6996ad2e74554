"""Peer check of qforge's importance matrices, and llama-quantize with one.

Checks: the `gguf` package reads IMATRIX.gguf (written by `qforge imatrix`) as llama.cpp's
loader expects it (general.type "imatrix", imatrix.* keys, an F32 <name>.in_sum2 {columns, 1} and
<name>.counts {1, 1} per weight); the legacy LEGACY.dat of the same run, parsed here byte by byte,
holds the same means (sum / count, times ncall = ceil(tokens / chunk)); llama-quantize (the
llama_model_quantize API, given the means as tools/quantize/quantize.cpp's load_imatrix computes
them) quantizes F32.gguf as Q4_K_M with it, and its blocks differ from those it writes without.
With QFORGE_Q4_0.gguf (`qforge convert --outtype q4_0 --imatrix IMATRIX.gguf` of the same model):
llama-quantize's Q4_0 with the imatrix holds the same bytes in every decoder tensor both write
as Q4_0 (llama.cpp raises the first ffn_down tensors to Q4_1 and the head to Q6_K/Q8_0).
Usage: llamacpp_imatrix.py IMATRIX.gguf LEGACY.dat F32.gguf [QFORGE_Q4_0.gguf]"""
import ctypes
import os
import struct
import sys
import tempfile

import numpy as np
from gguf import GGUFReader


def read_gguf(path):
    r = GGUFReader(path)
    assert r.fields["general.type"].contents() == "imatrix", "general.type"
    meta = {k: r.fields[k].contents() for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")}
    t = {x.name: x for x in r.tensors}
    means = {}
    for name in t:
        if not name.endswith(".in_sum2"):
            continue
        base = name[: -len(".in_sum2")]
        sums, counts = t[name], t[base + ".counts"]
        assert sums.tensor_type.name == "F32" and counts.tensor_type.name == "F32", base
        assert list(counts.shape) == [1, 1], (base, counts.shape)
        s = np.asarray(sums.data, dtype=np.float32).reshape(-1)
        c = float(np.asarray(counts.data).reshape(-1)[0])
        means[base] = (s / np.float32(c) if c > 0 else np.ones_like(s)), c
    return meta, means


def read_legacy(path):
    b = open(path, "rb").read()
    at = 0

    def i32():
        nonlocal at
        v = struct.unpack_from("<i", b, at)[0]
        at += 4
        return v

    out = {}
    for _ in range(i32()):
        n = i32()
        name = b[at : at + n].decode()
        at += n
        ncall, nval = i32(), i32()
        vals = np.frombuffer(b, dtype="<f4", count=nval, offset=at).copy()
        at += 4 * nval
        out[name] = (vals, ncall)
    chunks = i32()
    n = i32()
    dataset = b[at : at + n].decode()
    at += n
    assert at == len(b), "trailing bytes"
    return out, chunks, dataset


def imatrix_param(means):
    """llama_model_quantize's imatrix argument: {name, data, size} per weight, then a null name."""
    import llama_cpp

    keep = []
    arr = (llama_cpp.llama_model_imatrix_data * (len(means) + 1))()
    for i, (name, m) in enumerate(sorted(means.items())):
        data = np.ascontiguousarray(m, dtype=np.float32)
        keep.append((name.encode(), data))
        arr[i].name = keep[-1][0]
        arr[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = data.size
    arr[len(means)].name = None
    return arr, keep


def llama_quantize(src, dst, ftype, means=None):
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype.upper())
    p.nthread = os.cpu_count() or 1
    keep = None
    if means is not None:
        arr, keep = imatrix_param(means)
        p.imatrix = ctypes.cast(arr, type(p.imatrix))
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
    del keep
    if rc != 0:
        raise SystemExit(f"llama_model_quantize {ftype}: status {rc}")


def main(imatrix, legacy, f32, qforge_q4_0=None):
    meta, means = read_gguf(imatrix)
    print(f"gguf package: {len(means)} entries, chunks {meta['imatrix.chunk_count']} of {meta['imatrix.chunk_size']}, datasets {meta['imatrix.datasets']}")
    old, chunks, dataset = read_legacy(legacy)
    assert chunks == meta["imatrix.chunk_count"], (chunks, meta)
    assert old.keys() == means.keys(), "entries differ"
    worst = 0.0
    for name, (vals, ncall) in old.items():
        m, count = means[name]
        assert ncall == -(-int(count) // int(meta["imatrix.chunk_size"])), (name, ncall, count)
        worst = max(worst, float(np.max(np.abs(vals / ncall - m) / np.maximum(m, 1e-30))))
    print(f"legacy .dat ({dataset}): same entries, means agree to {worst:.1e} (relative)")
    assert worst < 1e-5
    from gguf import GGUFReader

    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "plain.gguf"), os.path.join(tmp, "imatrix.gguf")
        llama_quantize(f32, a, "q4_k_m")
        llama_quantize(f32, b, "q4_k_m", {k: v[0] for k, v in means.items()})
        ta = {t.name: bytes(t.data) for t in GGUFReader(a).tensors}
        tb = {t.name: bytes(t.data) for t in GGUFReader(b).tensors}
        changed = sum(1 for n in ta if n.startswith("blk.") and ta[n] != tb[n])
        print(f"llama-quantize Q4_K_M with qforge's imatrix: {changed} block tensors differ from its plain Q4_K_M")
        assert changed > 0
        if qforge_q4_0:
            c = os.path.join(tmp, "q4_0.gguf")
            llama_quantize(f32, c, "q4_0", {k: v[0] for k, v in means.items()})
            theirs = {t.name: (t.tensor_type.name, bytes(t.data)) for t in GGUFReader(c).tensors}
            ours = {t.name: (t.tensor_type.name, bytes(t.data)) for t in GGUFReader(qforge_q4_0).tensors}
            both = [n for n in theirs if n.startswith("blk.") and n in ours and theirs[n][0] == ours[n][0] == "Q4_0"]
            same = [n for n in both if theirs[n][1] == ours[n][1]]
            print(f"Q4_0 with the imatrix: {len(same)} of {len(both)} decoder tensors both write as Q4_0 are byte-identical")
            assert both and len(same) == len(both), sorted(set(both) - set(same))[:5]
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
