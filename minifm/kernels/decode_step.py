"""One KV-cached decoding step of a Llama-style block, batch 1, one token, float32: NumPy reference + dispatch.

Compiled twin: csrc/decode_step.pyx (module minifm.kernels._decode_step): the whole step in one call,
its matrix-vector products streaming the weights at the memory bandwidth (4 rows per pass, AVX2, rows
split across the OpenMP threads).

The math, for the residual stream x (E,) of one token at `position`, a pre-norm block with RMSNorm, RoPE
(rotate-half), grouped-query attention (H query heads, G key/value heads of D values) and SwiGLU (F hidden):

    h = x / sqrt(mean(x^2) + eps) * norm1
    q = Wq h (H, D),  k = Wk h (G, D),  v = Wv h (G, D);  q, k rotated by the position's cos/sin
    cache_k[:, position] = k;  cache_v[:, position] = v
    a_i = softmax(q_i . cache_k[g]^T / sqrt(D)) cache_v[g]   over positions 0..position, g = i // (H / G)
    x = x + Wo a
    h = x / sqrt(mean(x^2) + eps) * norm2
    x = x + Wdown (silu(Wgate h) * Wup h)

This is TransformerBlock's no-grad forward (minifm/nn/block.py) for that case, written as one function:
decoding a token is ~25 NumPy and kernel calls per layer there, and the products read 538 MB of float32
weights per token for SmolLM2-135M, so the Python between them and the products' speed are what decoding
costs. `matvec` is the product alone (the output head uses it). The compiled results differ from the
reference (and from the general path) by float32 rounding only: sums in another order.

When it runs: `applies(...)`: the compiled module built, every array float32 and C-contiguous.
Simplifications: no biases, no padding mask, batch 1 and one token; the caller (TransformerBlock) checks
its structure and takes the general path otherwise.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minifm.kernels import threads
from minifm.kernels._backend import compiled


class LayerWeights(NamedTuple):
    """The arrays and sizes of one block, as decode_layer reads them (shapes in the module docstring)."""
    norm1: np.ndarray   # (E,)
    wq: np.ndarray      # (H*D, E)
    wk: np.ndarray      # (G*D, E)
    wv: np.ndarray      # (G*D, E)
    wo: np.ndarray      # (E, H*D)
    norm2: np.ndarray   # (E,)
    wgate: np.ndarray   # (F, E)
    wup: np.ndarray     # (F, E)
    wdown: np.ndarray   # (E, F)
    eps: float
    heads: int


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight, the mean in float64 (x (E,))."""
    scale = np.float32(1.0 / np.sqrt(np.dot(x.astype(np.float64), x) / x.shape[0] + eps))
    return x * scale * weight


def _rotate(rows: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """rotate-half RoPE of rows (heads, D) by one position's cos, sin (D/2,)."""
    half = rows.shape[1] // 2
    first, second = rows[:, :half], rows[:, half:]  # (heads, D/2) each
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=1)


def decode_layer_reference(x: np.ndarray, layer: LayerWeights, cache_k: np.ndarray, cache_v: np.ndarray,
                           position: int, cos: np.ndarray, sin: np.ndarray) -> None:
    """One block's decoding step on x (E,) in place; writes this token's key/value into cache_k, cache_v
    (G, max_length, D) at `position`; cos, sin (D/2,)."""
    kv_heads, _, head_dim = cache_k.shape
    heads, group = layer.heads, layer.heads // kv_heads
    h = _rms_norm(x, layer.norm1, layer.eps)  # (E,)
    q = _rotate((layer.wq @ h).reshape(heads, head_dim), cos, sin)  # (H, D)
    k = _rotate((layer.wk @ h).reshape(kv_heads, head_dim), cos, sin)  # (G, D)
    v = (layer.wv @ h).reshape(kv_heads, head_dim)  # (G, D)
    cache_k[:, position], cache_v[:, position] = k, v
    keys = np.repeat(cache_k[:, :position + 1], group, axis=0)  # (H, position + 1, D)
    values = np.repeat(cache_v[:, :position + 1], group, axis=0)  # (H, position + 1, D)
    scores = np.einsum("hd,htd->ht", q, keys) / np.float32(np.sqrt(head_dim))  # (H, position + 1)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    attended = np.einsum("ht,htd->hd", weights, values).reshape(-1)  # (H*D,)
    x += layer.wo @ attended
    h = _rms_norm(x, layer.norm2, layer.eps)  # (E,)
    gate, up = layer.wgate @ h, layer.wup @ h  # (F,) each
    x += layer.wdown @ (gate / (1 + np.exp(-gate)) * up)


def matvec_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """weight @ x for x (K,), weight (N, K) -> (N,)."""
    return weight @ x


def _float32_contiguous(*arrays) -> bool:
    return all(array.dtype == np.float32 and array.flags.c_contiguous for array in arrays)


def applies(x: np.ndarray, layer: LayerWeights, cache_k: np.ndarray, cache_v: np.ndarray) -> bool:
    """True when the compiled decode_layer takes this step (see the module docstring)."""
    return (compiled("decode_step") is not None and x.ndim == 1
            and _float32_contiguous(x, cache_k, cache_v, *layer[:9]))


def decode_layer(x: np.ndarray, layer: LayerWeights, cache_k: np.ndarray, cache_v: np.ndarray,
                 position: int, cos: np.ndarray, sin: np.ndarray) -> None:
    """decode_layer_reference's step, compiled when it applies; x (E,) updated in place."""
    kernel = compiled("decode_step")
    if kernel is None or not applies(x, layer, cache_k, cache_v):
        decode_layer_reference(x, layer, cache_k, cache_v, position, cos, sin)
        return
    threads.follow_load()  # the OpenMP thread count follows the load, as threads.matmul's products do
    q_size, kv_size, hidden = layer.wq.shape[0], layer.wk.shape[0], layer.wgate.shape[0]
    scratch = np.empty(2 * q_size + 2 * kv_size + 2 * hidden + layer.heads * (position + 1), dtype=np.float32)
    kernel.decode_layer(x, *layer[:9], cache_k, cache_v, position, np.ascontiguousarray(cos, dtype=np.float32),
                        np.ascontiguousarray(sin, dtype=np.float32), layer.eps, layer.heads, scratch)


def matvec(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """weight @ x for x (K,), weight (N, K) -> (N,): the compiled streaming product when both are float32
    and C-contiguous, else the reference."""
    kernel = compiled("decode_step")
    if kernel is None or x.ndim != 1 or weight.ndim != 2 or not _float32_contiguous(x, weight) \
            or weight.shape[1] != x.shape[0] or weight.size == 0:
        return matvec_reference(x, weight)
    threads.follow_load()
    out = np.empty(weight.shape[0], dtype=np.float32)  # (N,)
    kernel.matvec_rows(x, weight, out)
    return out
