"""The transformer's position-wise feed-forward layers.

MLP     y = fc_out(gelu(fc_in(x)))                           (BERT: exact erf GELU; GPT-2: tanh GELU)
SwiGLU  y = down_proj(silu(gate_proj(x)) * up_proj(x))       (LLaMA / PaLM's gated variant; the gate
                                                              silu(.) * up(.) is one fused node, ops.silu_mul)

SwiGLU's two input products share their input, so when both are plain Linear layers they run as ONE product
with the two weights stacked, [gate | up] = x @ [W_gate; W_up]^T (..., 2F), followed by the packed gate node
(ops.silu_mul_packed), whose backward hands back [d_gate | d_up] so that the input's gradient is one product
too. A wide product keeps BLAS busier than two of half the width (at SmolLM2's 576 x 1536, measured ~20% less
CPU for the pair forward); the stacked weight is a copy made per forward (576 x 3072 floats for SmolLM2, a few
ms), and the gradients of the two weights come back as views of one stacked gradient. Wrapped projections
(LoRA, IA3, quantized layers) and calls of at most STACKED_MIN_ROWS rows (decoding: there the copy would cost
more than the product) take the two-product route. The no-grad path (nn/block.py) follows the same rule, so
both give the same bits (activation checkpointing recomputes a block without recording and relies on it).

Simplification: no dropout inside the feed-forward (the block applies residual dropout after it).
"""
from __future__ import annotations

import math

import numpy as np

import minifm.functional as F
from minifm.autograd import ops
from minifm.nn.layers import Linear
from minifm.nn.module import Module


class MLP(Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = True, approximate: str = "none"):
        super().__init__()
        self.fc_in = Linear(dim, hidden_dim, bias=bias)
        self.fc_out = Linear(hidden_dim, dim, bias=bias)
        self.approximate = approximate

    def forward(self, x):
        hidden = F.gelu(self.fc_in(x), approximate=self.approximate)  # (..., hidden)
        return self.fc_out(hidden)  # (..., dim)


# SwiGLU stacks its gate and up weights into one product only above this many input rows (module docstring).
STACKED_MIN_ROWS = 32


class SwiGLU(Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.gate_proj = Linear(dim, hidden_dim, bias=bias)
        self.up_proj = Linear(dim, hidden_dim, bias=bias)
        self.down_proj = Linear(hidden_dim, dim, bias=bias)

    def stacks_products(self, rows: int) -> bool:
        """True when gate and up run as one product with the stacked weights: both plain Linear layers, and more
        than STACKED_MIN_ROWS input rows (below, stacking the weights would cost more than the product gains:
        KV-cached decoding)."""
        return type(self.gate_proj) is Linear and type(self.up_proj) is Linear and rows > STACKED_MIN_ROWS

    def stacked_arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """([W_gate; W_up] (2 hidden, dim), [b_gate; b_up] (2 hidden,) or None) as raw arrays, for the no-grad
        path (nn/block.py), which must compute what forward computes."""
        gate_proj, up_proj = self.gate_proj, self.up_proj
        weight = np.concatenate([gate_proj.weight.data, up_proj.weight.data], axis=0)  # (2 hidden, dim)
        bias = None if gate_proj.bias is None else np.concatenate([gate_proj.bias.data, up_proj.bias.data])
        return weight, bias

    def forward(self, x):
        gate_proj, up_proj = self.gate_proj, self.up_proj
        if self.stacks_products(math.prod(x.shape[:-1])):  # one product with the stacked weights
            weight = ops.concatenate([gate_proj.weight, up_proj.weight], axis=0)  # (2 hidden, dim)
            bias = None if gate_proj.bias is None else ops.concatenate([gate_proj.bias, up_proj.bias], axis=0)
            gated = ops.silu_mul_packed(F.linear(x, weight, bias))  # (..., 2 hidden) -> (..., hidden)
        else:
            gated = ops.silu_mul(gate_proj(x), up_proj(x))  # silu(gate) * up, (..., hidden)
        return self.down_proj(gated)  # (..., dim)


MLP_KINDS = ("gelu", "gelu_tanh", "swiglu")  # exact GELU MLP, GPT-2's tanh-approximated GELU MLP, SwiGLU


def make_mlp(kind: str, dim: int, hidden_dim: int, bias: bool) -> Module:
    if kind == "gelu":
        return MLP(dim, hidden_dim, bias=bias)
    if kind == "gelu_tanh":
        return MLP(dim, hidden_dim, bias=bias, approximate="tanh")
    if kind == "swiglu":
        return SwiGLU(dim, hidden_dim, bias=bias)
    raise ValueError(f"mlp must be one of {list(MLP_KINDS)}, got {kind!r}")
