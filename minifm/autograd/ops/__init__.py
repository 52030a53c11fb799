"""The differentiable operations as plain functions over Tensors (and arrays / Python scalars).

Each function here is a one-line call into a `Function` class in a sibling module:
  elementwise.py  arithmetic, pow, exp/log/sqrt/abs, clip, maximum/minimum, activations, where
  reduce.py       sum, mean, var, max, min, logsumexp
  shape.py        reshape, transpose, broadcast_to, getitem, concatenate, stack, pad, masked_fill
  linalg.py       matmul, the fused linear layer, embedding gather
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.ops import elementwise as _e
from minifm.autograd.ops import linalg as _l
from minifm.autograd.ops import reduce as _r
from minifm.autograd.ops import shape as _s
from minifm.autograd.tensor import Tensor


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


# ---------------------------------------------------------------- arithmetic
def add(a, b):
    return _e.Add.apply(a, b)


def sub(a, b):
    return _e.Sub.apply(a, b)


def mul(a, b):
    return _e.Mul.apply(a, b)


def div(a, b):
    return _e.Div.apply(a, b)


def neg(x):
    return _e.Neg.apply(x)


def pow(base, exponent):  # noqa: A001  (NumPy's name)
    return _e.Pow.apply(base, exponent)


def exp(x):
    return _e.Exp.apply(x)


def log(x):
    return _e.Log.apply(x)


def sqrt(x):
    return _e.Sqrt.apply(x)


def abs(x):  # noqa: A001
    return _e.Abs.apply(x)


def clip(x, min=None, max=None):  # noqa: A002
    if min is None and max is None:
        raise ValueError("clip needs at least one of min and max")
    return _e.Clip.apply(x, _raw(min), _raw(max))


def maximum(a, b):
    return _e.Maximum.apply(a, b)


def minimum(a, b):
    return _e.Minimum.apply(a, b)


def where(condition, a, b):
    return _e.Where.apply(_raw(condition), a, b)


# ---------------------------------------------------------------- activations
def tanh(x):
    return _e.Tanh.apply(x)


def sigmoid(x):
    return _e.Sigmoid.apply(x)


def relu(x):
    return _e.Relu.apply(x)


def gelu(x, approximate: str = "none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _e.Gelu.apply(x, approximate=approximate)


def silu(x):
    return _e.Silu.apply(x)


def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    return _e.Softplus.apply(x, beta=beta, threshold=threshold)


# ---------------------------------------------------------------- reductions
def sum(x, axis=None, keepdims=False):  # noqa: A001
    return _r.Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return _r.Mean.apply(x, axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False, ddof=0):
    return _r.Var.apply(x, axis=axis, keepdims=keepdims, ddof=ddof)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return _r.Max.apply(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return _r.Min.apply(x, axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    return _r.LogSumExp.apply(x, axis=axis, keepdims=keepdims)


# ---------------------------------------------------------------- shape
def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape):
    return _s.Reshape.apply(x, shape=_shape_arg(shape))


def transpose(x, *axes):
    axes = _shape_arg(axes) if axes else None
    return _s.Transpose.apply(x, axes=axes)


def swapaxes(x, axis1: int, axis2: int):
    axes = list(range(np.ndim(_raw(x))))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return _s.Transpose.apply(x, axes=tuple(axes))


def squeeze(x, axis=None):
    shape = np.shape(_raw(x))
    if axis is None:
        new_shape = tuple(s for s in shape if s != 1)
    else:
        axes = _r.normalize_axes(axis, len(shape))
        for a in axes:
            if shape[a] != 1:
                raise ValueError(f"cannot squeeze axis {a} of size {shape[a]} (shape {shape})")
        new_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    return _s.Reshape.apply(x, shape=new_shape)


def unsqueeze(x, axis: int):
    new_shape = np.expand_dims(np.empty(np.shape(_raw(x)), dtype=bool), axis).shape
    return _s.Reshape.apply(x, shape=new_shape)


def broadcast_to(x, shape):
    return _s.BroadcastTo.apply(x, shape=tuple(shape))


def _index_arg(index):
    """Tensors inside an index become their arrays (indices carry no gradient)."""
    if isinstance(index, tuple):
        return tuple(_raw(i) for i in index)
    return _raw(index)


def getitem(x, index):
    return _s.GetItem.apply(x, index=_index_arg(index))


def concatenate(tensors, axis: int = 0):
    return _s.Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis: int = 0):
    return _s.Stack.apply(*tensors, axis=axis)


def split(x, indices_or_sections, axis: int = 0):
    """NumPy's split: a list of Tensors, each a slice of `x` along `axis`."""
    size = np.shape(_raw(x))[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or size % indices_or_sections:
            raise ValueError(f"cannot split an axis of size {size} into {indices_or_sections} equal sections")
        step = size // indices_or_sections
        bounds = list(range(0, size + 1, step))
    else:
        bounds = [0, *indices_or_sections, size]
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        index = [slice(None)] * np.ndim(_raw(x))
        index[axis] = slice(start, stop)
        pieces.append(getitem(x, tuple(index)))
    return pieces


def pad(x, pad_width, value: float = 0.0):
    return _s.Pad.apply(x, pad_width=pad_width, value=value)


def masked_fill(x, mask, value: float):
    return _s.MaskedFill.apply(x, _raw(mask), value)


# ---------------------------------------------------------------- linear algebra
def matmul(a, b):
    return _l.MatMul.apply(a, b)


def linear(x, weight, bias=None):
    return _l.Linear.apply(x, weight, bias)


def embedding(ids, weight):
    return _l.Embedding.apply(_raw(ids), weight)
