"""LoRA: low-rank adaptation of Linear layers (Hu et al., 2021), with Hugging Face PEFT's conventions.

A wrapped Linear computes

    y = W x + b + scaling * B (A dropout(x)),    A (r, in), B (out, r)
    scaling = lora_alpha / r                    (or lora_alpha / sqrt(r) with use_rslora, rsLoRA)

A starts Kaiming-uniform with a = sqrt(5) (what torch's Linear init gives: U(-1/sqrt(in), 1/sqrt(in)))
and B starts at zero, so the wrapped model computes exactly what the base model computes until the
first update. Only A and B train; W and b stay frozen (and bit-identical). Trainable parameters per
wrapped layer: r * (in + out).

`merge()` folds scaling * B A into W so inference costs nothing extra; `unmerge()` restores W
exactly (see minifm/peft/layer.py); `merge_and_unload()` on the PeftModel merges and removes the
wrappers. The low-rank branch is one fused Function (`LowRankDelta`) so its backward computes only
what LoRA needs: gradients for A, B and the input, never for the frozen W. Its products go through
minifm.kernels.threads.matmul like every Linear layer's, so the thin (N, r) products run on one BLAS
thread: on two threads beside other busy processes OpenBLAS took ~20 ms for a 1024 x 576 @ 576 x 16
product that takes 0.4 ms on one (benchmarks/bench_finetune_step.py).

The base layer may be a frozen QuantizedLinear (Q8_0 / Q4_0 / Q4_1 blocks, minifm/nn/quantized.py):
A and B are then float32 and the branch is unchanged, the QLoRA recipe (Dettmers et al., 2023; GGUF
block formats where the paper has NF4). Backward through the base is QuantizedLinearFunction's input
gradient (grad @ dequantize(W)); merging needs requantize=True (minifm/peft/layer.py).

Simplifications: no fan_in_fan_out (weights are always (out, in), PyTorch's layout), no DoRA.
Per-module ranks and alphas (PEFT's rank_pattern / alpha_pattern) are chosen by LoraConfig.for_module.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd import Function
from minifm.kernels.threads import matmul
from minifm.nn import Linear
from minifm.nn.quantized import QuantizedLinear
import minifm.functional as F
from minifm.peft.config import LoraConfig
from minifm.peft.layer import AdapterDict, TunerLayer


class LowRankDelta(Function):
    """scaling * (x @ A^T) @ B^T for x (..., in), A (r, in), B (out, r) -> (..., out)."""

    @staticmethod
    def forward(ctx, x, lora_A, lora_B, scaling=1.0):
        if lora_A.ndim != 2 or lora_B.ndim != 2 or lora_B.shape[1] != lora_A.shape[0]:
            raise ValueError(f"LoRA needs A (r, in) and B (out, r); got A {lora_A.shape}, B {lora_B.shape}")
        if x.shape[-1] != lora_A.shape[1]:
            raise ValueError(f"LoRA input has {x.shape[-1]} features but A expects {lora_A.shape[1]} (A {lora_A.shape})")
        rank, in_features = lora_A.shape
        out_features = lora_B.shape[0]
        x_rows = x.reshape(-1, in_features)  # (N, in)
        hidden = matmul(x_rows, lora_A.T)  # (N, r)
        out = matmul(hidden, lora_B.T)  # (N, out)
        out *= out.dtype.type(scaling)
        ctx.x_rows, ctx.hidden, ctx.lora_A, ctx.lora_B = x_rows, hidden, lora_A, lora_B
        ctx.scaling, ctx.x_shape = scaling, x.shape
        return out.reshape(*x.shape[:-1], out_features)

    @staticmethod
    def backward(ctx, grad):
        out_features = ctx.lora_B.shape[0]
        grad_rows = grad.reshape(-1, out_features)  # (N, out)
        scaling = grad_rows.dtype.type(ctx.scaling)
        grad_hidden = matmul(grad_rows, ctx.lora_B)  # (N, r)
        grad_hidden *= scaling  # scaling applied to the (N, r) product, not to the (N, out) gradient
        grad_x = grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_x = matmul(grad_hidden, ctx.lora_A).reshape(ctx.x_shape)  # (..., in)
        if ctx.needs_input_grad[1]:
            grad_A = matmul(grad_hidden.T, ctx.x_rows)  # (r, in)
        if ctx.needs_input_grad[2]:
            grad_B = matmul(grad_rows.T, ctx.hidden)  # (out, r)
            grad_B *= scaling
        return grad_x, grad_A, grad_B


def kaiming_uniform_a_sqrt5(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """torch.nn.init.kaiming_uniform_(w, a=sqrt(5)): U(-b, b) with b = sqrt(6 / ((1 + a^2) fan_in)) = 1/sqrt(fan_in)."""
    fan_in = shape[1]
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


class LoraLinear(TunerLayer):
    """A Linear layer plus one or more named LoRA branches (see the module docstring)."""

    adapter_container_names = ("lora_A", "lora_B")

    def __init__(self, base_layer: Linear | QuantizedLinear, rng: np.random.Generator | None = None):
        super().__init__(base_layer)
        self.lora_A = AdapterDict()
        self.lora_B = AdapterDict()
        self.scaling = {}
        self.r = {}
        self.lora_dropout = {}
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def add_adapter(self, name: str, config: LoraConfig, rng: np.random.Generator) -> None:
        if name in self.lora_A:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        dtype = self.compute_dtype  # the base model's precision; float32 over quantized blocks (QLoRA)
        lora_A = Linear(self.in_features, config.r, bias=False, dtype=dtype)
        lora_B = Linear(config.r, self.out_features, bias=False, dtype=dtype)
        if config.init_lora_weights:
            lora_A.weight.data[...] = kaiming_uniform_a_sqrt5((config.r, self.in_features), rng)
            lora_B.weight.data[...] = 0.0
        self.lora_A[name] = lora_A
        self.lora_B[name] = lora_B
        self.scaling[name] = config.scaling
        self.r[name] = config.r
        self.lora_dropout[name] = float(config.lora_dropout)

    def delta_weight(self, name: str) -> np.ndarray:
        """scaling * B @ A, the (out, in) change this adapter makes to W."""
        lora_A = self.lora_A[name].weight.data  # (r, in)
        lora_B = self.lora_B[name].weight.data  # (out, r)
        return (lora_B @ lora_A) * lora_A.dtype.type(self.scaling[name])

    def merged_weight_and_bias(self, name, weight, bias):
        return weight + self.delta_weight(name).astype(weight.dtype), bias

    def forward(self, x):
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_forward(x)
        result = self.base_forward(x)  # (..., out)
        if self.merged:
            return result
        for name in self.active_adapters:
            lora_input = x
            p = self.lora_dropout[name]
            if p > 0.0 and self.training:
                lora_input = F.dropout(x, p, True, self.rng)
            delta = LowRankDelta.apply(lora_input, self.lora_A[name].weight, self.lora_B[name].weight,
                                       scaling=self.scaling[name])  # (..., out)
            result = result + delta
        return result


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Closed form: A has r * in entries and B out * r."""
    return r * (in_features + out_features)


__all__ = ["LoraLinear", "LowRankDelta", "kaiming_uniform_a_sqrt5", "lora_parameter_count"]
