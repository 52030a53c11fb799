"""Softmax and log-softmax over the last axis, forward and backward: NumPy references + dispatch.

Compiled twin: csrc/softmax.pyx (module minifm.kernels._softmax).

The references are the readable math, with the row maximum subtracted so exp never overflows:

    softmax(x)     = exp(x - m) / sum(exp(x - m))           m = max(x)
    log_softmax(x) = x - m - log(sum(exp(x - m)))
    softmax backward     (y = softmax(x)):     dx = y * (dy - sum(dy * y))
    log_softmax backward (y = log_softmax(x)): dx = dy - exp(y) * sum(dy)

Any leading shape is accepted; the output has the input's shape and dtype (float32 or float64).
A row that is entirely -inf has no probability mass: softmax gives zeros and log_softmax -inf,
without NaN or warnings. Simplification: the compiled exp flushes results below the smallest
normal float (about 1e-38 in float32) to zero, where NumPy would return a subnormal.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled


def _check_float(x: np.ndarray, name: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one axis, got a scalar")


def _rows(x: np.ndarray, name: str = "x") -> np.ndarray:
    """Validate a float array and return it C-contiguous as (rows, last_axis)."""
    _check_float(x, name)
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def _check_pair(y: np.ndarray, dy: np.ndarray) -> None:
    _check_float(y, "y")
    _check_float(dy, "dy")
    if y.shape != dy.shape:
        raise ValueError(f"dy shape {dy.shape} must equal y shape {y.shape}")
    if y.dtype != dy.dtype:
        raise TypeError(f"dy dtype {dy.dtype} must equal y dtype {y.dtype}")


def _safe_row_max(x: np.ndarray) -> np.ndarray:
    """Row maximum, with 0 in place of -inf so that an all -inf row stays NaN-free."""
    row_max = np.max(x, axis=-1, keepdims=True)
    return np.where(np.isneginf(row_max), 0.0, row_max).astype(x.dtype)


# ---------------------------------------------------------------- references


def softmax_reference(x: np.ndarray) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) along the last axis; rows of all -inf give zeros."""
    e = np.exp(x - _safe_row_max(x))
    total = np.sum(e, axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total != 0)  # NaN rows stay NaN


def log_softmax_reference(x: np.ndarray) -> np.ndarray:
    """x - max - log(sum(exp(x - max))) along the last axis; rows of all -inf give -inf."""
    shifted = x - _safe_row_max(x)
    total = np.sum(np.exp(shifted), axis=-1, keepdims=True)
    log_total = np.log(np.where(total == 0, 1.0, total))  # an all -inf row gets -inf below
    return np.where(total == 0, -np.inf, shifted - log_total).astype(x.dtype)


def softmax_backward_reference(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Vector-Jacobian product of softmax: y * (dy - sum(dy * y)), with y = softmax(x)."""
    return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


def log_softmax_backward_reference(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Vector-Jacobian product of log-softmax: dy - exp(y) * sum(dy), with y = log_softmax(x)."""
    return dy - np.exp(y) * np.sum(dy, axis=-1, keepdims=True)


# ---------------------------------------------------------------- dispatch


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (compiled when available)."""
    rows = _rows(x)
    kernel = compiled("softmax")
    if kernel is None or rows.size == 0:
        return softmax_reference(x)
    out = np.empty_like(rows)
    kernel.softmax_forward(rows, out)
    return out.reshape(x.shape)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (compiled when available)."""
    rows = _rows(x)
    kernel = compiled("softmax")
    if kernel is None or rows.size == 0:
        return log_softmax_reference(x)
    out = np.empty_like(rows)
    kernel.log_softmax_forward(rows, out)
    return out.reshape(x.shape)


def softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Gradient with respect to x of softmax, given its output y and the upstream gradient dy."""
    _check_pair(y, dy)
    kernel = compiled("softmax")
    if kernel is None or y.size == 0:
        return softmax_backward_reference(y, dy)
    y_rows, dy_rows = _rows(y, "y"), _rows(dy, "dy")
    dx = np.empty_like(y_rows)
    kernel.softmax_backward(y_rows, dy_rows, dx)
    return dx.reshape(y.shape)


def log_softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Gradient with respect to x of log-softmax, given its output y and the upstream gradient dy."""
    _check_pair(y, dy)
    kernel = compiled("softmax")
    if kernel is None or y.size == 0:
        return log_softmax_backward_reference(y, dy)
    y_rows, dy_rows = _rows(y, "y"), _rows(dy, "dy")
    dx = np.empty_like(y_rows)
    kernel.log_softmax_backward(y_rows, dy_rows, dx)
    return dx.reshape(y.shape)
