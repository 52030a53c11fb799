"""Prompt tuning (Lester et al., 2021): a learned soft prompt prepended to every input.

The soft prompt is a table E_p of num_virtual_tokens x d_model learned embeddings. The wrapped model
embeds the real tokens with its (frozen) token embedding, prepends E_p, extends the attention mask by
num_virtual_tokens ones, and runs the frozen transformer on `inputs_embeds`:

    h = Transformer([E_p ; Embed(x)]),   outputs at the virtual positions are dropped.

Trainable parameters: num_virtual_tokens * d_model.

Initialisation (PEFT's `prompt_tuning_init`):
  "TEXT"    the embeddings of `prompt_tuning_init_text`'s tokens, repeated to fill and truncated to
            num_virtual_tokens (PEFT's rule);
  "RANDOM"  Normal noise. Deviation from PEFT (which uses N(0, 1), torch's Embedding init): the
            standard deviation is that of the model's own token embedding table, so the soft prompt
            starts at the scale the frozen network was trained on.

With a KV cache the virtual tokens are fed once, on the first (prefill) call, and live in the cache
afterwards; later calls only extend the caller's attention mask by the virtual positions.
"""
from __future__ import annotations

import numpy as np

from minifm.nn import Module, Parameter
from minifm.peft.config import PromptTuningConfig


class PromptEmbedding(Module):
    """The soft prompt: `weight` (num_virtual_tokens, d_model)."""

    def __init__(self, num_virtual_tokens: int, d_model: int, dtype=np.float32):
        super().__init__()
        self.weight = Parameter(np.zeros((num_virtual_tokens, d_model), dtype=dtype))

    @property
    def num_virtual_tokens(self) -> int:
        return self.weight.shape[0]

    def forward(self, batch_size: int):
        """The soft prompt broadcast over the batch: (batch, num_virtual_tokens, d_model)."""
        return self.weight.unsqueeze(0).broadcast_to((batch_size, *self.weight.shape))


def init_prompt_embedding(prompt: PromptEmbedding, config: PromptTuningConfig, token_embedding_weight: np.ndarray,
                          rng: np.random.Generator, tokenizer=None) -> None:
    """Fill the soft prompt per `config.prompt_tuning_init` (see the module docstring)."""
    num_virtual_tokens, d_model = prompt.weight.shape
    if token_embedding_weight.shape[1] != d_model:
        raise ValueError(f"token embedding width {token_embedding_weight.shape[1]} != soft prompt width {d_model}")
    if config.prompt_tuning_init == "RANDOM":
        std = float(np.std(token_embedding_weight))
        prompt.weight.data[...] = rng.normal(0.0, std, size=(num_virtual_tokens, d_model))
        return
    if tokenizer is None:
        raise ValueError("prompt_tuning_init='TEXT' needs the tokenizer (pass tokenizer=... to get_peft_model)")
    ids = list(tokenizer.encode(config.prompt_tuning_init_text))
    if not ids:
        raise ValueError(f"prompt_tuning_init_text {config.prompt_tuning_init_text!r} encodes to no tokens")
    vocab_size = token_embedding_weight.shape[0]
    if max(ids) >= vocab_size:
        raise ValueError(f"prompt_tuning_init_text has token id {max(ids)} >= the model's vocab_size {vocab_size}")
    repeats = -(-num_virtual_tokens // len(ids))  # ceil division
    ids = (ids * repeats)[:num_virtual_tokens]
    prompt.weight.data[...] = token_embedding_weight[np.asarray(ids)]


def prompt_tuning_parameter_count(num_virtual_tokens: int, d_model: int) -> int:
    return num_virtual_tokens * d_model
