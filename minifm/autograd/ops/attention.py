"""Scaled dot-product attention as one Function over (B, H, T, D) arrays.

Causal and key-padding masks go to the flash-style kernel (minifm.kernels.attention), which keeps
only the per-row log-sum-exp and recomputes scores in backward. An arbitrary `attn_mask` (boolean
"may attend" or additive float, broadcastable to (B, H, Tq, Tk)) is handled by the materialised
NumPy path in `DenseAttention`, which is also the readable statement of the math:

    scores = q @ k^T * scale + mask;  p = softmax(scores);  out = p @ v
    dv = p^T @ dout;  dp = dout @ v^T;  ds = p * (dp - rowsum(dp * p));  dq = ds @ k * scale;  dk = ds^T @ q * scale
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Function
from minifm.kernels import attention as kernels


class FlashAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False, q_offset=0, key_mask=None):
        # the heads usually arrive as transposed views of (B, T, H, D) projections; the compiled
        # kernel reads them in place (minifm.kernels.attention), so nothing is copied here
        out, lse = kernels.attention_forward(q, k, v, scale=scale, causal=causal, q_offset=q_offset, key_mask=key_mask)
        ctx.saved = (q, k, v, out, lse)
        ctx.options = dict(scale=scale, causal=causal, q_offset=q_offset, key_mask=key_mask)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved
        dq, dk, dv = kernels.attention_backward(q, k, v, out, lse, grad, **ctx.options)
        return dq, dk, dv


def _expand_kv(x: np.ndarray, groups: int) -> np.ndarray:
    """Repeat each key/value head `groups` times so every query head has its own (GQA)."""
    return x if groups == 1 else np.repeat(x, groups, axis=1)


def _fold_kv(grad: np.ndarray, groups: int) -> np.ndarray:
    """Sum the gradients of repeated key/value heads back onto the shared head."""
    if groups == 1:
        return grad
    b, h, t, d = grad.shape
    return grad.reshape(b, h // groups, groups, t, d).sum(axis=2)


class DenseAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, attn_mask=None, scale=None, causal=False, q_offset=0):
        groups = q.shape[1] // k.shape[1]
        scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
        ke, ve = _expand_kv(k, groups), _expand_kv(v, groups)
        scores = (q @ np.swapaxes(ke, -1, -2)) * np.asarray(scale, dtype=q.dtype)  # (B, H, Tq, Tk)
        allowed = np.ones(scores.shape[-2:], dtype=bool)
        if causal:
            tq, tk = scores.shape[-2:]
            allowed = np.arange(tk)[None, :] <= np.arange(tq)[:, None] + q_offset
        if attn_mask is not None:
            attn_mask = np.asarray(attn_mask)
            if attn_mask.dtype == bool:
                allowed = allowed & attn_mask
            else:
                scores = scores + attn_mask.astype(q.dtype)
        scores = np.where(allowed, scores, -np.inf)
        row_max = scores.max(axis=-1, keepdims=True)
        row_max = np.where(np.isfinite(row_max), row_max, 0)
        e = np.exp(scores - row_max)
        total = e.sum(axis=-1, keepdims=True)
        p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)  # fully masked row -> zeros
        ctx.saved = (q, ke, ve, p, scale, groups)
        return (p @ ve).astype(q.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        q, ke, ve, p, scale, groups = ctx.saved
        dv = np.swapaxes(p, -1, -2) @ grad
        dp = grad @ np.swapaxes(ve, -1, -2)
        ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True)) * np.asarray(scale, dtype=q.dtype)
        dq = ds @ ke
        dk = np.swapaxes(ds, -1, -2) @ q
        return dq, _fold_kv(dk, groups), _fold_kv(dv, groups), None
