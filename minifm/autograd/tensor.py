"""`Tensor`: an `np.ndarray` plus what reverse-mode differentiation needs.

A Tensor holds
  data           the values (float32 by default, float64 allowed; integer/bool for indices and masks),
  requires_grad  whether gradients should flow to it,
  grad           after backward(): d(output)/d(this tensor) as an np.ndarray of the same shape,
  _grad_fn/_ctx  the Function that produced it and what that Function saved for its backward,
  _parents       the input Tensors of that Function (None for inputs that need no gradient),
  _post_accumulate_grad_hooks  {handle id: hook} called by backward() once a leaf's .grad is final
                 (register_post_accumulate_grad_hook, torch's name; None until one is registered).

This file holds the data, the graph links, backward() and the methods that need no graph
(comparisons, argmax, item, detach). The differentiable operators and methods (`x + y`, `x @ w`,
`x.sum(axis=None, keepdims=False)`, `x.transpose(*axes)`, `x.softmax()`, ...) follow NumPy's names
and signatures; each is a one-line call into `minifm.autograd.ops`, and they are attached to the
class in minifm/autograd/tensor_methods.py, because the ops import Tensor: writing them here would
make this file and the ops import each other. Importing anything from minifm runs that file first.

`data_of(x)` is the one helper that unwraps a Tensor to its array and leaves anything else alone.

Simplification: `.grad` is a plain ndarray rather than a Tensor (no higher-order gradients);
`.numpy()` returns the underlying array without copying, like torch.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd import engine

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ALLOWED_KINDS = "fiub"  # float, signed/unsigned integer, bool


def _as_array(data, dtype=None) -> np.ndarray:
    """Convert user data to an array without copying arrays: Python floats become float32, ints int64.

    float16 and long double arrays become float32; strings, objects and complex numbers are rejected.
    """
    data = data_of(data)
    if isinstance(data, np.ndarray):
        array = data.astype(dtype, copy=False) if dtype is not None else data
    else:
        try:
            array = np.array(data, dtype=dtype)
        except (TypeError, ValueError) as error:
            raise TypeError(f"cannot make a Tensor from {type(data).__name__}: {error}") from None
        if dtype is None and array.dtype.kind == "f":
            array = array.astype(np.float32)  # Python floats and lists default to float32
    if array.dtype.kind not in _ALLOWED_KINDS:
        raise TypeError(f"Tensor data must be float, integer or bool, got dtype {array.dtype}")
    if array.dtype.kind == "f" and array.dtype not in _FLOAT_DTYPES:
        array = array.astype(np.float32)  # float16 / long double are not supported
    return array


class Tensor:
    """An n-dimensional array that records the operations applied to it (see the module docstring)."""

    __slots__ = ("data", "grad", "_requires_grad", "_grad_fn", "_ctx", "_parents", "_retains_grad",
                 "_post_accumulate_grad_hooks", "__weakref__")
    __array_priority__ = 1000  # make `ndarray + Tensor` call Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._grad_fn = None
        self._ctx = None
        self._parents = ()
        self._retains_grad = False
        self._post_accumulate_grad_hooks = None
        self._requires_grad = False
        self.requires_grad = requires_grad

    @classmethod
    def _from_array(cls, array: np.ndarray, requires_grad=False, grad_fn=None, ctx=None, parents=()):
        """Wrap a Function's output without copying (internal)."""
        tensor = cls.__new__(cls)
        tensor.data = array if isinstance(array, np.ndarray) else np.asarray(array)
        tensor.grad = None
        tensor._requires_grad = requires_grad
        tensor._grad_fn = grad_fn
        tensor._ctx = ctx
        tensor._parents = parents
        tensor._retains_grad = False
        tensor._post_accumulate_grad_hooks = None
        return tensor

    # ------------------------------------------------------------------ attributes
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        if flag and self.data.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"only float32/float64 tensors can require grad, got dtype {self.data.dtype} "
                f"(shape {self.shape}); create it with dtype=np.float32"
            )
        if not flag and self._grad_fn is not None:
            raise RuntimeError("requires_grad can only be switched off on leaf tensors; use detach()")
        self._requires_grad = bool(flag)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self._grad_fn is None

    @property
    def grad_fn(self):
        return self._grad_fn

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        dtype = "" if self.dtype == np.float32 else f", dtype={self.dtype}"
        return f"tensor({body}{dtype}{extra})"

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __bool__(self) -> bool:
        return bool(self.data)

    def __hash__(self) -> int:
        return id(self)

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Compute gradients of this tensor w.r.t. every leaf that requires grad (see engine.py)."""
        engine.backward(self, None if grad is None else data_of(grad), retain_graph)

    def retain_grad(self) -> None:
        """Also store `.grad` on this non-leaf tensor during backward."""
        self._retains_grad = True

    def register_post_accumulate_grad_hook(self, hook) -> "HookHandle":
        """Call `hook(self)` every time backward() has finished accumulating this leaf's `.grad`.

        The call comes once per backward() that reaches this tensor, as soon as its gradient for that
        backward is final (every use of the tensor in the graph has contributed) and added to `.grad`,
        while the rest of the graph is still being differentiated: minifm.distributed starts sending a
        gradient to the other processes from here. torch's name and timing; the hook's return value
        is ignored. Leaf tensors only; returns a handle whose remove() unregisters the hook.
        """
        if self._grad_fn is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors (parameters, inputs) accumulate "
                               f"a .grad; this tensor of shape {self.shape} was made by {self._grad_fn.__name__}")
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got {type(hook).__name__}")
        if self._post_accumulate_grad_hooks is None:
            self._post_accumulate_grad_hooks = {}
        handle = HookHandle(self._post_accumulate_grad_hooks)
        self._post_accumulate_grad_hooks[handle.id] = hook
        return handle

    def _accumulate_grad(self, grad: np.ndarray) -> None:
        if self.grad is None:
            self.grad = np.array(grad, dtype=self.dtype, copy=True)
        else:
            self.grad += grad

    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares memory, like torch)."""
        return Tensor._from_array(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ comparisons
    # comparisons give boolean Tensors that carry no gradient (no graph node is needed)
    def __lt__(self, other):
        return Tensor._from_array(self.data < data_of(other))

    def __le__(self, other):
        return Tensor._from_array(self.data <= data_of(other))

    def __gt__(self, other):
        return Tensor._from_array(self.data > data_of(other))

    def __ge__(self, other):
        return Tensor._from_array(self.data >= data_of(other))

    def eq(self, other):
        return Tensor._from_array(self.data == data_of(other))

    def ne(self, other):
        return Tensor._from_array(self.data != data_of(other))

    def argmax(self, axis=None):
        return Tensor._from_array(np.argmax(self.data, axis=axis))


class HookHandle:
    """What register_post_accumulate_grad_hook returns: `handle.remove()` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self.hooks = hooks
        self.id = HookHandle._next_id
        HookHandle._next_id += 1

    def remove(self) -> None:
        self.hooks.pop(self.id, None)


def data_of(x):
    """The array inside a Tensor, or `x` itself when it is not a Tensor (an array, a number, a mask).

    The one helper for code that accepts both Tensors and plain arrays and needs the values only.
    """
    return x.data if isinstance(x, Tensor) else x


# ---------------------------------------------------------------------- constructors


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new leaf Tensor holding a copy of `data` (float32 unless `dtype` or a float64 array says otherwise)."""
    array = np.array(_as_array(data, dtype), copy=True)
    return Tensor(array, requires_grad=requires_grad)


def zeros(*shape, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def full(shape, value, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(np.full(_shape((shape,)), value, dtype=dtype), requires_grad=requires_grad)


def randn(*shape, rng: np.random.Generator, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    """Standard normal values drawn from the numpy Generator `rng`."""
    _check_rng(rng)
    return Tensor(rng.standard_normal(_shape(shape)).astype(dtype), requires_grad=requires_grad)


def rand(*shape, rng: np.random.Generator, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) values drawn from the numpy Generator `rng`."""
    _check_rng(rng)
    return Tensor(rng.random(_shape(shape)).astype(dtype), requires_grad=requires_grad)


def zeros_like(x, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros_like(data_of(x)), requires_grad=requires_grad)


def ones_like(x, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones_like(data_of(x)), requires_grad=requires_grad)


def _shape(shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if not all(isinstance(s, (int, np.integer)) and s >= 0 for s in shape):
        raise ValueError(f"shape must be non-negative integers, got {shape}")
    return tuple(int(s) for s in shape)


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
