"""LayerNorm over the last axis, forward and backward, and RMSNorm's forward: NumPy references + dispatch.

Compiled twin: csrc/normalization.pyx (module minifm.kernels._normalization), one fused pass per
row (rows of D features stay in L1) instead of ~10 whole-array NumPy calls; sums in double.

The math, for one row x of D features, xhat the normalised row and g = dy * weight:

    forward:   y    = xhat * weight + bias,      xhat = (x - mean(x)) * inv_std,
               inv_std = 1 / sqrt(var(x) + eps)  (biased variance, like torch)
    backward:  dx   = (g - mean(g) - xhat * mean(g * xhat)) * inv_std
               dweight = sum over rows of dy * xhat,   dbias = sum over rows of dy

RMSNorm forward, for one row x of D features (its backward is NumPy, in autograd/ops/normalization.py):

    inv_rms = 1 / sqrt(mean(x^2) + eps),   xhat = x * inv_rms,   y = xhat * weight

All work on (N, D) arrays (the caller flattens the leading axes). The forward returns
xhat (N, D) and inv_std (N,) for the backward; weight and bias may be None. float32 and float64;
every array of one call shares x's dtype.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled


def _check_rows(x: np.ndarray, name: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be a float32 or float64 numpy array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {x.shape}")


def _check_vector(v, features: int, dtype, name: str):
    """None, or v as a contiguous (D,) array of `dtype`."""
    if v is None:
        return None
    v = np.ascontiguousarray(v, dtype=dtype)
    if v.shape != (features,):
        raise ValueError(f"{name} must have shape ({features},), got {v.shape}")
    return v


def layer_norm_forward_reference(x, weight=None, bias=None, eps=1e-5):
    """(y, xhat, inv_std) for x (N, D): y (N, D), xhat (N, D), inv_std (N,), all in x's dtype."""
    _check_rows(x, "x")
    weight = _check_vector(weight, x.shape[1], x.dtype, "weight")
    bias = _check_vector(bias, x.shape[1], x.dtype, "bias")
    mean = x.mean(axis=-1, keepdims=True)  # (N, 1)
    centered = x - mean  # (N, D)
    var = np.mean(centered * centered, axis=-1, keepdims=True)  # (N, 1)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)  # (N, 1)
    xhat = centered * inv_std  # (N, D)
    out = xhat * weight if weight is not None else xhat.copy()
    if bias is not None:
        out += bias
    return out, xhat, inv_std.reshape(-1)


def layer_norm_backward_reference(grad, xhat, inv_std, weight=None, want_weight=True, want_bias=True):
    """(dx, dweight, dbias) for grad (N, D) and the forward's xhat, inv_std; dweight/dbias None unless wanted."""
    _check_rows(grad, "grad")
    weight = _check_vector(weight, grad.shape[1], grad.dtype, "weight")
    g = grad * weight if weight is not None else grad  # (N, D)
    inv_std = inv_std.reshape(-1, 1)  # (N, 1)
    dx = (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True)) * inv_std
    dweight = (grad * xhat).sum(axis=0) if want_weight else None  # (D,)
    dbias = grad.sum(axis=0) if want_bias else None  # (D,)
    return dx.astype(grad.dtype, copy=False), dweight, dbias


def layer_norm_forward(x, weight=None, bias=None, eps=1e-5):
    """(y, xhat, inv_std) for x (N, D), as the reference; the compiled kernel when available."""
    kernel = compiled("normalization")
    if kernel is None:
        return layer_norm_forward_reference(x, weight, bias, eps)
    _check_rows(x, "x")
    x = np.ascontiguousarray(x)
    weight = _check_vector(weight, x.shape[1], x.dtype, "weight")
    bias = _check_vector(bias, x.shape[1], x.dtype, "bias")
    out, xhat = np.empty_like(x), np.empty_like(x)  # (N, D) each
    inv_std = np.empty(x.shape[0], dtype=x.dtype)  # (N,)
    kernel.layer_norm_forward(x, weight, bias, float(eps), out, xhat, inv_std)
    return out, xhat, inv_std


def layer_norm_backward(grad, xhat, inv_std, weight=None, want_weight=True, want_bias=True):
    """(dx, dweight, dbias) as the reference; the compiled kernel when available."""
    kernel = compiled("normalization")
    if kernel is None:
        return layer_norm_backward_reference(grad, xhat, inv_std, weight, want_weight, want_bias)
    _check_rows(grad, "grad")
    grad = np.ascontiguousarray(grad)
    if xhat.shape != grad.shape or inv_std.shape != (grad.shape[0],):
        raise ValueError(f"xhat {xhat.shape} and inv_std {inv_std.shape} do not match grad {grad.shape}")
    dtype, features = grad.dtype, grad.shape[1]
    xhat = np.ascontiguousarray(xhat, dtype=dtype)
    inv_std = np.ascontiguousarray(inv_std, dtype=dtype)
    weight = _check_vector(weight, features, dtype, "weight")
    dx = np.empty_like(grad)  # (N, D)
    dweight = np.empty(features, dtype=dtype) if want_weight else None
    dbias = np.empty(features, dtype=dtype) if want_bias else None
    kernel.layer_norm_backward(grad, xhat, inv_std, weight, dx, dweight, dbias)
    return dx, dweight, dbias


def rms_norm_forward_reference(x, weight=None, eps=1e-6, want_xhat=True):
    """(y, xhat or None, inv_rms) for x (N, D): y (N, D), xhat (N, D) when wanted, inv_rms (N,), in x's dtype."""
    _check_rows(x, "x")
    weight = _check_vector(weight, x.shape[1], x.dtype, "weight")
    inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (N, 1)
    xhat = x * inv_rms  # (N, D)
    out = xhat * weight if weight is not None else xhat
    return out.astype(x.dtype, copy=False), xhat if want_xhat else None, inv_rms.reshape(-1).astype(x.dtype)


def rms_norm_forward(x, weight=None, eps=1e-6, want_xhat=True):
    """(y, xhat or None, inv_rms) for x (N, D), as the reference; the compiled kernel when available."""
    kernel = compiled("normalization")
    if kernel is None:
        return rms_norm_forward_reference(x, weight, eps, want_xhat)
    _check_rows(x, "x")
    x = np.ascontiguousarray(x)
    weight = _check_vector(weight, x.shape[1], x.dtype, "weight")
    out = np.empty_like(x)  # (N, D)
    xhat = np.empty_like(x) if want_xhat else None  # (N, D)
    inv_rms = np.empty(x.shape[0], dtype=x.dtype)  # (N,)
    kernel.rms_norm_forward(x, weight, float(eps), out, xhat, inv_rms)
    return out, xhat, inv_rms
