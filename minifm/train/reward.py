"""Reward model training: Bradley-Terry on preference pairs (the model itself is minifm.models.heads.RewardModel).

A RewardModel (a GPT backbone with a scalar head on the last non-padding token) is trained on
{"prompt", "chosen", "rejected"} pairs (minifm.data.conversations.encode_preference_pairs) with the
Bradley-Terry loss (minifm.train.rl_math.bradley_terry_loss):

    loss = mean(-log sigmoid(r_chosen - r_rejected - margin)) + center_rewards_coefficient * mean((r_chosen + r_rejected)^2)

and judged by preference accuracy (r_chosen > r_rejected) on held-out pairs and by its
correlation with a ground-truth reward (`evaluate_reward_model`, given the grader).

Simplification: chosen and rejected rows of a batch go through one forward pass, padded to one length.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from minifm.data.batches import pad_right, shuffled_batches
from minifm.data.conversations import PAD_TOKEN, encode_preference_pairs, prompt_and_response_ids, special_id
from minifm.train.config import PostTrainingConfig
from minifm.train.loop import train
from minifm.train.rl_math import bradley_terry_loss


@dataclass
class RewardConfig(PostTrainingConfig):
    """Reward-model hyper-parameters: PostTrainingConfig with this stage's defaults, plus TRL RewardConfig's fields."""

    learning_rate: float = 3e-4
    max_steps: int = 150
    warmup_steps: int = 10
    center_rewards_coefficient: float | None = 0.01 # weight of mean((r_chosen + r_rejected)^2), keeping rewards centred
    use_margin: bool = False                # subtract each pair's margin inside the Bradley-Terry loss

    def validate(self) -> None:
        super().validate()
        self.check_range("center_rewards_coefficient", low=0)


def reward_batch_loss(reward_model, batch, pad_id: int, config: RewardConfig):
    """Bradley-Terry loss of a list of encoded pairs; chosen and rejected go through one forward."""
    rows = [pair["chosen"] for pair in batch] + [pair["rejected"] for pair in batch]
    ids, mask = pad_right(rows, pad_id)  # (2B, T)
    rewards = reward_model(ids, mask)  # (2B,)
    size = len(batch)
    margin = np.array([pair["margin"] for pair in batch]) if config.use_margin else None
    loss = bradley_terry_loss(rewards[:size], rewards[size:], margin, config.center_rewards_coefficient)
    accuracy = float(np.mean(rewards.data[:size] > rewards.data[size:]))
    return loss, accuracy


def train_reward_model_encoded(reward_model, encoded, pad_id: int, config: RewardConfig | None = None, run_dir=None,
                               resume: bool = False):
    """Train `reward_model` in place on encoded pairs (encode_preference_pairs) with the shared loop."""
    config = config or RewardConfig()

    def loss_fn(model, batch):
        loss, _ = reward_batch_loss(model, batch, pad_id, config)
        return loss, len(batch)

    reward_model.train()
    result = train(reward_model, loss_fn, shuffled_batches(encoded, config.per_device_train_batch_size),
                   config, run_dir=run_dir, stage="reward", run_config=config.to_dict(), resume=resume)
    reward_model.eval()
    return result


def train_reward_model(reward_model, tokenizer, pairs, config: RewardConfig | None = None, run_dir=None,
                       resume: bool = False):
    """Train `reward_model` in place on [{"prompt", "chosen", "rejected"}] pairs; returns the loop's TrainResult."""
    config = config or RewardConfig()
    encoded = encode_preference_pairs(tokenizer, pairs, config.max_length)
    return train_reward_model_encoded(reward_model, encoded, special_id(tokenizer, PAD_TOKEN), config, run_dir,
                                      resume)


def score_texts(reward_model, tokenizer, prompts, responses, max_length: int = 64, batch_size: int = 64) -> np.ndarray:
    """Reward of each (prompt, response) text pair."""
    pad_id = special_id(tokenizer, PAD_TOKEN)
    rows = [prompt_and_response_ids(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    scores = []
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_right(rows[start:start + batch_size], pad_id)
        scores.append(reward_model.score(ids, mask))
    return np.concatenate(scores) if scores else np.zeros(0)


def evaluate_reward_model(reward_model, tokenizer, pairs, ground_truth_reward, max_length: int = 64) -> dict:
    """Preference accuracy on held-out pairs and the correlation of the learned reward with
    `ground_truth_reward(prompt, response) -> float` over every chosen and rejected response."""
    prompts = [p["prompt"] for p in pairs]
    chosen = score_texts(reward_model, tokenizer, prompts, [p["chosen"] for p in pairs], max_length)
    rejected = score_texts(reward_model, tokenizer, prompts, [p["rejected"] for p in pairs], max_length)
    learned = np.concatenate([chosen, rejected])
    truth = np.array([ground_truth_reward(p["prompt"], p[key]) for key in ("chosen", "rejected") for p in pairs])
    return {"preference_accuracy": float(np.mean(chosen > rejected)),
            "pearson_r": float(stats.pearsonr(learned, truth)[0]),
            "spearman_r": float(stats.spearmanr(learned, truth)[0]),
            "n_pairs": len(pairs)}


__all__ = ["RewardConfig", "evaluate_reward_model", "reward_batch_loss", "score_texts", "train_reward_model",
           "train_reward_model_encoded"]
