"""Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_), and the norm alone (grad_norm).

    total_norm = ||concat(g_1, ..., g_n)||_p   over every parameter with a gradient
    if total_norm > max_norm:  g_i *= max_norm / (total_norm + 1e-6)       (in place)

Deviation from torch: a NaN or infinite total norm raises FloatingPointError by default
(error_if_nonfinite=True) instead of silently scaling every gradient into NaN.
"""
from __future__ import annotations

import math

import numpy as np


def _gradients(params) -> list:
    if hasattr(params, "grad") and hasattr(params, "data"):
        params = [params]
    return [param.grad for param in params if param.grad is not None]


def grad_norm(params, norm_type: float = 2.0) -> float:
    """The global p-norm of the gradients of `params` (float64 sums; 0.0 when none has a gradient)."""
    grads = _gradients(params)
    if not grads:
        return 0.0
    if norm_type == math.inf:
        return max(float(np.max(np.abs(grad))) if grad.size else 0.0 for grad in grads)
    total = sum(float(np.sum(np.abs(grad.astype(np.float64, copy=False)) ** norm_type)) for grad in grads)
    return total ** (1.0 / norm_type)


def clip_grad_norm(params, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = True) -> float:
    """Scale the gradients of `params` in place so their global norm is at most max_norm; return the norm before."""
    grads = _gradients(params)
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    if not grads:
        return 0.0
    total = grad_norm(params, norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise FloatingPointError(f"the total gradient norm is {total}; a gradient contains NaN or inf")
        return total
    coefficient = max_norm / (total + 1e-6)
    if coefficient < 1.0:
        for grad in grads:
            grad *= grad.dtype.type(coefficient)
    return total
