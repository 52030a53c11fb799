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
from minifm.autograd import ops
from minifm.autograd.function import Context
from minifm.autograd.ops import linalg as linalg_ops
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


# Linear layers that read the same input (q/k/v, SwiGLU's gate/up) run as ONE product with their weights stacked,
# [y_1 | y_2 | ...] = x @ [W_1; W_2; ...]^T, when the input has more than this many rows. A wide product keeps BLAS
# busier than several narrow ones (SmolLM2's q/k/v, 576 -> 576 + 192 + 192: about half the CPU time as one
# product; gate/up 576 -> 2 x 1536: ~20% less), and the input's gradient is one product too. The stacked weight is
# a copy made per call (a few MB per layer), which at a few rows (KV-cached decoding) would cost more than the
# product gains, hence the threshold. The recorded path (stacked_linear) and the no-grad path of the transformer
# block (stacked_linear_array) follow the same rule and compute the same bits, which activation checkpointing
# relies on (it recomputes a block without recording).
STACKED_MIN_ROWS = 32


def stacks_linears(layers, rows: int) -> bool:
    """True when `layers` (sharing one input of `rows` rows) run as one stacked product: plain Linear layers
    (no PEFT wrapper, no quantized weights) of one dtype, all with a bias or none, and more than STACKED_MIN_ROWS
    rows."""
    if rows <= STACKED_MIN_ROWS or any(type(layer) is not Linear for layer in layers):
        return False
    return len({layer.bias is None for layer in layers}) == 1 and len({layer.weight.dtype for layer in layers}) == 1


def stacked_product(x, layers):
    """x @ [W_1; W_2; ...]^T + [b_1 | b_2 | ...] as one recorded product (stacks_linears must hold): (..., sum of
    out_features); the weights' gradients come back as views of one stacked gradient."""
    weight = ops.concatenate([layer.weight for layer in layers], axis=0)  # (sum out, in)
    bias = None if layers[0].bias is None else ops.concatenate([layer.bias for layer in layers], axis=0)
    return F.linear(x, weight, bias)  # (..., sum out)


def stacked_product_array(x: np.ndarray, layers) -> np.ndarray:
    """stacked_product on a raw array, nothing recorded: the same Function forward on the same stacked arrays."""
    weight = np.concatenate([layer.weight.data for layer in layers], axis=0)  # (sum out, in)
    bias = None if layers[0].bias is None else np.concatenate([layer.bias.data for layer in layers])
    return linalg_ops.Linear.forward(Context(), x, weight, bias)  # (..., sum out)


def stacked_linear(x, layers) -> list:
    """[layer(x) for layer in layers] from one stacked_product: last-axis slices of it, (..., out_features_i)."""
    return _slices(stacked_product(x, layers), layers)


def stacked_linear_array(x: np.ndarray, layers) -> list[np.ndarray]:
    """stacked_linear on a raw array, nothing recorded."""
    return _slices(stacked_product_array(x, layers), layers)


def _slices(stacked, layers) -> list:
    """The consecutive last-axis slices of `stacked` that belong to each layer, (..., out_features_i) each."""
    pieces, start = [], 0
    for layer in layers:
        pieces.append(stacked[..., start:start + layer.out_features])
        start += layer.out_features
    return pieces


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
