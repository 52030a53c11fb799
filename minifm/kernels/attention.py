"""Scaled dot-product attention, forward and backward: the naive NumPy reference + dispatch.

Compiled twin: csrc/attention.pyx (module minifm.kernels._attention), flash-style: tiled, online
softmax, only the per-row log-sum-exp is saved and the scores are recomputed in backward, so the
(B, H, Tq, Tk) score array is never allocated. It reads q, k, v (and writes out, dq, dk, dv) in
place when their last axis is contiguous, so the usual transposed views of (B, T, H, D) projections
need no copies; its outputs are (B, H, T, D) views of (B, T, H, D) memory.

Shapes: q (B, H, Tq, D); k, v (B, Hkv, Tk, D) with H a multiple of Hkv (grouped-query attention:
query head h reads kv head h // (H // Hkv)). The math, per (batch, head):

    s   = scale * q @ k^T, with not-allowed entries set to -inf          scale default 1/sqrt(D)
    lse = log(sum_j exp(s_j))    per query row (-inf when nothing is allowed)
    p   = exp(s - lse);   out = p @ v           (a fully masked row gives out = 0, not NaN)
    backward:  dv = p^T @ dout;  dp = dout @ v^T;  ds = p * (dp - rowsum(dout * out)) * scale
               dq = ds @ k;      dk = ds^T @ q       (dk, dv summed over the query heads of a group)

Allowed entries: with causal=True, query row i (absolute position i + q_offset) sees key j iff
j <= i + q_offset (q_offset = 0 is torch's top-left alignment; cached decoding passes Tk - Tq);
key_mask (B, Tk) bool, True = may be attended.
"""
from __future__ import annotations

import math

import numpy as np

from minifm.kernels._backend import compiled
from minifm.kernels.threads import follow_load, single_threaded_scipy_blas


def _readable_in_place(x: np.ndarray) -> np.ndarray:
    """x itself when the compiled kernel can read it as it is (last axis contiguous, rows at least D
    elements apart, no negative strides: e.g. the (B, H, T, D) transposed view of a (B, T, H, D)
    projection), else a C-contiguous copy."""
    itemsize, (_, _, steps, head_dim) = x.itemsize, x.shape
    fits = (all(stride >= 0 and stride % itemsize == 0 for stride in x.strides)
            and (head_dim <= 1 or x.strides[3] == itemsize)
            and (steps <= 1 or x.strides[2] >= head_dim * itemsize))
    return x if fits else np.ascontiguousarray(x)


def _heads_buffer(shape, dtype, zeroed: bool) -> np.ndarray:
    """A (B, H, T, D) array laid out as (B, T, H, D) in memory: merging the heads back into
    (B, T, H * D) afterwards (transpose + reshape) is then a view, not a copy."""
    batch, heads, steps, head_dim = shape
    make = np.zeros if zeroed else np.empty
    return make((batch, steps, heads, head_dim), dtype=dtype).transpose(0, 2, 1, 3)


