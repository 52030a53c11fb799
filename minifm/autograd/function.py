"""`Function`: one differentiable operation, with its forward and backward side by side.

A subclass implements two static methods on plain NumPy arrays:

    forward(ctx, *arrays, **options) -> np.ndarray
    backward(ctx, grad) -> one gradient per array input (None where no gradient flows)

`Function.apply(*inputs, **options)` unwraps Tensor inputs, runs forward, and, when any input
requires a gradient and recording is on, links the output Tensor to this node so that
`Tensor.backward()` can call `backward` later. `ctx` is a blank object on which forward stores
whatever backward needs (arrays, shapes, flags); `ctx.needs_input_grad[i]` lets backward skip
work for inputs that do not need a gradient.

An output whose dtype is not floating point (a comparison, an argmax, a cast to int) never requires
grad: there is no gradient to carry.

Simplification: every Function has exactly one output. Operations with several outputs
(split, unbind) are written as several single-output Functions.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.grad_mode import is_grad_enabled
from minifm.autograd.tensor import Tensor, data_of


class Context:
    """Scratch space shared by one forward call and its backward call."""

    # set by Function.apply; empty when a forward is called directly on arrays (no backward follows)
    needs_input_grad: tuple[bool, ...] = ()


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` over the axes NumPy broadcasting added or stretched, so it has `shape` again.

    Broadcasting (a) prepends axes and (b) stretches size-1 axes. The gradient of a broadcast input
    is the sum of the output gradient over exactly those axes.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


class Function:
    """Base class of every differentiable operation (see the module docstring)."""

    @staticmethod
    def forward(ctx: Context, *arrays, **options) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        arrays = [data_of(x) for x in inputs]
        ctx = Context()
        if not is_grad_enabled():
            # nothing is recorded: skip the per-input grad flags and the parents tuple
            ctx.needs_input_grad = (False,) * len(inputs)
            return Tensor._from_array(cls.forward(ctx, *arrays, **options))
        needs_grad = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
        ctx.needs_input_grad = needs_grad
        out = cls.forward(ctx, *arrays, **options)
        if not any(needs_grad) or np.asarray(out).dtype.kind != "f":
            return Tensor._from_array(out)
        parents = tuple(x if isinstance(x, Tensor) and x.requires_grad else None for x in inputs)
        return Tensor._from_array(out, requires_grad=True, grad_fn=cls, ctx=ctx, parents=parents)
