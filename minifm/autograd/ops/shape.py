"""Shape Functions: reshape, transpose, broadcast_to, getitem, concatenate, stack, pad, masked_fill.

None of these change values, so each backward only moves the gradient back to where the value came
from. Indexing with integer or boolean arrays scatter-adds (repeated indices accumulate), basic
slicing writes the gradient into a zero array of the input's shape.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.engine import SliceGradient
from minifm.autograd.function import Function, unbroadcast


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {x.shape} into shape {shape}") from None

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, x, axes=None):
        if axes is None:
            axes = tuple(reversed(range(x.ndim)))
        if sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
            raise ValueError(f"axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
        ctx.inverse = tuple(np.argsort([a % x.ndim for a in axes]))
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, ctx.inverse)


class BroadcastTo(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        try:
            return np.broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"cannot broadcast shape {x.shape} to {tuple(shape)}") from None

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shape)


def _is_advanced(index) -> bool:
    """True when the index contains an integer/boolean array or a list (NumPy advanced indexing)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (np.ndarray, list)) for p in parts)


def _validate_index(x: np.ndarray, index) -> None:
    parts = index if isinstance(index, tuple) else (index,)
    for part in parts:
        if isinstance(part, np.ndarray) and part.dtype.kind == "f":
            raise IndexError(f"index arrays must be integer or boolean, got dtype {part.dtype}")


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, index):
        _validate_index(x, index)
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        try:
            out = x[index]
        except IndexError as error:
            raise IndexError(f"index {index!r} is invalid for a tensor of shape {x.shape}: {error}") from None
        return np.array(out, copy=True) if np.ndim(out) == 0 else out

    @staticmethod
    def backward(ctx, grad):
        if not _is_advanced(ctx.index):
            return SliceGradient(ctx.shape, ctx.index, grad)  # the engine writes it into x's gradient
        full = np.zeros(ctx.shape, dtype=grad.dtype)
        np.add.at(full, ctx.index, grad)  # repeated indices accumulate
        return full


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        if not arrays:
            raise ValueError("concatenate needs at least one tensor")
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        try:
            return np.concatenate(arrays, axis=axis)
        except ValueError:
            raise ValueError(
                f"concatenate along axis {axis} needs equal other dimensions, got shapes {[a.shape for a in arrays]}"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        boundaries = np.cumsum(ctx.sizes)[:-1]
        return tuple(np.split(grad, boundaries, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        if not arrays:
            raise ValueError("stack needs at least one tensor")
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"stack needs equal shapes, got {[a.shape for a in arrays]}")
        ctx.axis = axis
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        count = grad.shape[ctx.axis]
        return tuple(np.take(grad, i, axis=ctx.axis) for i in range(count))


class Pad(Function):
    """Constant padding with NumPy's `pad_width` convention ((before, after) per axis)."""

    @staticmethod
    def forward(ctx, x, pad_width, value=0.0):
        widths = np.broadcast_to(np.asarray(pad_width, dtype=int), (x.ndim, 2))
        ctx.slices = tuple(slice(int(lo), int(lo) + n) for (lo, _), n in zip(widths, x.shape))
        return np.pad(x, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.slices]


class MaskedFill(Function):
    """Replace entries where `mask` is True by `value`; those entries receive no gradient."""

    @staticmethod
    def forward(ctx, x, mask, value):
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"mask must be boolean, got dtype {mask.dtype}")
        try:
            fits = np.broadcast_shapes(mask.shape, x.shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"mask shape {mask.shape} does not broadcast to tensor shape {x.shape}")
        ctx.mask = mask
        return np.where(mask, np.asarray(value, dtype=x.dtype), x)

    @staticmethod
    def backward(ctx, grad):
        return np.where(ctx.mask, np.zeros((), dtype=grad.dtype), grad), None, None
