"""Helpers shared by the model configs and models: dict round trip, field checks, FFN width, block stacks,
GPT-2 init, RNG wiring.

The configs are minifm.config.ConfigBase dataclasses: `to_dict()` and `from_dict(d)`, from_dict
rejecting unknown keys with the list of valid ones (a typo in a JSON config must not be silently ignored).
TransformerConfigBase adds what GPTConfig, BERTConfig and T5Config have in common: the checks of the
shared fields (errors name the concrete config class) and the derived sizes kv_heads, head_dim and
ffn_hidden. Each config still declares its own fields and defaults, so one file shows one config.

Model construction: rotary_embedding(config) and transformer_blocks(config, ...) build the pieces every
model has; initialise_weights(model, config, n_layer) runs the seeded init below and returns the
dropout generator.

init_gpt2_style(model, n_layer, std, rng) is GPT-2's initialisation: every Linear and Embedding
weight ~ N(0, std^2) (std = 0.02), biases 0, norm weights 1, and the projections that add into the
residual stream (attention `o_proj`, MLP `fc_out` / `down_proj`) ~ N(0, (std / sqrt(2 * n_layer))^2),
so the residual stream's variance does not grow with depth (two residual additions per layer).
"""
from __future__ import annotations

import math

import numpy as np

from minifm.autograd.tensor import data_of
from minifm.config import ConfigBase
from minifm.nn import init
from minifm.nn.attention import RotaryEmbedding
from minifm.nn.block import NORM_POSITIONS, TransformerBlock
from minifm.nn.layers import Dropout, Embedding, Linear
from minifm.nn.mlp import MLP_KINDS
from minifm.nn.module import ModuleList

RESIDUAL_PROJECTIONS = ("o_proj", "fc_out", "down_proj")


class TransformerConfigBase(ConfigBase):
    """Mixin for the transformer configs: checks of the shared fields and the derived sizes.

    The subclass (a dataclass) declares vocab_size, block_size, n_layer, n_head, n_embd, n_kv_head,
    dropout, pos, norm, mlp, mlp_ratio, mlp_hidden and dtype, and calls check_shared_fields from
    its validate(), naming any extra fields that must be positive integers. Two block options have
    class-level defaults here and are fields only of the configs that need them: norm_position
    (BERTConfig: "post" for BERT checkpoints) and qkv_bias (GPTConfig: Qwen2's q/k/v-only biases).
    """

    norm_position = "pre"  # "pre" | "post" (see minifm/nn/block.py)
    qkv_bias = None  # biases on q/k/v only; None = the same as `bias`

    def check_shared_fields(self, extra_positive: tuple[str, ...] = ()) -> None:
        name = type(self).__name__
        for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd") + tuple(extra_positive):
            check_positive_int(name, field, getattr(self, field))
        check_choice(name, "pos", self.pos, ("learned", "rope"))
        check_choice(name, "norm", self.norm, ("layernorm", "rmsnorm"))
        check_choice(name, "mlp", self.mlp, MLP_KINDS)
        check_choice(name, "norm_position", self.norm_position, NORM_POSITIONS)
        check_choice(name, "dtype", self.dtype, ("float32", "float64"))
        check_heads(name, self.n_embd, self.n_head, self.n_kv_head, self.pos)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{name}.dropout must be in [0, 1), got {self.dropout}")

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_head, or n_head when grouped-query attention is off."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def ffn_hidden(self) -> int:
        return ffn_hidden_size(self.mlp, self.n_embd, self.mlp_ratio, self.mlp_hidden)


