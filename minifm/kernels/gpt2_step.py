"""One KV-cached decoding step of a GPT-2-style block for a few sequences: NumPy reference + dispatch.

Compiled twin: csrc/gpt2_step.pyx (module minifm.kernels._gpt2_step), which says what the step computes
(pre-norm LayerNorm block, learned positions, multi-head causal attention over the cache, GELU MLP,
optional biases) and how. It is the GPT-2 counterpart of minifm/kernels/decode_step.py's Llama step:
one call per layer instead of about ten kernel calls and a few hundred Python operations, which at a
small model's sizes cost more than the arithmetic (cProfile of one block of the benchmark's small model,
batch 1: about two thirds of its time outside the kernels).

    gpt2_layer(x, weights, keys, values, position)      x (B, d) float32, updated in place;
                                                        keys/values (B, H, L, D): written at `position`
    layer_weights(block) -> the weights tuple of a TransformerBlock (norm1, attn, norm2, mlp)

Used by GPT.forward (minifm/models/gpt.py) for one new token per sequence, graph recording off, no
padding mask, float32, stock GPT-2-layout blocks. Its results differ from the general path's by float32
rounding only (tests/models/test_gpt2_step_decoding.py compares them). The reference, gpt2_layer_reference,
normalises with the LayerNorm reference and takes the softmax reference (minifm.kernels.normalization, softmax).
Simplifications: float32 only; at most MAX_BATCH sequences; no padding mask, no GQA, no RoPE.
"""
from __future__ import annotations

import math

import numpy as np

from minifm.kernels import threads
from minifm.kernels._backend import compiled
from minifm.kernels.normalization import layer_norm_forward_reference
from minifm.kernels.softmax import softmax_reference

MAX_BATCH = 16

# Products of at least this many weight bytes per layer use every kernel thread, else one.
PARALLEL_BYTES = 1024 * 1024


def _layer_norm(x: np.ndarray, weight, bias, eps: float) -> np.ndarray:
    """LayerNorm of x (B, d): normalization's reference on x in float64 (the compiled step's mean and variance
    in double), the normalised rows rounded to float32, then weight and bias in float32."""
    _, xhat, _ = layer_norm_forward_reference(x.astype(np.float64), eps=eps)  # (B, d)
    out = xhat.astype(np.float32) * weight
    return out if bias is None else out + bias


def _gelu(u: np.ndarray, tanh_form: bool) -> np.ndarray:
    """GELU of u in float64, rounded to float32, in the compiled step's forms: tanh, or 0.5 u (1 + erf(u / sqrt 2))
    (not activations.gelu_reference's erfc form, which differs in the last bit for u < -4.3, where 1 + erf
    cancels as it does in the compiled erff)."""
    u64 = u.astype(np.float64)
    if tanh_form:
        return (0.5 * u64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (u64 + 0.044715 * u64 ** 3)))).astype(np.float32)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * u64 * (1.0 + erf(u64 / math.sqrt(2.0)))).astype(np.float32)


def _affine(h: np.ndarray, weight: np.ndarray, bias) -> np.ndarray:
    out = h @ weight.T
    return out if bias is None else out + bias


def gpt2_layer_reference(x: np.ndarray, weights: tuple, keys: np.ndarray, values: np.ndarray, position: int) -> None:
    """The step in NumPy (the readable math), on x (B, d) in place; writes keys/values at `position`."""
    (ln1_w, ln1_b, eps1, wq, bq, wk, bk, wv, bv, wo, bo, ln2_w, ln2_b, eps2, wfc, bfc, wproj, bproj,
     tanh_gelu) = weights
    batch, width = x.shape
    heads, head_dim = keys.shape[1], keys.shape[3]
    h = _layer_norm(x, ln1_w, ln1_b, eps1)  # (B, d)
    q, k, v = (_affine(h, w, b).reshape(batch, heads, head_dim) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    keys[:, :, position], values[:, :, position] = k, v  # (B, H, D) each
    past_k, past_v = keys[:, :, :position + 1], values[:, :, :position + 1]  # (B, H, t, D)
    scores = np.einsum("bhd,bhtd->bht", q.astype(np.float64), past_k) / math.sqrt(head_dim)  # (B, H, t)
    probs = softmax_reference(scores)  # (B, H, t)
    attended = np.einsum("bht,bhtd->bhd", probs, past_v).astype(np.float32).reshape(batch, width)  # (B, d)
    x += _affine(attended, wo, bo)
    u = _gelu(_affine(_layer_norm(x, ln2_w, ln2_b, eps2), wfc, bfc), bool(tanh_gelu))  # (B, hidden)
    x += _affine(u, wproj, bproj)


def layer_weights(block) -> tuple:
    """The weights tuple gpt2_layer takes, from a stock GPT-2-layout TransformerBlock."""
    attn, mlp = block.attn, block.mlp

    def data(tensor):
        return None if tensor is None else tensor.data

    return (block.norm1.weight.data, data(block.norm1.bias), float(block.norm1.eps),
            attn.q_proj.weight.data, data(attn.q_proj.bias), attn.k_proj.weight.data, data(attn.k_proj.bias),
            attn.v_proj.weight.data, data(attn.v_proj.bias), attn.o_proj.weight.data, data(attn.o_proj.bias),
            block.norm2.weight.data, data(block.norm2.bias), float(block.norm2.eps),
            mlp.fc_in.weight.data, data(mlp.fc_in.bias), mlp.fc_out.weight.data, data(mlp.fc_out.bias),
            mlp.approximate == "tanh")


def gpt2_layer(x: np.ndarray, weights: tuple, keys: np.ndarray, values: np.ndarray, position: int) -> None:
    """The block's step on x (B, d) float32 in place (compiled when built, else the reference)."""
    kernel = compiled("gpt2_step")
    if kernel is None:
        gpt2_layer_reference(x, weights, keys, values, position)
        return
    threads.follow_load()
    weight_bytes = sum(w.nbytes for w in (weights[3], weights[5], weights[7], weights[9], weights[14], weights[16]))
    count = threads.num_threads() if weight_bytes >= PARALLEL_BYTES else 1
    kernel.gpt2_layer(x, weights, keys, values, int(position), int(count))
