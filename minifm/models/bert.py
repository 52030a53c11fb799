"""BERT: an encoder-only transformer (bidirectional attention) with a masked-LM head and a pooled classifier.

    ids (B, T) -> wte(ids) + wpe(0..T-1) [+ wtt(token_type_ids)] -> [emb_norm] -> dropout
               -> n_layer x TransformerBlock (not causal) -> [norm_f, pre-norm only]      (B, T, d)
    mlm_logits(h)  = LayerNorm(gelu(mlm_dense(h))) @ wte.weight^T + mlm_bias          (B, T, vocab)
    classify(h)    = classifier(tanh(pooler(h[:, 0])))                                (B, num_labels)

Two layouts from one config:
- minifm's default (norm_position="pre", type_vocab_size=0, embedding_norm=False): pre-norm blocks and
  a final norm (pre-norm trains more stably without warm-up and reuses GPT's block), no token-type
  (segment) embeddings, no embedding LayerNorm;
- the original BERT's (norm_position="post", type_vocab_size=2, embedding_norm=True, norm_eps=1e-12),
  which BERT.from_pretrained builds for Hugging Face BertModel checkpoints: post-norm blocks (no final
  norm: each block's output is already normalised), segment embeddings, LayerNorm after the embeddings.
Padding keys (attention_mask == 0) are never attended; the hidden states at padded positions are
computed but meaningless. Positions are 0..T-1 (right padding).
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
from minifm.models.pretrained import load_pretrained, save_pretrained
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
    norm_position: str = "pre"  # "post": the original BERT's post-norm blocks, and no final norm
    type_vocab_size: int = 0  # segment (token-type) embeddings; 0 = none, BERT checkpoints have 2
    embedding_norm: bool = False  # LayerNorm after the summed embeddings (the original BERT's)

    def validate(self) -> None:  # after ConfigBase's type checks
        self.check_shared_fields(extra_positive=("num_labels",))  # see TransformerConfigBase
        if self.type_vocab_size < 0:
            raise ValueError(f"BERTConfig.type_vocab_size must be >= 0, got {self.type_vocab_size}")


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
        if config.type_vocab_size:
            self.wtt = Embedding(config.type_vocab_size, d)
        if config.embedding_norm:
            self.emb_norm = make_norm(config.norm, d, config.norm_eps, config.bias)
        self.drop = Dropout(config.dropout)
        self.blocks = transformer_blocks(config, config.n_layer, causal=False, rope=rotary_embedding(config))
        if config.norm_position == "pre":
            self.norm_f = make_norm(config.norm, d, config.norm_eps, config.bias)
        self.mlm_dense = Linear(d, d, bias=True)
        self.mlm_norm = LayerNorm(d, eps=1e-5 if config.norm_eps is None else config.norm_eps)
        self.mlm_bias = Parameter(np.zeros(config.vocab_size, dtype=np.float32))
        self.pooler = Linear(d, d, bias=True)
        self.classifier = Linear(d, config.num_labels, bias=True)
        self.rng = initialise_weights(self, config, config.n_layer)  # GPT-2 init; drives every Dropout

    @classmethod
    def from_pretrained(cls, path, dtype: str | None = None) -> "BERT":
        """A BERT holding a real checkpoint: a Hugging Face directory (minifm/models/pretrained.py)."""
        return load_pretrained(cls, BERTConfig, "bert", path, dtype)

    def save_pretrained(self, directory):
        """Write this model as a Hugging Face directory (config.json + model.safetensors) that transformers loads."""
        return save_pretrained(self, "bert", directory)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """input_ids (B, T), attention_mask (B, T) of 1 = token / 0 = padding -> hidden states (B, T, n_embd).

        token_type_ids (B, T): segment ids (0 = first sentence, 1 = second), default all 0; only for a
        config with type_vocab_size > 0.
        """
        config = self.config
        input_ids = check_ids("input_ids", input_ids)
        batch, steps = input_ids.shape
        if steps > config.block_size and config.pos == "learned":
            raise ValueError(f"sequence length {steps} exceeds block_size {config.block_size}")
        padding = key_padding_mask("attention_mask", attention_mask, (batch, steps))  # None: no padding
        positions = np.arange(steps)
        x = self.wte(input_ids)  # (B, T, d)
        if config.pos == "learned":
            x = x + self.wpe(positions)
        if config.type_vocab_size:
            x = x + self.wtt(self._token_types(token_type_ids, input_ids.shape))  # (B, T, d)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but this BERT has no token-type embeddings (type_vocab_size=0)")
        if config.embedding_norm:
            x = self.emb_norm(x)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, positions=positions, key_padding_mask=padding)
        return self.norm_f(x) if config.norm_position == "pre" else x  # (B, T, d)

    def _token_types(self, token_type_ids, shape: tuple[int, int]) -> np.ndarray:
        """Checked (B, T) segment ids; zeros when none are given."""
        if token_type_ids is None:
            return np.zeros(shape, dtype=np.int64)
        token_type_ids = check_ids("token_type_ids", token_type_ids)
        if token_type_ids.shape != shape:
            raise ValueError(f"token_type_ids must have the shape of input_ids {shape}, got {token_type_ids.shape}")
        if token_type_ids.min() < 0 or token_type_ids.max() >= self.config.type_vocab_size:
            raise ValueError(f"token_type_ids must lie in [0, {self.config.type_vocab_size}), "
                             f"got values in [{token_type_ids.min()}, {token_type_ids.max()}]")
        return token_type_ids

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
