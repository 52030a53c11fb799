"""Houlsby bottleneck adapters (Houlsby et al., 2019).

A bottleneck adapter is a small residual MLP inserted after a sublayer's output projection:

    h' = h + W_up act(W_down h + b_down) + b_up,    W_down (m, d), W_up (d, m), m = d // reduction_factor

`mh_adapter` puts one after the attention output projection (o_proj: every self- and cross-attention),
`output_adapter` one after the feed-forward output projection (fc_out, or down_proj with SwiGLU), i.e.
on the sublayer's output before it joins the residual stream — Houlsby's placement. W_up and b_up
start at zero, so the adapter is the identity and the model is unchanged at step 0; W_down uses the
Linear default init and b_down starts at zero (sublayer outputs are small at init, so a random
negative b_down would leave ReLU units dead). The default non-linearity is swish (SiLU), the
`adapters` library's Houlsby default. Trainable parameters per adapter: 2 d m + m + d.

Simplifications: the adapter wraps the output projection Linear (it sees that layer's output, before
the residual dropout), Houlsby's extra training of the layer norms is left to `modules_to_save`, and
an adapter cannot be merged into the weights (it is non-linear).
"""
from __future__ import annotations

import numpy as np

import minifm.functional as F
from minifm.nn import Linear, Module
from minifm.peft.config import AdapterConfig
from minifm.peft.layer import AdapterDict, TunerLayer

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": F.tanh,
}

ATTENTION_OUTPUT_NAMES = ("o_proj",)
MLP_OUTPUT_NAMES = ("fc_out", "down_proj")


class Bottleneck(Module):
    """down-project, non-linearity, zero-initialised up-project (returns only the residual branch)."""

    def __init__(self, features: int, bottleneck: int, non_linearity: str, rng=None, dtype=np.float32):
        super().__init__()
        self.adapter_down = Linear(features, bottleneck, rng=rng, dtype=dtype)
        self.adapter_up = Linear(bottleneck, features, dtype=dtype)
        self.adapter_down.bias.data[...] = 0.0  # a random negative bias can leave ReLU units dead from the start
        self.adapter_up.weight.data[...] = 0.0
        self.adapter_up.bias.data[...] = 0.0
        self.activation = ACTIVATIONS[non_linearity]

    def forward(self, h):
        hidden = self.activation(self.adapter_down(h))  # (..., m)
        return self.adapter_up(hidden)  # (..., d)


class BottleneckAdapterLayer(TunerLayer):
    """An output projection followed by one or more named bottleneck adapters."""

    adapter_container_names = ("adapters",)
    can_merge = False

    def __init__(self, base_layer: Linear):
        super().__init__(base_layer)
        self.adapters = AdapterDict()

    def add_adapter(self, name: str, config: AdapterConfig, rng=None) -> None:
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        bottleneck = bottleneck_size(self.out_features, config.reduction_factor)
        self.adapters[name] = Bottleneck(self.out_features, bottleneck, config.non_linearity, rng=rng,
                                         dtype=self.compute_dtype)

    def forward(self, x):
        h = self.base_forward(x)  # (..., d)
        if self.disable_adapters:
            return h
        for name in self.active_adapters:
            h = h + self.adapters[name](h)
        return h


def bottleneck_size(features: int, reduction_factor: int) -> int:
    return max(1, features // reduction_factor)


def adapter_targets(config: AdapterConfig) -> list[str]:
    targets = []
    if config.mh_adapter:
        targets += list(ATTENTION_OUTPUT_NAMES)
    if config.output_adapter:
        targets += list(MLP_OUTPUT_NAMES)
    return targets


def adapter_parameter_count(features: int, reduction_factor: int) -> int:
    bottleneck = bottleneck_size(features, reduction_factor)
    return 2 * features * bottleneck + bottleneck + features
