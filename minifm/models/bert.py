"""BERT: an encoder-only transformer (bidirectional attention) with a masked-LM head and a pooled classifier.

    ids (B, T) -> wte(ids) + wpe(0..T-1) -> dropout -> n_layer x TransformerBlock (not causal) -> norm_f
    mlm_logits(h)  = LayerNorm(gelu(mlm_dense(h))) @ wte.weight^T + mlm_bias          (B, T, vocab)
    classify(h)    = classifier(tanh(pooler(h[:, 0])))                                (B, num_labels)

Deviations from the original BERT, documented: pre-norm blocks with a final norm (the original is
post-norm; pre-norm trains more stably and reuses the shared block), no token-type (segment)
embeddings and no embedding LayerNorm. Padding keys (attention_mask == 0) are never attended; the
hidden states at padded positions are computed but meaningless. Positions are 0..T-1 (right padding).
Init: GPT-2 style (N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)), seeded by config.seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import minifm.functional as F
from minifm.models.config import (
    TransformerConfigBase, check_ids, initialise_weights, key_padding_mask, rotary_embedding, transformer_blocks,
)
from minifm.nn.layers import Dropout, Embedding, LayerNorm, Linear, make_norm
from minifm.nn.module import Module, Parameter


@dataclass
class BERTConfig(TransformerConfigBase):
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
    num_labels: int = 2
    mlp_ratio: float = 4.0
    mlp_hidden: int | None = None
    rope_base: float = 10000.0
    norm_eps: float | None = None
    init_std: float = 0.02
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:  # after ConfigBase's type checks
        self.check_shared_fields(extra_positive=("num_labels",))  # see TransformerConfigBase


class BERT(Module):
    """Encoder-only model (see the module docstring)."""

    def __init__(self, config: BERTConfig):
        super().__init__()
        if isinstance(config, dict):
            config = BERTConfig.from_dict(config)
        self.config = config
        # embeddings -> blocks -> final norm as in GPT (models/gpt.py), spelled out on purpose so that
        # each model file reads alone; the shared pieces are the helpers of models/config.py
        d = config.n_embd
        self.wte = Embedding(config.vocab_size, d)
        if config.pos == "learned":
            self.wpe = Embedding(config.block_size, d)
        self.drop = Dropout(config.dropout)
        self.blocks = transformer_blocks(config, config.n_layer, causal=False, rope=rotary_embedding(config))
        self.norm_f = make_norm(config.norm, d, config.norm_eps, config.bias)
        self.mlm_dense = Linear(d, d, bias=True)
        self.mlm_norm = LayerNorm(d)
        self.mlm_bias = Parameter(np.zeros(config.vocab_size, dtype=np.float32))
        self.pooler = Linear(d, d, bias=True)
        self.classifier = Linear(d, config.num_labels, bias=True)
        self.rng = initialise_weights(self, config, config.n_layer)  # GPT-2 init; drives every Dropout

    def forward(self, input_ids, attention_mask=None):
        """input_ids (B, T), attention_mask (B, T) of 1 = token / 0 = padding -> hidden states (B, T, n_embd)."""
        input_ids = check_ids("input_ids", input_ids)
        batch, steps = input_ids.shape
        if steps > self.config.block_size and self.config.pos == "learned":
            raise ValueError(f"sequence length {steps} exceeds block_size {self.config.block_size}")
        padding = key_padding_mask("attention_mask", attention_mask, (batch, steps))  # None: no padding
        positions = np.arange(steps)
        x = self.wte(input_ids)  # (B, T, d)
        if self.config.pos == "learned":
            x = x + self.wpe(positions)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, positions=positions, key_padding_mask=padding)
        return self.norm_f(x)  # (B, T, d)

    def mlm_logits(self, hidden):
        """Masked-LM logits (B, T, vocab) from hidden states (B, T, d); the decoder is tied to wte."""
        transformed = self.mlm_norm(F.gelu(self.mlm_dense(hidden)))  # (B, T, d)
        return F.linear(transformed, self.wte.weight, self.mlm_bias)

    def classify(self, hidden):
        """Sequence-classification logits (B, num_labels) from the first token's hidden state."""
        pooled = self.pooler(hidden[:, 0]).tanh()  # (B, d)
        return self.classifier(pooled)

    def mlm_loss(self, input_ids, labels, attention_mask=None, ignore_index: int = -100):
        """Cross-entropy on the positions whose label is not ignore_index (the masked ones)."""
        logits = self.mlm_logits(self.forward(input_ids, attention_mask))
        return F.cross_entropy(logits, np.asarray(labels), ignore_index=ignore_index)

    def classification_loss(self, input_ids, labels, attention_mask=None):
        logits = self.classify(self.forward(input_ids, attention_mask))
        return F.cross_entropy(logits, np.asarray(labels))
