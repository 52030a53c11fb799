"""Prefix tuning (Li & Liang, 2021): learned keys and values prepended in every attention layer.

For each attention module l the model attends over [P_k^l ; K] and [P_v^l ; V], where the prefixes
P_k^l, P_v^l (Hkv, num_virtual_tokens, head_dim) are learned and always attendable. They reach the
frozen model through the attention modules' `extra_kv` hook (a pair of Tensors, broadcast over the
batch), which is set just before each forward call and cleared after it; the KV cache stores only
real tokens, so cached generation simply sees the same prefixes at every step.

All prefixes come from one table, PEFT's layout: rows = virtual tokens, columns = for every
attention module, its keys then its values (2 * kv_dim columns per module, kv_dim = Hkv * head_dim).
  prefix_projection=False  the table itself is learned: num_virtual_tokens * sum_l 2 kv_dim_l params;
  prefix_projection=True   Li & Liang's reparameterisation: table = MLP(E), with E (P, d_model),
                           MLP = Linear(d_model, h) -> tanh -> Linear(h, sum_l 2 kv_dim_l),
                           h = encoder_hidden_size (default d_model). Params: P d + d h + h + h C + C.
Initialisation: with the projection E ~ N(0, 1), PEFT's Embedding init. Deviation: without the
projection the learned table starts at N(0, 0.02^2) (PREFIX_TABLE_INIT_STD) instead of PEFT's N(0, 1):
small keys and values keep the frozen model close to itself at step 0, where unit-scale ones swamp a
small model's activations.

Simplification: every attention module of the model gets a prefix (for T5 that is encoder
self-attention, decoder self-attention and decoder cross-attention).
"""
from __future__ import annotations

import numpy as np

from minifm.nn import Linear, Module, Parameter

PREFIX_TABLE_INIT_STD = 0.02


class PrefixEncoder(Module):
    """Produces the (keys, values) prefix pair of every attention module (see the module docstring)."""

    def __init__(self, num_virtual_tokens: int, kv_shapes: list[tuple[int, int]], d_model: int,
                 prefix_projection: bool, encoder_hidden_size: int | None, rng: np.random.Generator,
                 dtype=np.float32):
        super().__init__()
        self.kv_shapes = list(kv_shapes)  # [(Hkv, head_dim)] per attention module
        self.prefix_projection = bool(prefix_projection)
        self.num_virtual_tokens = int(num_virtual_tokens)
        columns = sum(2 * heads * head_dim for heads, head_dim in kv_shapes)
        if prefix_projection:
            hidden = encoder_hidden_size or d_model
            self.embedding = Parameter(rng.standard_normal((num_virtual_tokens, d_model)).astype(dtype))
            self.transform_in = Linear(d_model, hidden, rng=rng, dtype=dtype)
            self.transform_out = Linear(hidden, columns, rng=rng, dtype=dtype)
        else:
            table = rng.normal(0.0, PREFIX_TABLE_INIT_STD, size=(num_virtual_tokens, columns))
            self.embedding = Parameter(table.astype(dtype))

    def table(self):
        """(num_virtual_tokens, columns): the learned table or the MLP's output."""
        if not self.prefix_projection:
            return self.embedding
        return self.transform_out(self.transform_in(self.embedding).tanh())

    def forward(self):
        """A list with one (k_prefix, v_prefix) pair per attention module, each (Hkv, P, head_dim)."""
        table = self.table()  # (P, columns)
        pairs = []
        start = 0
        for heads, head_dim in self.kv_shapes:
            width = heads * head_dim
            keys = table[:, start:start + width]  # (P, Hkv*hd)
            values = table[:, start + width:start + 2 * width]  # (P, Hkv*hd)
            start += 2 * width
            keys = keys.reshape(self.num_virtual_tokens, heads, head_dim).transpose(1, 0, 2)  # (Hkv, P, hd)
            values = values.reshape(self.num_virtual_tokens, heads, head_dim).transpose(1, 0, 2)  # (Hkv, P, hd)
            pairs.append((keys, values))
        return pairs


def prefix_parameter_count(num_virtual_tokens: int, kv_shapes: list[tuple[int, int]], d_model: int,
                           prefix_projection: bool, encoder_hidden_size: int | None = None) -> int:
    columns = sum(2 * heads * head_dim for heads, head_dim in kv_shapes)
    if not prefix_projection:
        return num_virtual_tokens * columns
    hidden = encoder_hidden_size or d_model
    return num_virtual_tokens * d_model + d_model * hidden + hidden + hidden * columns + columns
