"""The basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout.

Each is a thin Module holding its Parameters and calling one fused Function from
`minifm.functional` (F.linear is one node computing x @ W^T + b, the norms are one node each).
Parameter layouts follow torch (Linear.weight is (out_features, in_features)) so state dicts map
name-for-name onto a PyTorch model.

Simplifications: no padding_idx / max_norm on Embedding; LayerNorm and RMSNorm normalise over the
last axis only (normalized_shape is an int); Dropout draws from a numpy Generator held in `.rng`
(a model gives all its Dropout layers its own `model.rng`).
"""
from __future__ import annotations

import math

import numpy as np

import minifm.functional as F
from minifm.nn import init
from minifm.nn.module import Module, Parameter


def _check_positive(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _float_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


class Linear(Module):
    """y = x @ weight^T + bias; weight (out_features, in_features), bias (out_features,) or None."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = _check_positive("in_features", in_features)
        self.out_features = _check_positive("out_features", out_features)
        dtype = _float_dtype(dtype)
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        init.uniform_(self.weight, -bound, bound, rng=rng)
        if bias:
            self.bias = Parameter(np.empty((out_features,), dtype=dtype))
            init.uniform_(self.bias, -bound, bound, rng=rng)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: ids (...) -> weight[ids] (..., embedding_dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rng=None, dtype=np.float32):
        super().__init__()
        self.num_embeddings = _check_positive("num_embeddings", num_embeddings)
        self.embedding_dim = _check_positive("embedding_dim", embedding_dim)
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), dtype=_float_dtype(dtype)))
        init.normal_(self.weight, 0.0, 1.0, rng=rng)

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance, like torch)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.normalized_shape = _check_positive("normalized_shape", normalized_shape)
        self.eps = float(eps)
        dtype = _float_dtype(dtype)
        self.weight = Parameter(np.ones((normalized_shape,), dtype=dtype))
        if bias:
            self.bias = Parameter(np.zeros((normalized_shape,), dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class RMSNorm(Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, dtype=np.float32):
        super().__init__()
        self.normalized_shape = _check_positive("normalized_shape", normalized_shape)
        self.eps = float(eps)
        self.weight = Parameter(np.ones((normalized_shape,), dtype=_float_dtype(dtype)))

    def forward(self, x):
        return F.rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout with probability p while training; identity in eval mode or when p == 0."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
        self.p = float(p)
        self.rng = rng

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self.rng is None:
            raise RuntimeError("Dropout in training mode needs .rng (a numpy Generator); models set it to model.rng")
        return F.dropout(x, self.p, True, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def make_norm(kind: str, dim: int, eps: float | None = None, bias: bool = True) -> Module:
    """'layernorm' -> LayerNorm(dim, eps, bias), 'rmsnorm' -> RMSNorm(dim, eps)."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=1e-5 if eps is None else eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=1e-6 if eps is None else eps)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")
