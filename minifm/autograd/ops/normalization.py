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


def _check_affine(x, weight, bias, name):
    features = x.shape[-1]
    if weight is not None and weight.shape != (features,):
        raise ValueError(f"{name}: weight must have shape ({features},) for input {x.shape}, got {weight.shape}")
    if bias is not None and bias.shape != (features,):
        raise ValueError(f"{name}: bias must have shape ({features},) for input {x.shape}, got {bias.shape}")


def _row_sum(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


class LayerNorm(Function):
    @staticmethod
    def forward(ctx, x, weight=None, bias=None, eps=1e-5):
        _check_affine(x, weight, bias, "layer_norm")
        mean = x.mean(axis=-1, keepdims=True)
        centered = x - mean
        var = np.mean(centered * centered, axis=-1, keepdims=True)
        inv_std = 1.0 / np.sqrt(var + eps)  # (..., 1)
        xhat = centered * inv_std
        ctx.xhat, ctx.inv_std, ctx.weight = xhat, inv_std, weight
        ctx.has_bias = bias is not None
        out = xhat * weight if weight is not None else xhat.copy()
        if bias is not None:
            out += bias
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        xhat, weight = ctx.xhat, ctx.weight
        g = grad * weight if weight is not None else grad
        dx = (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True)) * ctx.inv_std
        dweight = _row_sum(grad * xhat) if weight is not None and ctx.needs_input_grad[1] else None
        dbias = _row_sum(grad) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx.astype(grad.dtype, copy=False), dweight, dbias, None


class RMSNorm(Function):
    @staticmethod
    def forward(ctx, x, weight=None, eps=1e-6):
        _check_affine(x, weight, None, "rms_norm")
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
