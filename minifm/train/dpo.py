"""Direct preference optimisation (DPO, Rafailov et al. 2023) with TRL's DPOTrainer names.

DPO skips the reward model and RL loop: for a pair (prompt, chosen, rejected) it raises the
policy's log-likelihood of the chosen response relative to the rejected one, measured against a
frozen reference policy (the SFT model):

    logits = (log pi(chosen) - log pi(rejected)) - (log ref(chosen) - log ref(rejected))
    loss   = -log sigmoid(beta * logits)            loss_type="sigmoid" (with label_smoothing: conservative DPO)
             relu(1 - beta * logits)                loss_type="hinge" (SLiC)
             (logits - 1 / (2 beta))^2              loss_type="ipo"

where log pi(response) is the sum of the response tokens' log-probabilities given the prompt
(rl_math.dpo_loss holds the formulas). The reference log-probabilities are computed once before
training (`precompute_ref_log_probs=True`, the reference is then not needed again) or on the fly
for every batch. Logged: loss, the implicit rewards beta * (log pi - log ref) of chosen and
rejected, their margin and the reward accuracy (share of pairs whose chosen reward is larger).

With `rpo_alpha` (TRL's RPO, Pang et al. 2024) the loss adds rpo_alpha times the per-token negative
log-likelihood of the chosen responses, which keeps DPO from lowering the likelihood of good answers
together with the bad ones.

Simplification: sequences longer than max_length are cut on the response side.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor
from minifm.data.batches import pad_right, shuffled_batches
from minifm.data.conversations import PAD_TOKEN, encode_preference_pairs, special_id
from minifm.train import rl_math
from minifm.train.config import PostTrainingConfig
from minifm.train.loop import train


@dataclass
class DPOConfig(PostTrainingConfig):
    """DPO hyper-parameters: PostTrainingConfig with this stage's defaults, plus TRL DPOConfig's fields
    (TRL's names and defaults for beta / loss_type / label_smoothing)."""

    learning_rate: float = 1e-4
    max_steps: int = 100
    warmup_steps: int = 5
    beta: float = 0.1                       # strength of the implicit KL leash to the reference
    loss_type: str = "sigmoid"              # "sigmoid" | "hinge" | "ipo"
    label_smoothing: float = 0.0            # conservative DPO: assumed share of flipped preference labels
    rpo_alpha: float | None = None   # TRL's RPO: + rpo_alpha * NLL of the chosen responses (per token)
    precompute_ref_log_probs: bool = True   # score the reference once before training (else every batch)

    def validate(self) -> None:
        super().validate()
        self.check_choice("loss_type", rl_math.DPO_LOSS_TYPES)
        self.check_range("beta", low=0, low_open=True)
        self.check_range("label_smoothing", 0, 0.5)
        self.check_range("rpo_alpha", low=0)


def check_responses_kept(encoded: list[dict], max_length: int) -> None:
    """Every pair must keep at least one response token after its prompt within max_length."""
    for index, pair in enumerate(encoded):
        if pair["prompt_length"] >= max_length:
            raise ValueError(f"pair {index}: the prompt has {pair['prompt_length']} tokens, max_length is {max_length}")


def sequence_logps(model, rows: list[list[int]], prompt_lengths: list[int], pad_id: int) -> Tensor:
    """(N,) sum of log pi(token) over each row's response tokens (those after its prompt)."""
    ids, mask = pad_right(rows, pad_id)  # (N, T)
    logits = model(ids[:, :-1], attention_mask=mask[:, :-1])  # (N, T-1, V)
    token_logps = rl_math.token_logprobs(logits, ids[:, 1:])  # (N, T-1)
    positions = np.arange(1, ids.shape[1])[None, :]  # target position of each column
    response = (positions >= np.asarray(prompt_lengths)[:, None]) & (mask[:, 1:] == 1)  # (N, T-1)
    return rl_math.masked_sum(token_logps, response, axis=1)  # (N,)


def pair_logps(model, batch: list[dict], pad_id: int) -> tuple[Tensor, Tensor]:
    """(chosen logps (B,), rejected logps (B,)) with one forward over the 2B rows."""
    rows = [p["chosen"] for p in batch] + [p["rejected"] for p in batch]
    lengths = [p["prompt_length"] for p in batch] * 2
    logps = sequence_logps(model, rows, lengths, pad_id)  # (2B,)
    return logps[:len(batch)], logps[len(batch):]


def precompute_reference(ref_model, encoded: list[dict], pad_id: int, batch_size: int = 64) -> None:
    """Store "ref_chosen_logps" / "ref_rejected_logps" in every encoded pair (no graph)."""
    with no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            chosen, rejected = pair_logps(ref_model, batch, pad_id)
            for pair, c, r in zip(batch, chosen.data, rejected.data):
                pair["ref_chosen_logps"], pair["ref_rejected_logps"] = float(c), float(r)


def chosen_nll_per_token(chosen_logps: Tensor, batch: list[dict]) -> Tensor:
    """RPO's extra term: -(sum of the chosen responses' token log-probs) / (number of those tokens)."""
    n_tokens = sum(len(p["chosen"]) - p["prompt_length"] for p in batch)
    if n_tokens < 1:
        raise ValueError("rpo_alpha: the batch's chosen responses have no tokens (all cut by max_length?)")
    return chosen_logps.sum() * (-1.0 / n_tokens)


def dpo_loss_fn(config: DPOConfig, pad_id: int, reference=None):
    """loss_fn(model, batch) for the shared loop; records the implicit-reward statistics in `.last_stats`."""

    def loss_fn(model, batch):
        if config.precompute_ref_log_probs:
            ref_chosen = np.array([p["ref_chosen_logps"] for p in batch])
            ref_rejected = np.array([p["ref_rejected_logps"] for p in batch])
        else:
            with no_grad():
                ref_c, ref_r = pair_logps(reference, batch, pad_id)
            ref_chosen, ref_rejected = ref_c.data, ref_r.data
        chosen, rejected = pair_logps(model, batch, pad_id)
        losses, chosen_rewards, rejected_rewards = rl_math.dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, config.beta, config.loss_type, config.label_smoothing)
        loss = losses.mean()
        loss_fn.last_stats = {"rewards_chosen": float(chosen_rewards.mean()),
                              "rewards_rejected": float(rejected_rewards.mean()),
                              "rewards_margin": float((chosen_rewards - rejected_rewards).mean()),
                              "rewards_accuracy": float(np.mean(chosen_rewards > rejected_rewards))}
        if config.rpo_alpha:
            nll = chosen_nll_per_token(chosen, batch)
            loss = loss + config.rpo_alpha * nll
            loss_fn.last_stats["nll_chosen"] = float(nll.item())
        return loss, len(batch)

    loss_fn.last_stats = {}
    return loss_fn


