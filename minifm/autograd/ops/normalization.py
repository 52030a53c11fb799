"""Fused LayerNorm and RMSNorm Functions over the last axis.

LayerNorm:  y = (x - mean) / sqrt(var + eps) * weight + bias      (biased variance, like torch)
RMSNorm:    y = x / sqrt(mean(x^2) + eps) * weight

Backward, with xhat the normalised input, g = dy * weight and n the feature size:
  LayerNorm  dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)
  RMSNorm    dx = (g - xhat * mean(g * xhat)) / rms
  dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Function
from minifm.kernels import normalization as normalization_kernels


def _check_affine(x, weight, bias, name):
    features = x.shape[-1]
    if weight is not None and weight.shape != (features,):
        raise ValueError(f"{name}: weight must have shape ({features},) for input {x.shape}, got {weight.shape}")
    if bias is not None and bias.shape != (features,):
        raise ValueError(f"{name}: bias must have shape ({features},) for input {x.shape}, got {bias.shape}")


def _row_sum(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


class LayerNorm(Function):
    """Fused LayerNorm; the arithmetic lives in minifm.kernels.normalization (NumPy reference + Cython twin)."""

    @staticmethod
    def forward(ctx, x, weight=None, bias=None, eps=1e-5):
        _check_affine(x, weight, bias, "layer_norm")
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)  # integer input: normalise in float64, as NumPy's mean would
        rows = x.reshape(-1, x.shape[-1])  # (N, D)
        out, xhat, inv_std = normalization_kernels.layer_norm_forward(rows, weight, bias, eps)
        ctx.xhat, ctx.inv_std, ctx.weight = xhat, inv_std, weight  # (N, D), (N,), (D,) or None
        ctx.has_bias = bias is not None
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        features = grad.shape[-1]
        want_weight = ctx.weight is not None and ctx.needs_input_grad[1]
        want_bias = ctx.has_bias and ctx.needs_input_grad[2]
        dx, dweight, dbias = normalization_kernels.layer_norm_backward(
            grad.reshape(-1, features), ctx.xhat, ctx.inv_std, ctx.weight, want_weight, want_bias)
        return dx.reshape(grad.shape), dweight, dbias, None


class RMSNorm(Function):
    """Fused RMSNorm; the forward runs minifm.kernels.normalization.rms_norm_forward (NumPy reference +
    Cython twin) for float32/float64 input with a weight of its dtype, the NumPy lines below otherwise."""

    @staticmethod
    def forward(ctx, x, weight=None, eps=1e-6):
        _check_affine(x, weight, None, "rms_norm")
        if (x.dtype in (np.float32, np.float64) and x.ndim > 0 and x.shape[-1] > 0
                and (weight is None or weight.dtype == x.dtype)):
            rows = x.reshape(-1, x.shape[-1])  # (N, D)
            want_xhat = any(ctx.needs_input_grad)  # only a backward reads xhat
            out, xhat, inv_rms = normalization_kernels.rms_norm_forward(rows, weight, eps, want_xhat)
            ctx.xhat = None if xhat is None else xhat.reshape(x.shape)
            ctx.inv_rms, ctx.weight = inv_rms.reshape(*x.shape[:-1], 1), weight  # (..., 1), (D,) or None
            return out.reshape(x.shape)
        inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (..., 1)
        xhat = x * inv_rms
        ctx.xhat, ctx.inv_rms, ctx.weight = xhat, inv_rms, weight
        out = xhat * weight if weight is not None else xhat
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        xhat, weight = ctx.xhat, ctx.weight
        g = grad * weight if weight is not None else grad
        dx = (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True)) * ctx.inv_rms
        dweight = _row_sum(grad * xhat) if weight is not None and ctx.needs_input_grad[1] else None
        return dx.astype(grad.dtype, copy=False), dweight, None
