"""Reductions: sum, mean, var, max, min, logsumexp over `axis` (None, an int or a tuple), with `keepdims`.

Backward re-inserts the reduced axes (so the output gradient broadcasts back over the input).
max/min spread the gradient equally over tied maxima (PyTorch's amax/amin convention).
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Function


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """`axis` as a sorted tuple of non-negative ints; None means every axis."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    result = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"axis {a!r} is out of range for an array with {ndim} dimensions")
        result.append(int(a) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"axis {axis} repeats an axis")
    return tuple(sorted(result))


def _restore_reduced_axes(grad: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """Give `grad` size-1 axes where the reduction removed them, so it broadcasts against the input."""
    if keepdims:
        return grad
    return np.expand_dims(grad, axes) if axes else grad


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes = normalize_axes(axis, x.ndim)
        ctx.shape, ctx.keepdims = x.shape, keepdims
        return np.sum(x, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        grad = _restore_reduced_axes(grad, ctx.axes, ctx.keepdims)
        return np.broadcast_to(grad, ctx.shape).copy()


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes = normalize_axes(axis, x.ndim)
        ctx.shape, ctx.keepdims = x.shape, keepdims
        ctx.count = int(np.prod([x.shape[a] for a in ctx.axes])) if ctx.axes else 1
        return np.mean(x, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        grad = _restore_reduced_axes(grad, ctx.axes, ctx.keepdims)
        return np.broadcast_to(grad / ctx.count, ctx.shape).astype(grad.dtype)


class Var(Function):
    """Variance with `ddof` (NumPy's default 0): d var / dx = 2 (x - mean) / (n - ddof)."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False, ddof=0):
        ctx.axes = normalize_axes(axis, x.ndim)
        ctx.keepdims = keepdims
        count = int(np.prod([x.shape[a] for a in ctx.axes])) if ctx.axes else 1
        if count - ddof <= 0:
            raise ValueError(f"var over {count} elements with ddof={ddof} is undefined")
        ctx.centered = x - np.mean(x, axis=ctx.axes, keepdims=True)
        ctx.denominator = count - ddof
        return np.var(x, axis=ctx.axes, keepdims=keepdims, ddof=ddof)

    @staticmethod
    def backward(ctx, grad):
        grad = _restore_reduced_axes(grad, ctx.axes, ctx.keepdims)
        return (grad * 2.0 * ctx.centered / ctx.denominator).astype(grad.dtype)


class _Extreme(Function):
    """Shared max/min: forward picks with `_pick`, backward splits grad over the tied winners."""

    _pick = None

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        if x.size == 0:
            raise ValueError(f"{cls.__name__.lower()} of an empty array (shape {x.shape}) is undefined")
        ctx.axes = normalize_axes(axis, x.ndim)
        ctx.keepdims = keepdims
        out = cls._pick(x, axis=ctx.axes, keepdims=True)
        winners = x == out
        ctx.share = winners / winners.sum(axis=ctx.axes, keepdims=True)
        return out if keepdims else np.squeeze(out, axis=ctx.axes)

    @staticmethod
    def backward(ctx, grad):
        grad = _restore_reduced_axes(grad, ctx.axes, ctx.keepdims)
        return (grad * ctx.share).astype(grad.dtype)


class Max(_Extreme):
    _pick = staticmethod(np.max)


class Min(_Extreme):
    _pick = staticmethod(np.min)


class LogSumExp(Function):
    """log(sum(exp(x))) computed stably around the maximum; gradient is softmax over `axis`."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes = normalize_axes(axis, x.ndim)
        ctx.keepdims = keepdims
        peak = np.max(x, axis=ctx.axes, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0).astype(x.dtype)
        with np.errstate(divide="ignore"):
            out = np.log(np.sum(np.exp(x - peak), axis=ctx.axes, keepdims=True)) + peak
        ctx.x, ctx.out = x, out
        return out if keepdims else np.squeeze(out, axis=ctx.axes)

    @staticmethod
    def backward(ctx, grad):
        grad = _restore_reduced_axes(grad, ctx.axes, ctx.keepdims)
        with np.errstate(invalid="ignore"):
            weights = np.exp(ctx.x - ctx.out)
        weights = np.nan_to_num(weights, nan=0.0)
        return (grad * weights).astype(grad.dtype)
