"""The training knobs every stage shares, in one place, with Hugging Face's names.

`TrainConfig` holds what the shared loop (minifm.train.loop) needs: learning rate and schedule,
steps, batch size, accumulation, AdamW's settings, clipping, evaluation/checkpoint cadence and the
seed. Names and meanings follow transformers' `TrainingArguments` (which TRL's SFTConfig,
RewardConfig, DPOConfig and PPOConfig extend): `learning_rate`, `max_steps`,
`per_device_train_batch_size`, `gradient_accumulation_steps`, `lr_scheduler_type`, `warmup_steps`,
`weight_decay`, `adam_beta1`, `adam_beta2`, `adam_epsilon`, `max_grad_norm`, `eval_steps`,
`save_steps`, `seed`, `disable_tqdm`. Two knobs are minifm's own: `min_lr` (the floor the cosine
and linear schedules decay to) and `accumulate` (how micro-batches are weighted).

Pre-training uses TrainConfig itself. The post-training stages' configs inherit
`PostTrainingConfig` (TrainConfig with their common defaults: a constant learning rate, no weight
decay, no periodic evaluation, no progress bar, and `max_length`) and add their own fields
(SFTConfig: packing; RewardConfig: center_rewards_coefficient; DPOConfig: beta, loss_type, ...); a
stage that wants another default redeclares the field with it.

Deviation from transformers: "constant" means a constant rate with no warm-up (transformers'
"constant"); there is no "constant_with_warmup".
"""
from __future__ import annotations

from dataclasses import dataclass

from minifm.config import ConfigBase

SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainConfig(ConfigBase):
    """Hyper-parameters of the shared training loop (transformers' TrainingArguments names)."""

    learning_rate: float = 1e-3            # peak learning rate
    max_steps: int = 200                   # optimizer updates
    per_device_train_batch_size: int = 16  # sequences per micro-batch (the stage's batch builder reads it)
    gradient_accumulation_steps: int = 1   # micro-batches per update
    lr_scheduler_type: str = "cosine"      # "cosine" | "linear" (after warm-up) | "constant" (no warm-up)
    warmup_steps: int = 20                 # linear warm-up from 0 to learning_rate
    min_lr: float = 1e-4                   # floor of the cosine / linear decay
    weight_decay: float = 0.1              # AdamW decoupled decay, applied to matrices only
    adam_beta1: float = 0.9                 # AdamW's first-moment decay
    adam_beta2: float = 0.95                # AdamW's second-moment decay
    adam_epsilon: float = 1e-8              # AdamW's denominator guard
    max_grad_norm: float = 1.0             # max global gradient norm (0 = no clipping)
    accumulate: str = "tokens"             # weight of a micro-batch in the update: "tokens" (its n_tokens) | "mean"
    eval_steps: int = 100                  # evaluate every N steps (0 = only at the end)
    save_steps: int = 0                    # checkpoint every N steps (0 = only at the end)
    seed: int = 0                          # seeds the data order
    disable_tqdm: bool = False             # hide the progress bar

    # fields that may differ between a run and its resumption without changing its trajectory
    RESUME_FREE = ("max_steps", "eval_steps", "save_steps", "disable_tqdm")

    def validate(self) -> None:
        for name in ("max_steps", "warmup_steps", "eval_steps", "save_steps", "seed"):
            self.check_range(name, low=0)
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
            self.check_range(name, low=1)
        for name in ("learning_rate", "min_lr", "weight_decay", "max_grad_norm"):
            self.check_range(name, low=0)
        self.check_range("adam_beta1", 0, 1, high_open=True)
        self.check_range("adam_beta2", 0, 1, high_open=True)
        self.check_range("adam_epsilon", 0, low_open=True)
        self.check_choice("lr_scheduler_type", SCHEDULES)
        self.check_choice("accumulate", ("tokens", "mean"))


@dataclass
class PostTrainingConfig(TrainConfig):
    """TrainConfig with the defaults the post-training stages share, plus TRL's max_length."""

    lr_scheduler_type: str = "constant"
    weight_decay: float = 0.0
    eval_steps: int = 0
    disable_tqdm: bool = True
    max_length: int = 64                   # tokens per sequence (longer ones are cut on the response side)

    def validate(self) -> None:
        super().validate()
        self.check_range("max_length", low=1)


__all__ = ["SCHEDULES", "PostTrainingConfig", "TrainConfig"]
