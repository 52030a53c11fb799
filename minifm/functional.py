"""`minifm.functional` (imported as F): torch.nn.functional-style operations on Tensors.

Axis arguments use NumPy's name `axis`. The hot composite operations are single fused Functions
whose forward and backward call the Cython kernels (softmax, cross-entropy, attention); the rest
are thin names over minifm.autograd.ops.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd import ops
from minifm.autograd.grad_mode import is_grad_enabled
from minifm.autograd.ops.attention import FlashAttention
from minifm.autograd.ops.dropout import Dropout
from minifm.autograd.ops.loss import CrossEntropy
from minifm.autograd.ops.normalization import LayerNorm, RMSNorm
from minifm.autograd.ops.softmax import LogSoftmax, Softmax
from minifm.autograd.tensor import Tensor, data_of

# pointwise activations and structural ops, re-exported under their usual names
relu = ops.relu
gelu = ops.gelu
silu = ops.silu
sigmoid = ops.sigmoid
tanh = ops.tanh
softplus = ops.softplus
linear = ops.linear
embedding = ops.embedding
pad = ops.pad
logsumexp = ops.logsumexp


def logsigmoid(x) -> Tensor:
    """log(sigmoid(x)) = -softplus(-x), elementwise, without overflow for large |x| (torch's F.logsigmoid).

    The one log-sigmoid of minifm: the reward model's Bradley-Terry loss and DPO's loss use it.
    """
    return -ops.softplus(-x)


def mse_loss(input, target, reduction: str = "mean") -> Tensor:  # noqa: A002  (torch's name)
    """Squared error (input - target)^2, averaged ("mean"), summed ("sum") or per element ("none")."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    difference = input - target
    squared = difference * difference
    if reduction == "none":
        return squared
    return squared.sum() if reduction == "sum" else squared.mean()


def softmax(x, axis: int = -1) -> Tensor:
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis: int = -1) -> Tensor:
    return LogSoftmax.apply(x, axis=axis)


def cross_entropy(logits, targets, ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean") -> Tensor:
    """Cross-entropy over the last axis of `logits` (..., V) against integer `targets` (...).

    torch's semantics: rows whose target is `ignore_index` contribute nothing and are not counted by
    the mean; label smoothing mixes the one-hot target with the uniform distribution.
    """
    return CrossEntropy.apply(logits, data_of(targets), ignore_index=ignore_index,
                              label_smoothing=label_smoothing, reduction=reduction)


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    return LayerNorm.apply(x, weight, bias, eps)


def rms_norm(x, weight=None, eps: float = 1e-6) -> Tensor:
    return RMSNorm.apply(x, weight, eps)


def dropout(x, p: float = 0.5, training: bool = True, rng: np.random.Generator | None = None) -> Tensor:
    """Inverted dropout with a mask drawn from `rng` (required when training with p > 0)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout in training needs rng=numpy.random.Generator, got {type(rng).__name__}")
    return Dropout.apply(x, p, rng)


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal: bool = False, scale: float | None = None,
                                 key_padding_mask=None, q_offset: int = 0, window: int | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) v for q (B, H, Tq, D) and k, v (B, Hkv, Tk, D), H % Hkv == 0.

    is_causal uses torch's top-left alignment unless `q_offset` shifts the query positions (a KV
    cache passes q_offset = Tk - Tq). `key_padding_mask` (B, Tk), True = attend, and causal masking
    run on the flash-style kernel; a general `attn_mask` (bool "may attend", or additive float)
    uses the materialised path, `_dense_attention`. Rows with no key to attend to produce zeros.
    `window` (sliding-window attention, as Mistral's `sliding_window`) lets a query see only keys
    fewer than `window` positions away (see sliding_window_mask); it runs on the materialised path.
    """
    qs, ks, vs = np.shape(data_of(q)), np.shape(data_of(k)), np.shape(data_of(v))
    if len(qs) != 4 or len(ks) != 4 or ks != vs or qs[0] != ks[0] or qs[3] != ks[3]:
        raise ValueError(f"attention needs q (B, H, Tq, D) and k, v (B, Hkv, Tk, D); got q {qs}, k {ks}, v {vs}")
    if qs[1] % ks[1]:
        raise ValueError(f"query heads {qs[1]} must be a multiple of key/value heads {ks[1]}")
    if key_padding_mask is not None:
        key_padding_mask = np.asarray(data_of(key_padding_mask), dtype=bool)
        if key_padding_mask.shape != (ks[0], ks[2]):
            raise ValueError(f"key_padding_mask must have shape {(ks[0], ks[2])}, got {key_padding_mask.shape}")
    if window is not None:
        attn_mask = _with_sliding_window(attn_mask, window, qs[2], ks[2], q_offset)
    if attn_mask is None:
        return FlashAttention.apply(q, k, v, scale=scale, causal=is_causal, q_offset=q_offset,
                                    key_mask=key_padding_mask)
    mask = np.asarray(data_of(attn_mask))
    if mask.dtype != bool and mask.dtype.kind != "f":
        raise TypeError(f"attn_mask must be boolean (True = may attend) or float (additive), got dtype {mask.dtype}")
    try:
        fits = np.broadcast_shapes(mask.shape, (qs[0], qs[1], qs[2], ks[2])) == (qs[0], qs[1], qs[2], ks[2])
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"attn_mask of shape {mask.shape} does not broadcast to (B, H, Tq, Tk) = "
                         f"{(qs[0], qs[1], qs[2], ks[2])}")
    if key_padding_mask is not None:
        padding = key_padding_mask[:, None, None, :]
        mask = (mask & padding) if np.asarray(mask).dtype == bool else np.where(padding, mask, -np.inf)
    return _dense_attention(q, k, v, mask, scale, is_causal, q_offset)


