"""Peer check of qforge's GPTQ/AWQ checkpoint export on a real model.

The `safetensors` package reads the checkpoint qforge wrote; every quantized layer is
dequantized here the way AutoGPTQ's and AutoAWQ's reference (torch) code unpacks it
(shifts by arange(0, 32, bits), v1 zeros + 1 masked; AWQ's reverse order 0 4 1 5 2 6 3 7,
weights W[n, i] = scales[g_idx[i], n] * (q - z)), q/k rows are put in GGUF's order with
llama.cpp's own convert_hf_to_gguf permutation, and each tensor must equal the F32 GGUF that
`qforge convert` made from the same checkpoint (qforge's import), read by the `gguf` package.
Usage: hf_checkpoint.py CHECKPOINT_DIR F32_GGUF
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from safetensors.numpy import load_file

ckpt, f32_path = sys.argv[1], sys.argv[2]
config = json.load(open(f"{ckpt}/config.json"))
qc = config["quantization_config"]
method, bits = qc["quant_method"], qc["bits"]
v1 = method == "gptq" and qc.get("checkpoint_format", "gptq") == "gptq"
tensors = load_file(f"{ckpt}/model.safetensors")
assert bits in (2, 4, 8), "this reference covers 2, 4 and 8 bits"


def unpack_rows(words, bits):
    """int32 words [R, C] -> codes [R * 32 / bits, C], packed along the first axis (GPTQ qweight)."""
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    w = words.view(np.uint32)[:, None, :] >> shifts[None, :, None]
    return (w & ((1 << bits) - 1)).reshape(-1, words.shape[1])


def unpack_cols(words, bits, order=None):
    """int32 words [R, C] -> codes [R, C * 32 / bits], packed along the second axis."""
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    w = (words.view(np.uint32)[:, :, None] >> shifts[None, None, :]) & ((1 << bits) - 1)
    if order is not None:
        w = w[:, :, order]
    return w.reshape(words.shape[0], -1)


AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def dequantize(base):
    qweight, qzeros, scales = tensors[base + ".qweight"], tensors[base + ".qzeros"], tensors[base + ".scales"].astype(np.float32)
    if method == "gptq":
        q = unpack_rows(qweight, bits).astype(np.int32)  # [K, N]
        z = unpack_cols(qzeros, bits).astype(np.int32)  # [G, N]
        if v1:
            z = (z + 1) & ((1 << bits) - 1)
        g_idx = tensors[base + ".g_idx"]
    else:
        q = unpack_cols(qweight, 4, AWQ_REVERSE_ORDER).astype(np.int32)  # [K, N]
        z = unpack_cols(qzeros, 4, AWQ_REVERSE_ORDER).astype(np.int32)
        g_idx = np.arange(q.shape[0]) // qc["group_size"]
    w = scales[g_idx, :] * (q - z[g_idx, :]).astype(np.float32)  # [K, N]
    return w.T  # [N, K] = [out, in]


def permute(weights, n_head, n_head_kv):
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rotate-half rows -> GGUF's)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
         "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}
gguf = {t.name: np.asarray(t.data) for t in GGUFReader(f32_path).tensors}
heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
checked, worst = 0, 0.0
for l in range(config["num_hidden_layers"]):
    for hf, short in names.items():
        base = f"model.layers.{l}.{hf}"
        want = dequantize(base) if base + ".qweight" in tensors else tensors[base + ".weight"].astype(np.float32)
        if short == "attn_q":
            want = permute(want, heads, heads)
        if short == "attn_k":
            want = permute(want, heads, kv_heads)
        got = gguf[f"blk.{l}.{short}.weight"].reshape(want.shape)
        diff = float(np.max(np.abs(got - want)))
        worst = max(worst, diff)
        checked += 1
        if diff != 0.0:
            sys.exit(f"{base} ({short}): qforge's import differs from the reference dequantization by {diff}")
for hf, g in [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")]:
    if hf in tensors:
        assert np.array_equal(gguf[g].reshape(tensors[hf].shape), tensors[hf].astype(np.float32)), hf
        checked += 1
print(f"{method} ({'v1' if v1 else 'v2' if method == 'gptq' else 'GEMM'}, {bits}-bit, group {qc['group_size']}, desc_act {qc.get('desc_act', False)}): "
      f"{checked} tensors equal to the reference dequantization (largest difference {worst})")
