"""GPT: a decoder-only transformer language model (GPT-2's layout, with LLaMA-style options).

    ids (B, T) -> wte(ids) [+ wpe(positions)] -> dropout -> n_layer x TransformerBlock (causal, pre-norm)
               -> norm_f -> logits = h @ wte.weight^T (tied) or lm_head(h)           (B, T, vocab)

Options in GPTConfig: learned absolute positions or RoPE; LayerNorm or RMSNorm; GELU MLP (exact, or
GPT-2's tanh approximation: mlp="gelu_tanh") or SwiGLU; grouped-query attention (n_kv_head < n_head);
tied or separate output head; biases on or off (q/k/v biases alone with qkv_bias, as Qwen2 has).
These options cover the GPT-2 and Llama families, whose checkpoints GPT.from_pretrained reads.

Positions: with an attention_mask (B, cached + new) of 1/0 (0 = padding), a token's position is the
number of real tokens before it (cumulative sum of the mask - 1, as Hugging Face does), so a
left-padded prompt gets the same positions as the unpadded one; padding keys are never attended.

Initialisation: GPT-2's (minifm.models.config.init_gpt2_style): N(0, 0.02) weights, zero biases,
residual projections scaled by 1/sqrt(2 * n_layer). The generator is seeded by config.seed; a second
generator from the same seed, `model.rng`, drives every Dropout.

Config fields beyond the core ones (vocab_size ... tie_weights), all with defaults: mlp_ratio=4.0, mlp_hidden=None
(explicit FFN width), rope_base=10000.0, norm_eps=None (1e-5 LayerNorm / 1e-6 RMSNorm),
init_std=0.02, seed=0, dtype="float32" ("float64" for exact-math tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import minifm.functional as F
from minifm.autograd.tensor import Tensor, data_of
from minifm.models.config import (
    TransformerConfigBase, check_ids, check_mask, initialise_weights, rotary_embedding, transformer_blocks,
)
from minifm.nn.attention import KVCache
from minifm.nn.layers import Dropout, Embedding, Linear, make_norm
from minifm.models.pretrained import load_pretrained, save_pretrained
from minifm.nn.module import Module
from minifm.sampling.generate import generate


# BERTConfig and T5Config repeat most of these fields on purpose: each config shows all its fields and
# defaults in one place; their checks and derived sizes are shared (TransformerConfigBase, models/config.py)
@dataclass
class GPTConfig(TransformerConfigBase):
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    n_kv_head: int | None = None
    dropout: float = 0.0
    bias: bool = True
    pos: str = "learned"
    norm: str = "layernorm"
    mlp: str = "gelu"
    tie_weights: bool = True
    mlp_ratio: float = 4.0
    mlp_hidden: int | None = None
    rope_base: float = 10000.0
    norm_eps: float | None = None
    init_std: float = 0.02
    seed: int = 0
    dtype: str = "float32"
    qkv_bias: bool | None = None  # q/k/v biases apart from `bias` (Qwen2: True with bias=False); None = bias

    def validate(self) -> None:  # after ConfigBase's type checks
        self.check_shared_fields()  # positive sizes, choices, heads, dropout (TransformerConfigBase)


class GPT(Module):
    """Decoder-only language model (see the module docstring)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if isinstance(config, dict):
            config = GPTConfig.from_dict(config)
        self.config = config
        d = config.n_embd
        self.wte = Embedding(config.vocab_size, d)
        if config.pos == "learned":
            self.wpe = Embedding(config.block_size, d)
        self.drop = Dropout(config.dropout)
        self.blocks = transformer_blocks(config, config.n_layer, causal=True, rope=rotary_embedding(config))
        self.norm_f = make_norm(config.norm, d, config.norm_eps, config.bias)
        if not config.tie_weights:
            self.lm_head = Linear(d, config.vocab_size, bias=False)
        self.rng = initialise_weights(self, config, config.n_layer)  # GPT-2 init; drives every Dropout

    # ------------------------------------------------------------------ forward
    @classmethod
    def from_pretrained(cls, path, dtype: str | None = None) -> "GPT":
        """A GPT holding a real checkpoint: a Hugging Face directory or a .gguf file (minifm/models/pretrained.py)."""
        return load_pretrained(cls, GPTConfig, "gpt", path, dtype)

    def save_pretrained(self, directory):
        """Write this model as a Hugging Face directory (config.json + model.safetensors) that transformers loads."""
        return save_pretrained(self, "gpt", directory)

    def forward(self, input_ids=None, attention_mask=None, cache: KVCache | None = None, inputs_embeds=None,
                return_hidden: bool = False):
        """Logits (B, T, vocab) for the new tokens (and the final hidden states if return_hidden).

        input_ids (B, T) integers, or inputs_embeds (B, T, n_embd) instead of the token lookup.
        attention_mask (B, cached + T): 1 = real token, 0 = padding (left padding allowed).
        cache: a KVCache from make_cache(); read, extended in place, and advanced by T.
        """
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            input_ids = check_ids("input_ids", input_ids)
            batch, steps = input_ids.shape
            x = self.wte(input_ids)  # (B, T, d)
        else:
            x = inputs_embeds if isinstance(inputs_embeds, Tensor) else Tensor(np.asarray(inputs_embeds))
            if x.ndim != 3 or x.shape[-1] != config.n_embd:
                raise ValueError(f"inputs_embeds must be (B, T, {config.n_embd}), got {x.shape}")
            batch, steps = x.shape[:2]
        past = 0 if cache is None else cache.length
        if cache is not None and cache.batch_size != batch:
            raise ValueError(f"the cache holds batch size {cache.batch_size}, the input has {batch}")
        if config.pos == "learned" and past + steps > config.block_size:
            raise ValueError(
                f"sequence length {past + steps} (cached {past} + new {steps}) exceeds block_size {config.block_size}"
            )
        positions, key_padding_mask = self._positions_and_mask(attention_mask, batch, past, steps)
        if config.pos == "learned":
            x = x + self.wpe(positions)  # (B, T, d)
        x = self.drop(x)
        for index, block in enumerate(self.blocks):
            x = block(x, positions=positions, key_padding_mask=key_padding_mask, cache=cache, layer_index=index)
        hidden = self.norm_f(x)  # (B, T, d)
        logits = self.logits_from_hidden(hidden)  # (B, T, vocab)
        if cache is not None:
            cache.advance(steps)
        return (logits, hidden) if return_hidden else logits

    def logits_from_hidden(self, hidden):
        """Apply the output head to final hidden states (B, T, d) -> (B, T, vocab)."""
        if self.config.tie_weights:
            return F.linear(hidden, self.wte.weight)
        return self.lm_head(hidden)

    @staticmethod
    def _positions_and_mask(attention_mask, batch: int, past: int, steps: int):
        """Positions (B, T) or (T,) of the new tokens and the key padding mask (None when nothing is padded)."""
        if attention_mask is None:
            return np.arange(past, past + steps), None
        mask = check_mask("attention_mask", attention_mask, (batch, past + steps))
        positions = np.cumsum(mask, axis=1) - 1  # (B, past + T): real tokens before each token
        positions = np.maximum(positions, 0)[:, past:]  # (B, T)
        key_padding_mask = None if mask.all() else mask
        return positions, key_padding_mask

    def make_cache(self, batch_size: int, max_length: int | None = None) -> KVCache:
        """An empty KVCache for `batch_size` sequences of up to max_length (default block_size) tokens."""
        config = self.config
        return KVCache(config.n_layer, batch_size, config.kv_heads, config.head_dim,
                       config.block_size if max_length is None else max_length)

    def loss(self, input_ids, targets, ignore_index: int = -100, attention_mask=None):
        """Mean next-token cross-entropy of targets (B, T) under the logits of input_ids (B, T)."""
        logits = self.forward(input_ids, attention_mask=attention_mask)  # (B, T, V)
        targets = np.asarray(data_of(targets))
        if targets.shape != logits.shape[:2]:
            raise ValueError(f"targets must have shape {logits.shape[:2]}, got {targets.shape}")
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)

    def generate(self, input_ids, max_new_tokens: int, **kwargs):
        """Sample continuations; see minifm.sampling.generate.generate for the arguments."""
        return generate(self, input_ids, max_new_tokens, **kwargs)
