"""The differentiable operations as plain functions over Tensors (and arrays / Python scalars).

Each function here is a one-line call into a `Function` class in a sibling module (the many
look-alike one-liners are the point: one public name per operation, each found in one place):
  elementwise.py  arithmetic, pow, exp/log/sqrt/abs, clip, maximum/minimum, activations, where
  reduce.py       sum, mean, var, max, min, logsumexp
  shape.py        reshape, transpose, broadcast_to, getitem, concatenate, stack, pad, masked_fill
  linalg.py       matmul, the fused linear layer, embedding gather

dtype rules for mixed operands (torch's, so that float32 models stay float32):
  * a float Tensor fixes the float dtype; Python numbers, NumPy scalars, arrays and integer/bool
    Tensors combined with it are converted to that dtype (`x_f32 * 0.5`, `x_f32 * np.float64(2)`
    and `x_f32 + int_mask` are all float32);
  * two float Tensors of different dtypes promote as in NumPy (float32 + float64 -> float64); the
    gradient of the float32 input is still float32;
  * without a float Tensor, a Python float makes the result float32 (`int_tensor * 0.5`), and
    otherwise NumPy's rules apply.
Simplification: the fused Functions (softmax, cross-entropy, norms, attention) take their own dtype.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.ops import elementwise as _e
from minifm.autograd.ops import linalg as _l
from minifm.autograd.ops import reduce as _r
from minifm.autograd.ops import shape as _s
from minifm.autograd.tensor import Tensor, data_of


def _float_dtype(operands):
    """The float dtype the operands should share (see the module docstring), or None."""
    tensor_floats = [x.dtype for x in operands if isinstance(x, Tensor) and x.dtype.kind == "f"]
    if tensor_floats:
        return np.result_type(*tensor_floats)
    array_floats = [np.asarray(x).dtype for x in operands
                    if isinstance(x, (np.ndarray, np.generic)) and np.asarray(x).dtype.kind == "f"]
    if array_floats:
        return np.result_type(*array_floats)
    if any(isinstance(x, float) for x in operands):
        return np.dtype(np.float32)
    return None


def _harmonize(*operands):
    """Convert every operand that is not a float Tensor to the shared float dtype (Tensors needing no
    grad are unwrapped to arrays). Operands that cannot be numbers raise a TypeError naming them."""
    dtype = _float_dtype(operands)
    result = []
    for x in operands:
        if isinstance(x, Tensor):
            if x.dtype.kind == "f" or dtype is None:
                result.append(x)
            else:
                result.append(x.data.astype(dtype))
            continue
        array = np.asarray(x)
        if array.dtype.kind not in "fiub":
            raise TypeError(f"operand must be a Tensor, array or number, got {type(x).__name__} "
                            f"(dtype {array.dtype})")
        result.append(array.astype(dtype, copy=False) if dtype is not None else array)
    return result


def _check_broadcast(name: str, *operands) -> None:
    shapes = [np.shape(data_of(x)) for x in operands]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"{name}: shapes {' and '.join(str(s) for s in shapes)} do not broadcast") from None


def _binary(function, name: str, a, b):
    a, b = _harmonize(a, b)
    _check_broadcast(name, a, b)
    return function.apply(a, b)


# ---------------------------------------------------------------- arithmetic
def add(a, b):
    return _binary(_e.Add, "add", a, b)


def sub(a, b):
    return _binary(_e.Sub, "sub", a, b)


def mul(a, b):
    return _binary(_e.Mul, "mul", a, b)


def div(a, b):
    return _binary(_e.Div, "div", a, b)


def neg(x):
    return _e.Neg.apply(x)


def pow(base, exponent):  # noqa: A001  (NumPy's name)
    return _binary(_e.Pow, "pow", base, exponent)


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
    dtype = x.dtype if isinstance(x, Tensor) else np.asarray(x).dtype
    low = None if min is None else np.asarray(data_of(min), dtype=dtype)
    high = None if max is None else np.asarray(data_of(max), dtype=dtype)
    return _e.Clip.apply(x, low, high)


def maximum(a, b):
    return _binary(_e.Maximum, "maximum", a, b)


def minimum(a, b):
    return _binary(_e.Minimum, "minimum", a, b)


def where(condition, a, b):
    condition = np.asarray(data_of(condition))
    if condition.dtype != bool:
        raise TypeError(f"where: condition must be boolean, got dtype {condition.dtype}")
    a, b = _harmonize(a, b)
    _check_broadcast("where", condition, a, b)
    return _e.Where.apply(condition, a, b)


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


def silu_mul(gate, up):
    """silu(gate) * up as one fused node (SwiGLU's gate)."""
    return _e.SiluMul.apply(gate, up)


def silu_mul_packed(packed):
    """silu(gate) * up for packed (..., 2F) = [gate | up] as one fused node (SwiGLU with stacked weights)."""
    return _e.SiluMulPacked.apply(packed)


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
    ndim = np.ndim(data_of(x))
    for axis in (axis1, axis2):
        if not -ndim <= axis < ndim:
            raise ValueError(f"swapaxes: axis {axis} is out of range for shape {np.shape(data_of(x))}")
    axes = list(range(ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return _s.Transpose.apply(x, axes=tuple(axes))


def squeeze(x, axis=None):
    shape = np.shape(data_of(x))
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
    shape = list(np.shape(data_of(x)))
    if not -len(shape) - 1 <= axis <= len(shape):
        raise ValueError(f"unsqueeze: axis {axis} is out of range for shape {tuple(shape)}")
    shape.insert(axis % (len(shape) + 1), 1)
    return _s.Reshape.apply(x, shape=tuple(shape))


def broadcast_to(x, shape):
    return _s.BroadcastTo.apply(x, shape=tuple(shape))


def _index_arg(index):
    """Tensors inside an index become their arrays (indices carry no gradient)."""
    if isinstance(index, tuple):
        return tuple(data_of(i) for i in index)
    return data_of(index)


def getitem(x, index):
    return _s.GetItem.apply(x, index=_index_arg(index))


def concatenate(tensors, axis: int = 0):
    return _s.Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis: int = 0):
    return _s.Stack.apply(*tensors, axis=axis)


def split(x, indices_or_sections, axis: int = 0):
    """NumPy's split: a list of Tensors, each a slice of `x` along `axis`."""
    size = np.shape(data_of(x))[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or size % indices_or_sections:
            raise ValueError(f"cannot split an axis of size {size} into {indices_or_sections} equal sections")
        step = size // indices_or_sections
        bounds = list(range(0, size + 1, step))
    else:
        bounds = [0, *indices_or_sections, size]
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        index = [slice(None)] * np.ndim(data_of(x))
        index[axis] = slice(start, stop)
        pieces.append(getitem(x, tuple(index)))
    return pieces


def pad(x, pad_width, value: float = 0.0):
    return _s.Pad.apply(x, pad_width=pad_width, value=value)


def masked_fill(x, mask, value: float):
    return _s.MaskedFill.apply(x, data_of(mask), data_of(value))


# ---------------------------------------------------------------- linear algebra
def matmul(a, b):
    a, b = _harmonize(a, b)
    return _l.MatMul.apply(a, b)


def linear(x, weight, bias=None):
    return _l.Linear.apply(x, weight, bias)


def embedding(ids, weight):
    return _l.Embedding.apply(data_of(ids), weight)