def check_choice(config_name: str, field: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{config_name}.{field} must be one of {list(choices)}, got {value!r}")


def check_positive_int(config_name: str, field: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{config_name}.{field} must be a positive integer, got {value!r}")


def check_heads(config_name: str, dim: int, n_head: int, n_kv_head: int | None, pos: str = "learned") -> None:
    if dim % n_head:
        raise ValueError(f"{config_name}: the width {dim} must be divisible by n_head {n_head}")
    if n_kv_head is not None and (n_kv_head <= 0 or n_head % n_kv_head):
        raise ValueError(f"{config_name}: n_head {n_head} must be a positive multiple of n_kv_head {n_kv_head}")
    if pos == "rope" and (dim // n_head) % 2:
        raise ValueError(f"{config_name}: RoPE needs an even head dimension, got {dim // n_head}")


def ffn_hidden_size(mlp: str, dim: int, mlp_ratio: float, mlp_hidden: int | None) -> int:
    """Width of the feed-forward hidden layer.

    An explicit mlp_hidden wins. Otherwise GELU uses mlp_ratio * dim (4d in GPT-2); SwiGLU has three
    matrices instead of two, so it uses 2/3 of that, rounded up to a multiple of 8 (LLaMA's rule),
    to keep the parameter count about the same.
    """
    if mlp_hidden is not None:
        return int(mlp_hidden)
    hidden = mlp_ratio * dim
    if mlp == "swiglu":
        return 8 * math.ceil(2 * hidden / 3 / 8)
    return int(round(hidden))


def rotary_embedding(config) -> RotaryEmbedding | None:
    """The RoPE table all self-attentions share when config.pos == "rope", else None."""
    return RotaryEmbedding(config.head_dim, config.rope_base) if config.pos == "rope" else None


def transformer_blocks(config, count: int, causal: bool, rope: RotaryEmbedding | None,
                       cross_attention: bool = False) -> ModuleList:
    """`count` TransformerBlocks of the config's width, heads, norm (and its position), MLP, biases and dropout."""
    return ModuleList(
        TransformerBlock(config.n_embd, config.n_head, config.n_kv_head, mlp_hidden=config.ffn_hidden,
                         bias=config.bias, norm=config.norm, mlp=config.mlp, dropout=config.dropout, causal=causal,
                         cross_attention=cross_attention, rope=rope, norm_eps=config.norm_eps,
                         norm_position=config.norm_position, qkv_bias=config.qkv_bias)
        for _ in range(count)
    )


def initialise_weights(model, config, n_layer: int) -> np.random.Generator:
    """GPT-2 init of `model` from config.seed, cast to config.dtype; returns the dropout generator.

    n_layer sets the residual-projection scale 1/sqrt(2 n_layer). Every Dropout in the model gets the
    returned generator (the model keeps it as `model.rng`).
    """
    init_rng, dropout_rng = seeded_generators(config.seed)
    init_gpt2_style(model, n_layer, config.init_std, init_rng)
    model.to(np.dtype(config.dtype))
    attach_dropout_rng(model, dropout_rng)
    return dropout_rng


def seeded_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators from one seed: (weights initialisation, dropout)."""
    init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(dropout_seq)


def init_gpt2_style(model, n_layer: int, std: float, rng: np.random.Generator) -> None:
    """Re-initialise `model` in place with GPT-2's scheme (see the module docstring)."""
    residual_std = std / math.sqrt(2 * n_layer)
    for name, module in model.named_modules():
        if isinstance(module, Linear):
            is_residual = name.rsplit(".", 1)[-1] in RESIDUAL_PROJECTIONS
            init.normal_(module.weight, 0.0, residual_std if is_residual else std, rng=rng)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, Embedding):
            init.normal_(module.weight, 0.0, std, rng=rng)


def attach_dropout_rng(model, rng: np.random.Generator) -> None:
    """Give every Dropout in `model` the model's generator (one stream, saved with the training state)."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.rng = rng


def check_ids(name: str, ids) -> np.ndarray:
    """Validate a (B, T) integer id array and return it as an ndarray."""
    ids = np.asarray(data_of(ids))
    if ids.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (batch, time) array, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {ids.dtype}")
    return ids


def check_mask(name: str, mask, shape: tuple[int, int]) -> np.ndarray:
    """Validate a (B, T) 0/1 or bool mask; return it as bool."""
    mask = np.asarray(data_of(mask))
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {mask.shape}")
    if mask.dtype != bool:
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"{name} must hold only 0/1 (or bool) values")
        mask = mask.astype(bool)
    return mask


def key_padding_mask(name: str, mask, shape: tuple[int, int]) -> np.ndarray | None:
    """check_mask, then None when nothing is padded (attention then skips the mask entirely)."""
    if mask is None:
        return None
    mask = check_mask(name, mask, shape)
    return None if mask.all() else mask
