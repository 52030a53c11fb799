"""Tensor's differentiable operators and NumPy-named methods, attached to the class.

Each line below says which operation a Tensor method is: `x + y` is `ops.add(x, y)`, `x.sum(axis)`
is `ops.sum(x, axis)`, and so on; the ops (minifm/autograd/ops/) record the graph. The methods are
attached here rather than written in the class body of tensor.py because the ops import Tensor: a
class body calling them would make tensor.py and the ops import each other (an import cycle).
`minifm/autograd/__init__.py` imports this module, and Python runs a package's `__init__` before
any of its modules, so every Tensor has these methods before user code can make one.

The look-alike lines below are deliberate: one line per method. Where an op's signature already
matches the method's (`ops.sum(x, axis=None, keepdims=False)` for
`x.sum(axis=None, keepdims=False)`), the op itself is the method; reflected operators (`2 - x`)
swap the operands.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd import ops
from minifm.autograd.ops.elementwise import Cast
from minifm.autograd.ops.softmax import LogSoftmax, Softmax
from minifm.autograd.tensor import Tensor

# ---------------------------------------------------------------- arithmetic operators
Tensor.__add__ = ops.add
Tensor.__radd__ = lambda self, other: ops.add(other, self)
Tensor.__sub__ = ops.sub
Tensor.__rsub__ = lambda self, other: ops.sub(other, self)
Tensor.__mul__ = ops.mul
Tensor.__rmul__ = lambda self, other: ops.mul(other, self)
Tensor.__truediv__ = ops.div
Tensor.__rtruediv__ = lambda self, other: ops.div(other, self)
Tensor.__pow__ = ops.pow
Tensor.__rpow__ = lambda self, base: ops.pow(base, self)
Tensor.__matmul__ = ops.matmul
Tensor.__rmatmul__ = lambda self, other: ops.matmul(other, self)
Tensor.__neg__ = ops.neg
Tensor.__pos__ = lambda self: self
Tensor.__abs__ = ops.abs
Tensor.__getitem__ = ops.getitem  # x[index]

# ---------------------------------------------------------------- elementwise math
Tensor.exp = ops.exp
Tensor.log = ops.log
Tensor.sqrt = ops.sqrt
Tensor.abs = ops.abs
Tensor.tanh = ops.tanh
Tensor.sigmoid = ops.sigmoid
Tensor.relu = ops.relu
Tensor.clip = ops.clip  # x.clip(min=None, max=None)
Tensor.pow = ops.pow
Tensor.matmul = ops.matmul
Tensor.softmax = lambda self, axis=-1: Softmax.apply(self, axis=axis)
Tensor.log_softmax = lambda self, axis=-1: LogSoftmax.apply(self, axis=axis)

# ---------------------------------------------------------------- dtype
Tensor.astype = lambda self, dtype: Cast.apply(self, dtype=np.dtype(dtype))
Tensor.float = lambda self: Cast.apply(self, dtype=np.dtype(np.float32))
Tensor.double = lambda self: Cast.apply(self, dtype=np.dtype(np.float64))

# ---------------------------------------------------------------- reductions (axis=None, keepdims=False)
Tensor.sum = ops.sum
Tensor.mean = ops.mean
Tensor.var = ops.var  # also ddof=0
Tensor.max = ops.max
Tensor.min = ops.min
Tensor.logsumexp = ops.logsumexp

# ---------------------------------------------------------------- shape
Tensor.reshape = ops.reshape  # x.reshape(*shape) or x.reshape(shape)
Tensor.view = ops.reshape
Tensor.flatten = lambda self: ops.reshape(self, -1)
Tensor.transpose = ops.transpose  # x.transpose(*axes); no axes reverses them
Tensor.permute = ops.transpose
Tensor.T = property(ops.transpose)
Tensor.swapaxes = ops.swapaxes
Tensor.squeeze = ops.squeeze
Tensor.unsqueeze = ops.unsqueeze
Tensor.expand_dims = ops.unsqueeze
Tensor.broadcast_to = ops.broadcast_to
Tensor.split = ops.split  # x.split(indices_or_sections, axis=0)
Tensor.masked_fill = ops.masked_fill
