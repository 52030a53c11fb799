"""Reward model: the policy's architecture with a scalar head, trained on preference pairs.

`RewardModel(backbone)` runs a GPT (`forward(..., return_hidden=True)`) and reads one number off the
final hidden state of the *last non-padding token* of each sequence (the token after which the
whole response has been seen):

    reward = score_head(hidden[b, last_b])        score_head: Linear(n_embd, 1)

It is trained with the Bradley-Terry loss on {"prompt", "chosen", "rejected"} pairs
(minifm.train.rl_math.bradley_terry_loss):

    loss = mean(-log sigmoid(r_chosen - r_rejected - margin)) + center_rewards_coefficient * mean((r_chosen + r_rejected)^2)

and judged by preference accuracy (r_chosen > r_rejected) on held-out pairs and by its
correlation with tinyworld's ground-truth reward. A RewardModel is callable as
`reward_model(sequences, attention_mask) -> (N,) rewards`, the interface generate(best_of=N,
reward_model=...) and the PPO trainer expect.

Simplifications: the backbone still computes its LM logits (unused); the head is initialised at zero so
training starts from reward 0 for everything.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor
from minifm.nn.module import Module
from minifm.train.rl_math import bradley_terry_loss
from minifm.train.sft import PAD_TOKEN, loop_config, prompt_ids, response_ids, shuffled_batches, special_id


def last_token_index(attention_mask: np.ndarray) -> np.ndarray:
    """(B,) index of the last position whose mask is 1 (works for left and right padding)."""
    mask = np.asarray(attention_mask)
    if mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, T), got shape {mask.shape}")
    if np.any(mask.sum(axis=1) == 0):
        raise ValueError(f"attention_mask rows {np.flatnonzero(mask.sum(axis=1) == 0).tolist()} have no tokens")
    return mask.shape[1] - 1 - np.argmax(mask[:, ::-1] != 0, axis=1)


class RewardModel(Module):
    """A GPT backbone plus `score_head` (Linear(n_embd, 1)) on the last non-padding token."""

    def __init__(self, backbone):
        super().__init__()
        from minifm.nn import Linear

        self.backbone = backbone
        self.score_head = Linear(backbone.config.n_embd, 1).to(next(backbone.parameters()).dtype)
        self.score_head.weight.data[...] = 0.0
        if self.score_head.bias is not None:
            self.score_head.bias.data[...] = 0.0

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


# ---------------------------------------------------------------------- data
def pad_right(rows, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention_mask), each (N, max_len), right-padded."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    return ids, mask


def encode_pair_texts(tokenizer, prompt: str, response: str, max_length: int) -> list[int]:
    """Prompt + response ids (the response ends in <|end|>), truncated to max_length from the left
    would cut the prompt, so the response side is truncated instead."""
    ids = prompt_ids(tokenizer, prompt) + response_ids(tokenizer, response)
    return ids[:max_length]


def encode_preferences(tokenizer, pairs, max_length: int) -> list[tuple[list[int], list[int], float]]:
    """[(chosen ids, rejected ids, margin)] from [{"prompt", "chosen", "rejected", optional "margin"}]."""
    out = []
    for index, pair in enumerate(pairs):
        missing = {"prompt", "chosen", "rejected"} - set(pair)
        if missing:
            raise KeyError(f"preference pair {index} lacks {sorted(missing)}")
        out.append((encode_pair_texts(tokenizer, pair["prompt"], pair["chosen"], max_length),
                    encode_pair_texts(tokenizer, pair["prompt"], pair["rejected"], max_length),
                    float(pair.get("margin", 0.0))))
    return out


# ---------------------------------------------------------------------- training
@dataclass
class RewardConfig:
    """Reward-model hyper-parameters (TRL's RewardConfig names)."""

    learning_rate: float = 3e-4
    max_steps: int = 150
    per_device_train_batch_size: int = 16
    max_length: int = 64
    center_rewards_coefficient: float | None = 0.01
    use_margin: bool = False
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def reward_batch_loss(reward_model, batch, pad_id: int, config: RewardConfig):
    """Bradley-Terry loss of a list of encoded pairs; chosen and rejected go through one forward."""
    rows = [chosen for chosen, _, _ in batch] + [rejected for _, rejected, _ in batch]
    ids, mask = pad_right(rows, pad_id)  # (2B, T)
    rewards = reward_model(ids, mask)  # (2B,)
    size = len(batch)
    margin = np.array([m for _, _, m in batch]) if config.use_margin else None
    loss = bradley_terry_loss(rewards[:size], rewards[size:], margin, config.center_rewards_coefficient)
    accuracy = float(np.mean(rewards.data[:size] > rewards.data[size:]))
    return loss, accuracy


def train_reward_model_encoded(reward_model, encoded, pad_id: int, config: RewardConfig | None = None, run_dir=None):
    """Train `reward_model` in place on encoded pairs (chosen ids, rejected ids, margin) with the shared loop."""
    from minifm.train.loop import train

    config = config or RewardConfig()

    def loss_fn(model, batch):
        loss, _ = reward_batch_loss(model, batch, pad_id, config)
        return loss, len(batch)

    reward_model.train()
    result = train(reward_model, loss_fn, shuffled_batches(encoded, config.per_device_train_batch_size),
                   loop_config(config), run_dir=run_dir, stage="reward", run_config=config.to_dict())
    reward_model.eval()
    return result


def train_reward_model(reward_model, tokenizer, pairs, config: RewardConfig | None = None, run_dir=None):
    """Train `reward_model` in place on [{"prompt", "chosen", "rejected"}] pairs; returns the loop's TrainResult."""
    config = config or RewardConfig()
    encoded = encode_preferences(tokenizer, pairs, config.max_length)
    return train_reward_model_encoded(reward_model, encoded, special_id(tokenizer, PAD_TOKEN), config, run_dir)


def score_texts(reward_model, tokenizer, prompts, responses, max_length: int = 64, batch_size: int = 64) -> np.ndarray:
    """Reward of each (prompt, response) text pair."""
    pad_id = special_id(tokenizer, PAD_TOKEN)
    rows = [encode_pair_texts(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    scores = []
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_right(rows[start:start + batch_size], pad_id)
        scores.append(reward_model.score(ids, mask))
    return np.concatenate(scores) if scores else np.zeros(0)


def evaluate_reward_model(reward_model, tokenizer, pairs, max_length: int = 64) -> dict:
    """Preference accuracy on held-out pairs and correlation of the learned with the ground-truth reward."""
    from scipy import stats

    from minifm.data import tinyworld

    prompts = [p["prompt"] for p in pairs]
    chosen = score_texts(reward_model, tokenizer, prompts, [p["chosen"] for p in pairs], max_length)
    rejected = score_texts(reward_model, tokenizer, prompts, [p["rejected"] for p in pairs], max_length)
    learned = np.concatenate([chosen, rejected])
    truth = np.array([tinyworld.ground_truth_reward(p["prompt"], p[key]) for key in ("chosen", "rejected")
                      for p in pairs])
    return {"preference_accuracy": float(np.mean(chosen > rejected)),
            "pearson_r": float(stats.pearsonr(learned, truth)[0]),
            "spearman_r": float(stats.spearmanr(learned, truth)[0]),
            "n_pairs": len(pairs)}
