"""Fused softmax and log-softmax Functions over one axis; forward and backward call minifm.kernels.softmax.

softmax backward:      dx = y * (dy - sum(dy * y))
log_softmax backward:  dx = dy - softmax(x) * sum(dy) = dy - exp(y) * sum(dy)
Both kernels work on the last axis; another axis is moved last and back.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Function
from minifm.kernels import softmax as kernels


def _forward_over_axis(kernel, ctx, x, axis):
    """Run a last-axis kernel over `axis` (moved last and back); save its output for backward."""
    y = kernel(np.ascontiguousarray(np.moveaxis(x, axis, -1)))
    ctx.y, ctx.axis = y, axis
    return np.moveaxis(y, -1, axis)


def _backward_over_axis(kernel_backward, ctx, grad):
    dy = np.ascontiguousarray(np.moveaxis(grad, ctx.axis, -1))
    return np.moveaxis(kernel_backward(ctx.y, dy), -1, ctx.axis)


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, axis=-1):
        return _forward_over_axis(kernels.softmax, ctx, x, axis)

    @staticmethod
    def backward(ctx, grad):
        return _backward_over_axis(kernels.softmax_backward, ctx, grad)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis=-1):
        return _forward_over_axis(kernels.log_softmax, ctx, x, axis)

    @staticmethod
    def backward(ctx, grad):
        return _backward_over_axis(kernels.log_softmax_backward, ctx, grad)