def sliding_window_mask(query_length: int, key_length: int, window: int, q_offset: int = 0) -> np.ndarray:
    """(Tq, Tk) bool, True where query i may attend to key j under a sliding window of `window` keys.

    Query i sits at position i + q_offset (q_offset = Tk - Tq with a KV cache, as for is_causal), key
    j at position j; the query may see key j when |(i + q_offset) - j| < window. With is_causal this
    leaves each query itself and the window - 1 keys before it (Mistral's sliding_window, Beltagy et
    al.'s Longformer local attention); without it, window - 1 keys on each side. A window as long as
    the sequence masks nothing.
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int (the number of positions a query sees), got {window!r}")
    query_positions = np.arange(query_length)[:, None] + q_offset  # (Tq, 1)
    key_positions = np.arange(key_length)[None, :]  # (1, Tk)
    return np.abs(query_positions - key_positions) < window  # (Tq, Tk)


def _with_sliding_window(attn_mask, window: int, query_length: int, key_length: int, q_offset: int):
    """`attn_mask` (None, bool or additive float) further limited to the sliding window."""
    allowed = sliding_window_mask(query_length, key_length, window, q_offset)  # (Tq, Tk)
    if attn_mask is None:
        return allowed
    mask = np.asarray(data_of(attn_mask))
    if mask.dtype == bool:
        return mask & allowed
    return np.where(allowed, mask, -np.inf).astype(mask.dtype)


def _dense_attention(q, k, v, attn_mask: np.ndarray, scale, is_causal: bool, q_offset: int) -> Tensor:
    """Attention under a general mask, written as the plain math over differentiable ops:

        scores = q k^T * scale + additive mask, -inf where not allowed;  p = softmax(scores);  out = p v

    Its gradients are those of the ops (the fused Softmax's backward among them), so nothing is
    derived twice; gradcheck covers it in tests/autograd/test_attention_function.py. It materialises
    the (B, H, Tq, Tk) scores, which the flash path never does.
    """
    batch, heads, tq, head_dim = np.shape(data_of(q))
    kv_heads, tk = np.shape(data_of(k))[1:3]
    groups = heads // kv_heads
    if groups > 1:  # grouped-query attention: each kv head serves `groups` query heads
        grouped = (batch, kv_heads, groups, tk, head_dim)
        k = ops.reshape(ops.broadcast_to(ops.unsqueeze(k, 2), grouped), batch, heads, tk, head_dim)  # (B, H, Tk, D)
        v = ops.reshape(ops.broadcast_to(ops.unsqueeze(v, 2), grouped), batch, heads, tk, head_dim)  # (B, H, Tk, D)
    scale = 1.0 / np.sqrt(head_dim) if scale is None else scale
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * scale  # (B, H, Tq, Tk)
    allowed = np.ones((tq, tk), dtype=bool)
    if is_causal:
        allowed = np.arange(tk)[None, :] <= np.arange(tq)[:, None] + q_offset  # (Tq, Tk)
    if attn_mask.dtype == bool:
        allowed = allowed & attn_mask  # broadcasts to (B, H, Tq, Tk)
    else:
        scores = scores + attn_mask  # additive mask, in the scores' dtype
    scores = ops.masked_fill(scores, ~allowed, -np.inf)  # (B, H, Tq, Tk)
    probabilities = Softmax.apply(scores, axis=-1)  # a row with nothing allowed gives zeros
    return ops.matmul(probabilities, v)  # (B, H, Tq, D)


__all__ = [
    "cross_entropy", "dropout", "embedding", "gelu", "is_grad_enabled", "layer_norm", "linear", "log_softmax",
    "logsigmoid", "logsumexp", "mse_loss", "pad", "relu", "rms_norm", "scaled_dot_product_attention", "sigmoid", "silu", "softmax",
    "sliding_window_mask", "softplus", "tanh",
]