def train_dpo_encoded(policy, encoded: list[dict], pad_id: int, config: DPOConfig | None = None, ref_policy=None,
                      run_dir=None, resume: bool = False):
    """DPO on encoded pairs (encode_preference_pairs) with the shared loop; returns (TrainResult, last stats)."""
    config = config or DPOConfig()
    if not encoded:
        raise ValueError("DPO needs at least one preference pair")
    reference = ref_policy if ref_policy is not None else copy.deepcopy(policy)
    reference.requires_grad_(False)
    reference.eval()
    if config.precompute_ref_log_probs:
        precompute_reference(reference, encoded, pad_id)
    loss_fn = dpo_loss_fn(config, pad_id, reference)
    policy.eval()  # no dropout: policy and reference log-probs must be comparable
    result = train(policy, loss_fn, shuffled_batches(encoded, config.per_device_train_batch_size),
                   config, run_dir=run_dir, stage="dpo", run_config=config.to_dict(), resume=resume)
    policy.eval()
    return result, dict(loss_fn.last_stats)


def train_dpo(policy, tokenizer, pairs, config: DPOConfig | None = None, ref_policy=None, run_dir=None,
              resume: bool = False):
    """Train `policy` in place with DPO on [{"prompt", "chosen", "rejected"}].

    `ref_policy` defaults to a frozen copy of the policy as it is when training starts.
    Returns (TrainResult of the shared loop, implicit-reward stats of the last batch).
    """
    config = config or DPOConfig()
    encoded = encode_preference_pairs(tokenizer, pairs, config.max_length)
    check_responses_kept(encoded, config.max_length)
    return train_dpo_encoded(policy, encoded, special_id(tokenizer, PAD_TOKEN), config, ref_policy, run_dir, resume)
