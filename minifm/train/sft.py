"""Supervised fine-tuning (SFT): teach a pre-trained GPT to answer instructions in the chat format.

Each {"prompt", "completion"} example becomes one chat conversation,

    <|user|> prompt <|end|> <|assistant|> completion <|end|>

(minifm.data.conversations), and the next-token cross-entropy is taken only on the assistant's
tokens (the completion and its closing <|end|>): the model learns to answer, not to imitate
questions. TRL calls this `completion_only_loss`; labels of prompt tokens are -100, the
ignore_index of F.cross_entropy. With `packing` several examples share one row of `max_length`
tokens (fewer padding tokens, more examples per step); without it each row is one example,
right-padded (minifm.data.batches.collate_sft). Training runs on the shared loop (minifm.train.loop).

Simplifications: packed examples attend across their boundaries (no per-example attention reset,
like TRL's classic packing); the learning rate is constant (no warm-up) by default.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minifm import functional as F
from minifm.data.batches import IGNORE_INDEX, collate_sft, shuffled_batches
from minifm.data.conversations import PAD_TOKEN, encode_sft_examples, special_id
from minifm.train.config import PostTrainingConfig
from minifm.train.loop import train


def sft_loss(model, inputs: np.ndarray, targets: np.ndarray, attention_mask: np.ndarray | None = None):
    """Mean cross-entropy over target tokens that are not -100 (the completion tokens)."""
    if not np.any(targets != IGNORE_INDEX):
        raise ValueError("sft_loss: the batch has no completion tokens (every target is -100)")
    logits = model(inputs, attention_mask=attention_mask)  # (B, T, V)
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


@dataclass
class SFTConfig(PostTrainingConfig):
    """SFT hyper-parameters: PostTrainingConfig with SFT's defaults, plus TRL SFTConfig's packing."""

    learning_rate: float = 1e-3
    max_steps: int = 200
    warmup_steps: int = 10
    max_length: int = 48
    packing: bool = False                   # lay several examples end to end in one row of max_length


def train_sft_encoded(model, encoded, pad_id: int, config: SFTConfig | None = None, run_dir=None,
                      resume: bool = False):
    """Fine-tune `model` in place on (input_ids, labels) pairs with the shared loop; returns its TrainResult."""
    config = config or SFTConfig()

    def loss_fn(model, batch):
        inputs, targets, mask = collate_sft(batch, config.max_length, pad_id, config.packing)
        n_tokens = int(np.sum(targets != IGNORE_INDEX))
        return sft_loss(model, inputs, targets, mask), n_tokens

    model.train()
    result = train(model, loss_fn, shuffled_batches(encoded, config.per_device_train_batch_size), config,
                   run_dir=run_dir, stage="sft", run_config=config.to_dict(), resume=resume)
    model.eval()
    return result


def train_sft(model, tokenizer, examples, config: SFTConfig | None = None, run_dir=None, resume: bool = False):
    """Fine-tune `model` in place on [{"prompt", "completion"}] / [{"messages"}] examples (shared loop)."""
    return train_sft_encoded(model, encode_sft_examples(tokenizer, examples), special_id(tokenizer, PAD_TOKEN),
                             config, run_dir, resume)


__all__ = ["SFTConfig", "sft_loss", "train_sft", "train_sft_encoded"]
