"""Fused softmax and log-softmax Functions over one axis; forward and backward call minifm.kernels.softmax.

softmax backward:      dx = y * (dy - sum(dy * y))
log_softmax backward:  dx = dy - softmax(x) * sum(dy) = dy - exp(y) * sum(dy)
Both kernels work on the last axis; another axis is moved last and back.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Function
from minifm.kernels import softmax as kernels


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, axis=-1):
        moved = np.moveaxis(x, axis, -1)
        y = kernels.softmax(np.ascontiguousarray(moved))
        ctx.y, ctx.axis = y, axis
        return np.moveaxis(y, -1, axis)

    @staticmethod
    def backward(ctx, grad):
        dy = np.ascontiguousarray(np.moveaxis(grad, ctx.axis, -1))
        return np.moveaxis(kernels.softmax_backward(ctx.y, dy), -1, ctx.axis)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis=-1):
        moved = np.moveaxis(x, axis, -1)
        y = kernels.log_softmax(np.ascontiguousarray(moved))
        ctx.y, ctx.axis = y, axis
        return np.moveaxis(y, -1, axis)

    @staticmethod
    def backward(ctx, grad):
        dy = np.ascontiguousarray(np.moveaxis(grad, ctx.axis, -1))
        return np.moveaxis(kernels.log_softmax_backward(ctx.y, dy), -1, ctx.axis)
