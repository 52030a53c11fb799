"""Matrix products with NumPy's `matmul` semantics (1-D vectors, 2-D matrices, broadcast batches).

Backward for out = a @ b:  grad_a = grad @ b^T,  grad_b = a^T @ grad, then summed over the batch
axes that broadcasting created. 1-D operands are promoted to matrices (as NumPy does) and the
promotion is undone on the gradient. When `b` is a plain matrix shared by every batch entry (the
Linear-layer case), grad_b is computed as one large GEMM over the flattened batch instead of a
batched product followed by a sum.
"""
from __future__ import annotations

import math

import numpy as np

from minifm.autograd.function import Function, unbroadcast
from minifm.kernels import embedding as embedding_kernels
from minifm.kernels.threads import matmul as matmul_2d


def batched_times_matrix(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """a @ b (+ bias, (m,), on every row) for a (..., n, k) and a plain matrix b (k, m), as ONE 2-D GEMM.

    NumPy's matmul loops over the batch axes of a 3-D operand and calls a small GEMM per entry,
    which is many times slower than flattening the batch into the rows of a single product.
    """
    if b.ndim != 2 or a.ndim < 2:
        out = a @ b
        if bias is not None:
            out += bias
        return out
    rows = a.reshape(math.prod(a.shape[:-1]), a.shape[-1])  # (N, k); copies only if `a` is not contiguous
    return matmul_2d(rows, b, bias).reshape(*a.shape[:-1], b.shape[-1])


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        if np.ndim(a) == 0 or np.ndim(b) == 0:
            raise ValueError(f"matmul needs at least 1-D operands, got shapes {np.shape(a)} and {np.shape(b)}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(
                f"matmul shape mismatch: {a.shape} @ {b.shape} (inner sizes "
                f"{a.shape[-1]} and {b.shape[-2 if b.ndim > 1 else 0]} differ)"
            )
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(
                f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast"
            ) from None
        ctx.a, ctx.b = a, b
        return batched_times_matrix(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.a, ctx.b
        a2 = a[None, :] if a.ndim == 1 else a  # (..., n, k)
        b2 = b[:, None] if b.ndim == 1 else b  # (..., k, m)
        g2 = grad
        if b.ndim == 1:
            g2 = g2[..., None]  # restore the m = 1 column axis NumPy dropped
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)  # restore the n = 1 row axis; g2: (..., n, m)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = unbroadcast(batched_times_matrix(g2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                k, m = a2.shape[-1], g2.shape[-1]
                grad_b = matmul_2d(a2.reshape(-1, k).T, g2.reshape(-1, m)).reshape(b.shape)  # one big GEMM
            else:
                grad_b = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return grad_a, grad_b


class Linear(Function):
    """y = x @ weight^T + bias with x (..., in), weight (out, in), bias (out,) — PyTorch's layout.

    One fused node instead of transpose + matmul + add: backward does two GEMMs over the flattened
    batch and a column sum for the bias.
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input's last dimension {x.shape[-1]} (shape {x.shape}) does not match "
                f"weight's in_features {weight.shape[1]} (weight shape {weight.shape})"
            )
        ctx.x, ctx.weight, ctx.has_bias = x, weight, bias is not None
        return batched_times_matrix(x, weight.T, bias)  # (..., out)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.x, ctx.weight
        out_features, in_features = weight.shape
        grad_2d = grad.reshape(-1, out_features)  # (N, out)
        grad_x = matmul_2d(grad_2d, weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = matmul_2d(grad_2d.T, x.reshape(-1, in_features)) if ctx.needs_input_grad[1] else None
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = column_sums(grad_2d)  # (out,)
        return grad_x, grad_w, grad_b


def column_sums(rows: np.ndarray) -> np.ndarray:
    """rows.sum(axis=0) as one BLAS product with a vector of ones (a bias's gradient, here and in
    nn/quantized.py's QuantizedLinear): 2-5x faster than NumPy's reduction at the tiny GPT's (1024, 64-256)
    gradients (4-16 us against 23-38), and no less accurate (BLAS keeps several partial sums)."""
    return np.ones(rows.shape[0], dtype=rows.dtype) @ rows  # (N,) @ (N, out) -> (out,)


class Embedding(Function):
    """out = weight[ids]; backward adds each gradient row into the row of weight it was looked up from
    (minifm.kernels.embedding: one in-order pass, where `np.add.at` took ~0.6 ms for the tiny GPT's
    1024 x 64 gradient)."""

    @staticmethod
    def forward(ctx, ids, weight):
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding ids must be integers, got dtype {ids.dtype}")
        vocab = weight.shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            bad = ids[(ids < 0) | (ids >= vocab)].ravel()[0]
            raise IndexError(f"embedding id {bad} is out of range for a table of {vocab} rows")
        ctx.ids, ctx.weight_shape = ids, weight.shape
        return weight[ids]

    @staticmethod
    def backward(ctx, grad):
        vocab, dim = ctx.weight_shape
        rows = grad.reshape(-1, dim)  # (N, dim)
        return None, embedding_kernels.embedding_backward(ctx.ids.ravel(), rows, vocab)  # (vocab, dim)
