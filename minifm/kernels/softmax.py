"""Softmax over the last axis: the NumPy reference and the dispatch to csrc/softmax.pyx.

The reference is the readable math: subtract the row maximum (so exp never overflows), exponentiate,
divide by the row sum. The compiled twin `minifm.kernels._softmax` computes the same thing row by
row under `nogil` with OpenMP over rows.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled


def _rows(x: np.ndarray, name: str = "x") -> np.ndarray:
    """Validate a float array and return it C-contiguous as (rows, last_axis)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one axis, got a scalar")
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def softmax_reference(x: np.ndarray) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) along the last axis; rows of all -inf give NaN-free zeros."""
    row_max = np.max(x, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0).astype(x.dtype)
    e = np.exp(x - row_max)
    total = np.sum(e, axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (compiled when available)."""
    rows = _rows(x)
    kernel = compiled("softmax")
    if kernel is None or rows.size == 0:
        return softmax_reference(x)
    out = np.empty_like(rows)
    kernel.softmax_forward(rows, out)
    return out.reshape(x.shape)


# --- Temporary references so that autograd works before the kernels land (kernel owner replaces).
def softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


def log_softmax(x: np.ndarray) -> np.ndarray:
    row_max = np.max(x, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0).astype(x.dtype)
    shifted = x - row_max
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def log_softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return dy - np.exp(y) * np.sum(dy, axis=-1, keepdims=True)
