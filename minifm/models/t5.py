"""T5: an encoder-decoder transformer (bidirectional encoder, causal decoder with cross-attention).

    encode(ids)  = norm_enc(encoder blocks(dropout(shared(ids))))                        (B, S, d)
    decode(dec_ids, enc) = logits of norm_dec(decoder blocks(shared(dec_ids), enc))      (B, T, vocab)
    decoder block: x += self_attn(norm(x)) (causal); x += cross_attn(norm(x), enc); x += mlp(norm(x))

Positions (a documented simplification: T5 itself uses learned relative-position buckets):
pos="rope" (default) rotates q/k in every self-attention (relative, like T5's buckets, and keeps
attention on the fused flash kernel); pos="learned" adds absolute position tables `encoder_wpe` and
`decoder_wpe` to the embeddings instead. With RoPE the encoder output carries position only through
relative attention patterns, so small models learn position-sensitive maps (reversal) slowly;
"learned" makes them easy. Other simplifications: the tied output
head is not rescaled by d^-0.5; RMSNorm and no biases by default, as T5. One embedding table `shared`
serves encoder, decoder and (tied) output head. Training uses teacher forcing:
decoder_input_ids = shift_right(labels) (decoder_start_token_id first). Init: GPT-2 style with the
residual scale 1/sqrt(2 * max(n_layer, n_decoder_layer)), seeded by config.seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import minifm.functional as F
from minifm.autograd.grad_mode import no_grad
from minifm.models.config import (
    TransformerConfigBase, check_ids, check_positive_int, initialise_weights, key_padding_mask,
    rotary_embedding, transformer_blocks,
)
from minifm.nn.attention import KVCache
from minifm.nn.layers import Dropout, Embedding, Linear, make_norm
from minifm.nn.module import Module


@dataclass
class T5Config(TransformerConfigBase):
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    n_decoder_layer: int | None = None
    n_kv_head: int | None = None
    dropout: float = 0.0
    bias: bool = False
    pos: str = "rope"
    norm: str = "rmsnorm"
    mlp: str = "gelu"
    tie_weights: bool = True
    mlp_ratio: float = 4.0
    mlp_hidden: int | None = None
    rope_base: float = 10000.0
    norm_eps: float | None = None
    init_std: float = 0.02
    seed: int = 0
    dtype: str = "float32"
    pad_token_id: int = 0
    decoder_start_token_id: int = 0

    def validate(self) -> None:  # after ConfigBase's type checks
        if self.n_decoder_layer is not None:
            check_positive_int("T5Config", "n_decoder_layer", self.n_decoder_layer)
        self.check_shared_fields()  # positive sizes, choices, heads, dropout (TransformerConfigBase)

    @property
    def decoder_layers(self) -> int:
        return self.n_layer if self.n_decoder_layer is None else self.n_decoder_layer


class T5(Module):
    """Encoder-decoder model (see the module docstring)."""

    def __init__(self, config: T5Config):
        super().__init__()
        if isinstance(config, dict):
            config = T5Config.from_dict(config)
        self.config = config
        # embeddings -> blocks -> final norm as in GPT (models/gpt.py), spelled out on purpose so that
        # each model file reads alone; the shared pieces are the helpers of models/config.py
        d = config.n_embd
        rope = rotary_embedding(config)  # one table for encoder and decoder self-attention (None if learned)
        self.shared = Embedding(config.vocab_size, d)
        if config.pos == "learned":
            self.encoder_wpe = Embedding(config.block_size, d)
            self.decoder_wpe = Embedding(config.block_size, d)
        self.drop = Dropout(config.dropout)
        self.encoder_blocks = transformer_blocks(config, config.n_layer, causal=False, rope=rope)
        self.encoder_norm = make_norm(config.norm, d, config.norm_eps, config.bias)
        self.decoder_blocks = transformer_blocks(config, config.decoder_layers, causal=True, rope=rope,
                                                 cross_attention=True)
        self.decoder_norm = make_norm(config.norm, d, config.norm_eps, config.bias)
        if not config.tie_weights:
            self.lm_head = Linear(d, config.vocab_size, bias=False)
        self.rng = initialise_weights(self, config, max(config.n_layer, config.decoder_layers))

    def encode(self, input_ids, attention_mask=None):
        """input_ids (B, S), attention_mask (B, S) 1/0 -> encoder hidden states (B, S, d)."""
        input_ids = check_ids("input_ids", input_ids)
        batch, steps = input_ids.shape
        padding = key_padding_mask("attention_mask", attention_mask, (batch, steps))  # None: no padding
        positions = np.arange(steps)
        x = self.shared(input_ids)  # (B, S, d)
        if self.config.pos == "learned":
            self._check_length(steps)
            x = x + self.encoder_wpe(positions)
        x = self.drop(x)
        for block in self.encoder_blocks:
            x = block(x, positions=positions, key_padding_mask=padding)
        return self.encoder_norm(x)

    def decode(self, decoder_input_ids, encoder_hidden, encoder_mask=None, cache: KVCache | None = None):
        """Logits (B, T, vocab) for decoder_input_ids (B, T) attending to encoder_hidden (B, S, d)."""
        decoder_input_ids = check_ids("decoder_input_ids", decoder_input_ids)
        batch, steps = decoder_input_ids.shape
        if encoder_hidden.shape[0] != batch or encoder_hidden.shape[-1] != self.config.n_embd:
            raise ValueError(
                f"encoder_hidden must be ({batch}, S, {self.config.n_embd}), got {encoder_hidden.shape}"
            )
        encoder_mask = key_padding_mask("encoder_mask", encoder_mask, encoder_hidden.shape[:2])
        past = 0 if cache is None else cache.length
        positions = np.arange(past, past + steps)
        x = self.shared(decoder_input_ids)  # (B, T, d)
        if self.config.pos == "learned":
            self._check_length(past + steps)
            x = x + self.decoder_wpe(positions)
        x = self.drop(x)
        for index, block in enumerate(self.decoder_blocks):
            x = block(x, positions=positions, cache=cache, layer_index=index, encoder_hidden=encoder_hidden,
                      encoder_mask=encoder_mask)
        hidden = self.decoder_norm(x)  # (B, T, d)
        if cache is not None:
            cache.advance(steps)
        if self.config.tie_weights:
            return F.linear(hidden, self.shared.weight)
        return self.lm_head(hidden)

    def _check_length(self, steps: int) -> None:
        if steps > self.config.block_size:
            raise ValueError(f"sequence length {steps} exceeds block_size {self.config.block_size} (learned positions)")

    def forward(self, input_ids, decoder_input_ids, attention_mask=None):
        encoder_hidden = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, encoder_hidden, attention_mask)

    def shift_right(self, labels) -> np.ndarray:
        """Teacher-forcing decoder inputs: [start, labels[:-1]] with ignored (-100) labels replaced by pad."""
        labels = check_ids("labels", labels)
        shifted = np.empty_like(labels)
        shifted[:, 0] = self.config.decoder_start_token_id
        shifted[:, 1:] = labels[:, :-1]
        shifted[shifted < 0] = self.config.pad_token_id
        return shifted

    def loss(self, input_ids, labels, attention_mask=None, decoder_input_ids=None, ignore_index: int = -100):
        """Mean cross-entropy of labels (B, T); decoder inputs default to shift_right(labels)."""
        labels = check_ids("labels", labels)
        if decoder_input_ids is None:
            decoder_input_ids = self.shift_right(labels)
        logits = self.forward(input_ids, decoder_input_ids, attention_mask)  # (B, T, V)
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)

    def make_cache(self, batch_size: int, max_length: int | None = None) -> KVCache:
        config = self.config
        return KVCache(config.decoder_layers, batch_size, config.kv_heads, config.head_dim,
                       config.block_size if max_length is None else max_length)

    def greedy_decode(self, input_ids, max_new_tokens: int, attention_mask=None) -> np.ndarray:
        """Greedy decoding with the KV cache; returns generated ids (B, max_new_tokens) (no start token)."""
        with no_grad():
            encoder_hidden = self.encode(input_ids, attention_mask)
            batch = encoder_hidden.shape[0]
            cache = self.make_cache(batch, max_new_tokens)
            token = np.full((batch, 1), self.config.decoder_start_token_id, dtype=np.int64)
            generated = []
            for _ in range(max_new_tokens):
                logits = self.decode(token, encoder_hidden, attention_mask, cache=cache)  # (B, 1, V)
                token = np.argmax(logits.data[:, -1], axis=-1)[:, None].astype(np.int64)
                generated.append(token)
        return np.concatenate(generated, axis=1)
