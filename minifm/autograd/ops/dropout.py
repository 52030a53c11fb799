"""Inverted dropout: zero each element with probability p and scale survivors by 1 / (1 - p).

The mask is drawn from a caller-supplied numpy Generator, so a seed reproduces it exactly;
in evaluation (training=False) or with p = 0 dropout is the identity and records nothing.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Function


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p, rng):
        keep = rng.random(x.shape) >= p
        ctx.scale_mask = keep.astype(x.dtype) / np.asarray(1.0 - p, dtype=x.dtype)
        return x * ctx.scale_mask

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale_mask, None, None
