"""Rotary position embedding (RoPE)'s rotation of (B, heads, T, D) arrays: NumPy reference + dispatch.

Compiled twin: csrc/rotary.pyx (module minifm.kernels._rotary), one pass per row instead of six
NumPy calls, reading and writing the transposed views of (B, T, H, D) projections in place.

The math, "rotate half" layout (LLaMA / GPT-NeoX): each row x of D = 2h values, at a position whose
angles have cos c and sin s (h values each), is rotated pairwise, the pair being (x[j], x[j + h]):

    out[j]     = x[j] * c[j] - x[j + h] * s[j]
    out[j + h] = x[j + h] * c[j] + x[j] * s[j]          j = 0 .. h - 1

x (B, heads, T, D); cos, sin (B or 1, 1, T, h), a batch axis of 1 serving every row. The transpose of
a rotation is the rotation by the opposite angle: rotate(grad, cos, -sin) is RoPE's backward. The output
has x's shape, dtype and memory order (np.empty_like). Where the angles come from:
minifm.nn.attention.RotaryEmbedding.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled


def _check(x, cos, sin) -> None:
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64) or x.ndim != 4:
        raise TypeError(f"x must be a (B, heads, T, D) float32 or float64 array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    if x.shape[-1] % 2:
        raise ValueError(f"the last axis of x must be even, got {x.shape}")
    for name, table in (("cos", cos), ("sin", sin)):
        expected_tail = (1, x.shape[2], x.shape[3] // 2)
        if np.ndim(table) != 4 or table.shape[1:] != expected_tail or table.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"{name} must have shape (1 or {x.shape[0]}, 1, {x.shape[2]}, {x.shape[3] // 2}), "
                             f"got {np.shape(table)}")


def rotate_reference(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x (B, heads, T, D) rotated pairwise by the angles of cos/sin (B or 1, 1, T, D/2), in x's dtype."""
    _check(x, cos, sin)
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]  # (B, heads, T, D/2) each
    out = np.empty_like(x)
    np.multiply(first, cos, out=out[..., :half])
    out[..., :half] -= second * sin
    np.multiply(second, cos, out=out[..., half:])
    out[..., half:] += first * sin
    return out


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """As rotate_reference; the compiled kernel when available and every array has x's dtype."""
    kernel = compiled("rotary")
    if kernel is None or not isinstance(cos, np.ndarray) or cos.dtype != x.dtype or sin.dtype != x.dtype:
        return rotate_reference(x, cos, sin)
    _check(x, cos, sin)
    if x.shape[-1] > 1 and x.strides[-1] != x.itemsize:
        x = np.ascontiguousarray(x)
    out = np.empty_like(x)  # x's memory order: a transposed view stays one
    if out.shape[-1] > 1 and out.strides[-1] != out.itemsize:
        out = np.empty(x.shape, dtype=x.dtype)
    kernel.rotate(x, np.ascontiguousarray(cos), np.ascontiguousarray(sin), out)
    return out
