"""IA3: "Infused Adapter by Inhibiting and Amplifying Inner Activations" (Liu et al., 2022).

IA3 learns one vector per targeted Linear layer and multiplies it elementwise into the layer:

    keys / values (k_proj, v_proj):   y = (W x + b) * l,   l of size out   (rescales the output)
    feed-forward (fc_out, down_proj): y = W (x * l) + b,   l of size in    (rescales the FFN activation,
                                                                           which is fc_out's input)

as in PEFT, where `feedforward_modules` says which targets scale their input. The vectors start at
one, so the wrapped model is the base model at step 0. Trainable parameters: the sum over targets of
out_features (k/v) or in_features (feed-forward) — for a GPT block 2 * kv_dim + d_ff.

Both forms are linear in x, so they merge: W' = diag(l) W, b' = l * b for output scaling and
W' = W diag(l) for input scaling. The elementwise product is the existing broadcasting `mul`
(its gradient is checked in the autograd tests), so IA3 needs no new Function. Over a frozen
QuantizedLinear (minifm/nn/quantized.py) the vectors are float32 and train the same way; merging then
needs requantize=True (minifm/peft/layer.py).
"""
from __future__ import annotations

import numpy as np

from minifm.nn import Linear, Parameter
from minifm.peft.layer import AdapterDict, TunerLayer
from minifm.nn import Module


class ScalingVector(Module):
    """One learned vector `weight` (n,), initialised to ones."""

    def __init__(self, size: int, dtype=np.float32):
        super().__init__()
        self.weight = Parameter(np.ones(size, dtype=dtype))

    def forward(self, x):
        return x * self.weight


class IA3Linear(TunerLayer):
    """A Linear layer whose output (or, for feed-forward layers, input) is rescaled by learned vectors."""

    adapter_container_names = ("ia3_l",)

    def __init__(self, base_layer: Linear, is_feedforward: bool):
        super().__init__(base_layer)
        self.ia3_l = AdapterDict()
        self.is_feedforward = bool(is_feedforward)

    def add_adapter(self, name: str, config=None, rng=None) -> None:
        if name in self.ia3_l:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        size = self.in_features if self.is_feedforward else self.out_features
        self.ia3_l[name] = ScalingVector(size, dtype=self.compute_dtype)

    def merged_weight_and_bias(self, name, weight, bias):
        scale = self.ia3_l[name].weight.data.astype(weight.dtype)
        if self.is_feedforward:
            return weight * scale[None, :], bias  # W diag(l)
        new_bias = None if bias is None else bias * scale
        return weight * scale[:, None], new_bias  # diag(l) W, l * b

    def forward(self, x):
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_forward(x)
        if self.merged:
            return self.base_forward(x)
        if self.is_feedforward:
            for name in self.active_adapters:
                x = self.ia3_l[name](x)  # (..., in) * (in,)
            return self.base_forward(x)
        result = self.base_forward(x)  # (..., out)
        for name in self.active_adapters:
            result = self.ia3_l[name](result)
        return result


def ia3_parameter_count(in_features: int, out_features: int, is_feedforward: bool) -> int:
    return in_features if is_feedforward else out_features