def _validate(q, k, v, scale, q_offset, key_mask):
    """Check shapes and dtypes; return (q, k, v readable in place, scale as float, key_mask or None)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be a float32 or float64 numpy array, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 4:
            raise ValueError(f"{name} must have shape (B, heads, T, D), got {x.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"k shape {k.shape} must equal v shape {v.shape}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {q.shape} and k {k.shape} must agree on batch (axis 0) and head size (axis 3)")
    if q.shape[3] == 0:
        raise ValueError(f"head size D (axis 3) must be >= 1, got q {q.shape}")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"q heads ({q.shape[1]}) must be a multiple of k/v heads ({k.shape[1]}); shapes q {q.shape}, k {k.shape}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[3]) if q.shape[3] > 0 else 1.0
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    if int(q_offset) != q_offset:
        raise ValueError(f"q_offset must be an integer, got {q_offset!r}")
    if key_mask is not None:
        key_mask = np.asarray(key_mask)
        if key_mask.dtype != bool:
            raise TypeError(f"key_mask must be a bool array (True = may attend), got dtype {key_mask.dtype}")
        if key_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(f"key_mask must have shape (B, Tk) = {(k.shape[0], k.shape[2])}, got {key_mask.shape}")
        key_mask = np.ascontiguousarray(key_mask)
    return _readable_in_place(q), _readable_in_place(k), _readable_in_place(v), scale, key_mask


def _allowed(tq, tk, causal, q_offset, key_mask):
    """Boolean (B or 1, 1, Tq, Tk): which scores may be attended."""
    allowed = np.ones((1, 1, tq, tk), dtype=bool)
    if causal:
        query_pos = np.arange(tq)[:, None] + q_offset  # (Tq, 1)
        allowed = allowed & (np.arange(tk)[None, :] <= query_pos)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    return allowed


def _scores(q, k, scale, causal, q_offset, key_mask):
    """(B, H, Tq, Tk) masked scores and the allowed mask; k is repeated over the query heads."""
    groups = q.shape[1] // k.shape[1]
    k_expanded = np.repeat(k, groups, axis=1)  # (B, H, Tk, D)
    scores = (q @ np.swapaxes(k_expanded, -1, -2)) * q.dtype.type(scale)  # (B, H, Tq, Tk)
    allowed = _allowed(q.shape[2], k.shape[2], causal, q_offset, key_mask)
    return np.where(allowed, scores, -np.inf), allowed


# ---------------------------------------------------------------- references


def attention_forward_reference(q, k, v, *, scale=None, causal=False, q_offset=0, key_mask=None):
    """Materialised attention: returns out (B, H, Tq, D) and lse (B, H, Tq)."""
    q, k, v, scale, key_mask = _validate(q, k, v, scale, q_offset, key_mask)
    groups = q.shape[1] // k.shape[1]
    scores, _ = _scores(q, k, scale, causal, q_offset, key_mask)  # (B, H, Tq, Tk)
    row_max = scores.max(axis=-1, keepdims=True) if scores.shape[-1] else np.full(scores.shape[:-1] + (1,), -np.inf, q.dtype)
    row_max = np.where(np.isneginf(row_max), 0.0, row_max)  # (B, H, Tq, 1)
    e = np.exp(scores - row_max)  # (B, H, Tq, Tk)
    total = e.sum(axis=-1, keepdims=True)  # (B, H, Tq, 1)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)  # fully masked row -> zeros
    lse = np.where(total > 0, np.log(np.where(total > 0, total, 1.0)) + row_max, -np.inf)[..., 0]  # (B, H, Tq)
    out = p @ np.repeat(v, groups, axis=1)  # (B, H, Tq, D)
    return out.astype(q.dtype), lse.astype(q.dtype)


def attention_backward_reference(q, k, v, out, lse, dout, *, scale=None, causal=False, q_offset=0, key_mask=None):
    """Materialised gradients (dq, dk, dv) given the forward's out and lse."""
    q, k, v, scale, key_mask = _validate(q, k, v, scale, q_offset, key_mask)
    _check_backward_inputs(q, out, lse, dout)
    groups = q.shape[1] // k.shape[1]
    scores, allowed = _scores(q, k, scale, causal, q_offset, key_mask)  # (B, H, Tq, Tk)
    row_has_mass = np.isfinite(lse)[..., None]  # (B, H, Tq, 1)
    safe_lse = np.where(row_has_mass, lse[..., None], 0.0)
    p = np.where(allowed & row_has_mass, np.exp(scores - safe_lse), 0.0).astype(q.dtype)  # (B, H, Tq, Tk)
    v_expanded = np.repeat(v, groups, axis=1)  # (B, H, Tk, D)
    k_expanded = np.repeat(k, groups, axis=1)  # (B, H, Tk, D)
    dv_heads = np.swapaxes(p, -1, -2) @ dout  # (B, H, Tk, D)
    dp = dout @ np.swapaxes(v_expanded, -1, -2)  # (B, H, Tq, Tk)
    delta = np.sum(dout * out, axis=-1, keepdims=True)  # (B, H, Tq, 1)
    ds = p * (dp - delta) * q.dtype.type(scale)  # (B, H, Tq, Tk)
    dq = ds @ k_expanded  # (B, H, Tq, D)
    dk_heads = np.swapaxes(ds, -1, -2) @ q  # (B, H, Tk, D)
    b, h, tk, d = dk_heads.shape

    def fold(per_head):  # sum the query heads of each group onto their kv head
        return per_head.reshape(b, h // groups, groups, tk, d).sum(axis=2)

    return dq.astype(q.dtype), fold(dk_heads).astype(k.dtype), fold(dv_heads).astype(v.dtype)


def _check_backward_inputs(q, out, lse, dout):
    for name, x, shape in (("out", out, q.shape), ("dout", dout, q.shape), ("lse", lse, q.shape[:3])):
        if not isinstance(x, np.ndarray) or x.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {getattr(x, 'shape', type(x).__name__)}")
        if x.dtype != q.dtype:
            raise TypeError(f"{name} dtype {x.dtype} must equal q dtype {q.dtype}")


# ---------------------------------------------------------------- dispatch


def attention_forward(q, k, v, *, scale=None, causal=False, q_offset=0, key_mask=None):
    """out (B, H, Tq, D), lse (B, H, Tq); the compiled flash kernel when available."""
    kernel = compiled("attention")
    if kernel is None:
        return attention_forward_reference(q, k, v, scale=scale, causal=causal, q_offset=q_offset, key_mask=key_mask)
    q, k, v, scale, key_mask = _validate(q, k, v, scale, q_offset, key_mask)
    out = _heads_buffer(q.shape, q.dtype, zeroed=False)  # (B, H, Tq, D), memory (B, Tq, H, D)
    lse = np.empty(q.shape[:3], dtype=q.dtype)  # (B, H, Tq)
    mask_bytes = key_mask.view(np.uint8) if key_mask is not None else None
    if q.shape[2] <= kernel.few_query_rows:  # (KV-cached decoding) the kernel multiplies with loops, no BLAS
        follow_load()
        kernel.attention_forward(q, k, v, out, lse, scale, bool(causal), int(q_offset), mask_bytes)
        return out, lse
    with single_threaded_scipy_blas():
        kernel.attention_forward(q, k, v, out, lse, scale, bool(causal), int(q_offset), mask_bytes)
    return out, lse


def attention_backward(q, k, v, out, lse, dout, *, scale=None, causal=False, q_offset=0, key_mask=None):
    """(dq, dk, dv) with the shapes of (q, k, v); the compiled flash kernel when available."""
    kernel = compiled("attention")
    if kernel is None:
        return attention_backward_reference(
            q, k, v, out, lse, dout, scale=scale, causal=causal, q_offset=q_offset, key_mask=key_mask
        )
    q, k, v, scale, key_mask = _validate(q, k, v, scale, q_offset, key_mask)
    _check_backward_inputs(q, out, lse, dout)
    dq = _heads_buffer(q.shape, q.dtype, zeroed=True)  # the kernel accumulates into these
    dk = _heads_buffer(k.shape, k.dtype, zeroed=True)
    dv = _heads_buffer(v.shape, v.dtype, zeroed=True)
    mask_bytes = key_mask.view(np.uint8) if key_mask is not None else None
    with single_threaded_scipy_blas():
        kernel.attention_backward(
            q, k, v, _readable_in_place(out), np.ascontiguousarray(lse), _readable_in_place(dout),
            dq, dk, dv, scale, bool(causal), int(q_offset), mask_bytes,
        )
    return dq, dk, dv
