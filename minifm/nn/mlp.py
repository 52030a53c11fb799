"""The transformer's position-wise feed-forward layers.

MLP     y = fc_out(gelu(fc_in(x)))                           (BERT: exact erf GELU; GPT-2: tanh GELU)
SwiGLU  y = down_proj(silu(gate_proj(x)) * up_proj(x))       (LLaMA / PaLM's gated variant; the gate
                                                              silu(.) * up(.) is one fused node, ops.silu_mul)

SwiGLU's two input products share their input: above STACKED_MIN_ROWS rows and with plain Linear layers they
run as one product with the stacked weights (nn/layers.py stacks_linears), [gate | up] (..., 2F), followed by the
packed gate node (ops.silu_mul_packed), whose backward hands back [d_gate | d_up] so that the input's gradient
is one product too.

Simplification: no dropout inside the feed-forward (the block applies residual dropout after it).
"""
from __future__ import annotations

import math

import minifm.functional as F
from minifm.autograd import ops
from minifm.nn.layers import Linear, stacked_product, stacks_linears
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


class SwiGLU(Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.gate_proj = Linear(dim, hidden_dim, bias=bias)
        self.up_proj = Linear(dim, hidden_dim, bias=bias)
        self.down_proj = Linear(hidden_dim, dim, bias=bias)

    def forward(self, x):
        projections = (self.gate_proj, self.up_proj)
        if stacks_linears(projections, math.prod(x.shape[:-1])):
            gated = ops.silu_mul_packed(stacked_product(x, projections))  # [gate | up] (..., 2 hidden) -> (..., hidden)
        else:
            gated = ops.silu_mul(self.gate_proj(x), self.up_proj(x))  # silu(gate) * up, (..., hidden)
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
