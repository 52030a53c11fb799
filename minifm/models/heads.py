"""Scalar heads on a GPT backbone: the reward model and the value model of RLHF.

Both run the backbone (`forward(..., return_hidden=True)`) and map final hidden states to one
number with a Linear(n_embd, 1) initialised at zero, so training starts from 0 everywhere:

    RewardModel   one score per sequence, read at the *last non-padding token* (after which the
                  whole response has been seen):   reward[b] = score_head(hidden[b, last_b])
                  callable as reward_model(sequences, attention_mask) -> (N,), the interface that
                  generate(best_of=N, reward_model=...) and PPO expect; trained in minifm.train.reward
    ValueModel    one value per position (B, T): PPO's critic, started from the reward model's
                  backbone and head as TRL does (minifm.train.ppo)

Simplification: the backbone still computes its LM logits, which the heads do not use.
"""
from __future__ import annotations

import copy

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor
from minifm.nn.layers import Linear
from minifm.nn.module import Module


def last_token_index(attention_mask: np.ndarray) -> np.ndarray:
    """(B,) index of the last position whose mask is 1 (works for left and right padding)."""
    mask = np.asarray(attention_mask)
    if mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, T), got shape {mask.shape}")
    if np.any(mask.sum(axis=1) == 0):
        raise ValueError(f"attention_mask rows {np.flatnonzero(mask.sum(axis=1) == 0).tolist()} have no tokens")
    return mask.shape[1] - 1 - np.argmax(mask[:, ::-1] != 0, axis=1)


def zero_scalar_head(backbone) -> Linear:
    """Linear(n_embd, 1) in the backbone's dtype with weight and bias 0."""
    head = Linear(backbone.config.n_embd, 1).to(next(backbone.parameters()).dtype)
    head.weight.data[...] = 0.0
    if head.bias is not None:
        head.bias.data[...] = 0.0
    return head


class RewardModel(Module):
    """A GPT backbone plus `score_head` (Linear(n_embd, 1)) on the last non-padding token."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.score_head = zero_scalar_head(backbone)

    @classmethod
    def from_policy(cls, policy) -> "RewardModel":
        """A reward model whose backbone starts as a copy of `policy` (InstructGPT starts from the SFT model)."""
        backbone = copy.deepcopy(policy)
        backbone.requires_grad_(True)
        return cls(backbone)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids, attention_mask=None) -> Tensor:
        ids = np.asarray(input_ids.data if isinstance(input_ids, Tensor) else input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, T), got shape {ids.shape}")
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(
            attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
        _, hidden = self.backbone(ids, attention_mask=mask, return_hidden=True)  # (B, T, d)
        last = last_token_index(mask)  # (B,)
        final = hidden[np.arange(ids.shape[0]), last]  # (B, d)
        return self.score_head(final).reshape(ids.shape[0])  # (B,)

    def score(self, input_ids, attention_mask=None) -> np.ndarray:
        """Rewards as a float64 array, without building a graph."""
        with no_grad():
            return np.asarray(self.forward(input_ids, attention_mask).data, dtype=np.float64)


# ValueModel mirrors RewardModel on purpose (backbone + zero-initialised scalar head); they differ in where
# the head reads: every position here, the last real token there.
class ValueModel(Module):
    """A GPT backbone plus `value_head` (Linear(n_embd, 1), zero-initialised) at every position: (B, T) values."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.value_head = zero_scalar_head(backbone)

    @classmethod
    def from_reward_model(cls, reward_model) -> "ValueModel":
        """Start from the reward model's backbone and head (TRL initialises the critic this way)."""
        model = cls(copy.deepcopy(reward_model.backbone))
        model.value_head.load_state_dict(reward_model.score_head.state_dict())
        return model

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids, attention_mask=None) -> Tensor:
        _, hidden = self.backbone(input_ids, attention_mask=attention_mask, return_hidden=True)  # (B, T, d)
        batch, steps = hidden.shape[0], hidden.shape[1]
        return self.value_head(hidden).reshape(batch, steps)  # (B, T)


__all__ = ["RewardModel", "ValueModel", "last_token_index"]
