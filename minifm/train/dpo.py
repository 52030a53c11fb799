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

Your own data (`train_dpo_on_rows`, what `minifm dpo --data FILE.jsonl` runs): TRL's preference
rows (strings or messages, explicit or implicit prompt) are encoded with the model's own chat template
(minifm.data.conversations.encode_preference_rows, which also cuts long pairs: the prompt from the
left, TRL's `max_prompt_length` first, then the replies from the right). The reference scores the
held-out pairs once too, and they are scored before training, every `eval_steps` and at the end:

    eval_loss, eval_rewards_chosen, eval_rewards_rejected    means over the held-out pairs
    eval_rewards_margin                                      mean of chosen - rejected implicit reward
    eval_rewards_accuracy                                    share of pairs with chosen reward > rejected

(TRL's rewards/chosen, rewards/margins, rewards/accuracies, ...). OWN_DATA_DEFAULTS are TRL
DPOConfig's defaults (learning rate 1e-6 decaying linearly to 0, batch 8, max_length 1024,
max_prompt_length 512).

Simplification: on tinyworld, sequences longer than max_length are cut on the response side.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor
from minifm.data.batches import pad_right, shuffled_batches
from minifm.data.conversations import (
    PAD_TOKEN, encode_preference_pairs, encode_preference_rows, padding_id, special_id,
)
from minifm.train import rl_math
from minifm.train.config import PostTrainingConfig
from minifm.train.loop import train
from minifm.train.sft import epochs_line, fit_max_length, saved_extra_state

# What `minifm dpo --data` starts from (TRL DPOConfig's defaults), before --config and the flags.
OWN_DATA_DEFAULTS = {"learning_rate": 1e-6, "lr_scheduler_type": "linear", "warmup_steps": 0, "min_lr": 0.0,
                     "per_device_train_batch_size": 8, "max_length": 1024, "max_prompt_length": 512,
                     "disable_tqdm": False}


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
    max_prompt_length: int | None = None    # --data: cut prompts to their last N tokens first (TRL's name)

    def validate(self) -> None:
        super().validate()
        self.check_choice("loss_type", rl_math.DPO_LOSS_TYPES)
        self.check_range("beta", low=0, low_open=True)
        self.check_range("label_smoothing", 0, 0.5)
        self.check_range("rpo_alpha", low=0)
        self.check_range("max_prompt_length", low=1)


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
                      run_dir=None, resume: bool = False, eval_pairs: list[dict] | None = None,
                      extra_state: dict | None = None, reference_batch_size: int = 64):
    """DPO on encoded pairs (encode_preference_pairs) with the shared loop; returns (TrainResult, last stats).
    With `eval_pairs` the reference scores them too and evaluate_dpo runs every eval_steps and at the end;
    the reference scores `reference_batch_size` pairs per forward."""
    config = config or DPOConfig()
    if not encoded:
        raise ValueError("DPO needs at least one preference pair")
    reference = ref_policy if ref_policy is not None else copy.deepcopy(policy)
    reference.requires_grad_(False)
    reference.eval()
    if config.precompute_ref_log_probs:
        precompute_reference(reference, encoded, pad_id, reference_batch_size)
    eval_fn = None
    if eval_pairs:
        unscored = [pair for pair in eval_pairs if "ref_chosen_logps" not in pair]  # not yet scored by the caller
        if unscored:
            precompute_reference(reference, unscored, pad_id, reference_batch_size)

        def eval_fn(model):
            return evaluate_dpo(model, eval_pairs, config, pad_id, reference_batch_size)

    loss_fn = dpo_loss_fn(config, pad_id, reference)
    policy.eval()  # no dropout: policy and reference log-probs must be comparable
    result = train(policy, loss_fn, shuffled_batches(encoded, config.per_device_train_batch_size),
                   config, run_dir=run_dir, eval_fn=eval_fn, stage="dpo", run_config=config.to_dict(), resume=resume,
                   extra_state=extra_state)
    policy.eval()
    return result, dict(loss_fn.last_stats)


def evaluate_dpo(model, pairs: list[dict], config: DPOConfig, pad_id: int, batch_size: int) -> dict:
    """Held-out DPO metrics of pairs whose reference log-probs are stored (precompute_reference)."""
    losses, chosen_rewards, rejected_rewards = [], [], []
    with no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start:start + batch_size]
            chosen, rejected = pair_logps(model, batch, pad_id)  # (B,), (B,)
            ref_chosen = np.array([p["ref_chosen_logps"] for p in batch])
            ref_rejected = np.array([p["ref_rejected_logps"] for p in batch])
            batch_losses, batch_chosen, batch_rejected = rl_math.dpo_loss(
                chosen, rejected, ref_chosen, ref_rejected, config.beta, config.loss_type, config.label_smoothing)
            losses.append(np.asarray(batch_losses.data, dtype=np.float64))
            chosen_rewards.append(np.asarray(batch_chosen, dtype=np.float64))
            rejected_rewards.append(np.asarray(batch_rejected, dtype=np.float64))
    chosen_all, rejected_all = np.concatenate(chosen_rewards), np.concatenate(rejected_rewards)  # (N,), (N,)
    return {"eval_loss": float(np.concatenate(losses).mean()), "eval_rewards_chosen": float(chosen_all.mean()),
            "eval_rewards_rejected": float(rejected_all.mean()),
            "eval_rewards_margin": float((chosen_all - rejected_all).mean()),
            "eval_rewards_accuracy": float(np.mean(chosen_all > rejected_all))}


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


# ---------------------------------------------------------------------- your own data
def pairs_fingerprint(*datasets) -> str:
    """sha256 over the ids of the encoded pairs: a resumed run must see the same pairs."""
    digest = hashlib.sha256()
    for dataset in datasets:
        digest.update(json.dumps([[p["chosen"], p["rejected"], p["prompt_length"]] for p in dataset]).encode())
    return digest.hexdigest()


def train_dpo_on_rows(policy, tokenizer, train_rows, eval_rows=(), config: DPOConfig | None = None, ref_policy=None,
                      run_dir=None, resume: bool = False, source: str = "data", eval_source: str | None = None,
                      log=print) -> dict:
    """DPO in place on TRL preference rows (minifm.data.sources.JsonlRecord) with a held-out set; returns the
    summary (rows, cuts, losses, held-out metrics before and after, seconds per step). `ref_policy` defaults
    to a frozen copy of the policy as it is now."""
    config = fit_max_length(config or DPOConfig(**OWN_DATA_DEFAULTS), policy, log)
    if ref_policy is None:
        ref_policy = copy.deepcopy(policy)
    pairs, report = encode_preference_rows(tokenizer, train_rows, config.max_length, config.max_prompt_length, source)
    held_out, held_report = [], None
    if eval_rows:
        held_out, held_report = encode_preference_rows(tokenizer, eval_rows, config.max_length,
                                                       config.max_prompt_length, eval_source or source)
    pad_id = padding_id(tokenizer)
    fingerprint = pairs_fingerprint(pairs, held_out)
    log(epochs_line("dpo", len(pairs), len(held_out), config, noun="pair"))
    batch_size = config.per_device_train_batch_size
    eval_before = None
    if resume:
        eval_before = saved_extra_state(run_dir, fingerprint).get("eval_before")
    elif held_out:
        ref_policy.eval()
        precompute_reference(ref_policy, held_out, pad_id, batch_size)
        policy.eval()
        eval_before = evaluate_dpo(policy, held_out, config, pad_id, batch_size)
        log(f"dpo: held-out loss before training {eval_before['eval_loss']:.4f}, reward accuracy "
            f"{eval_before['eval_rewards_accuracy']:.3f}")
    started = time.perf_counter()
    result, stats = train_dpo_encoded(policy, pairs, pad_id, config, ref_policy, run_dir, resume, eval_pairs=held_out,
                                      extra_state={"data_fingerprint": fingerprint, "eval_before": eval_before},
                                      reference_batch_size=batch_size)
    seconds = time.perf_counter() - started
    if held_out:
        final = result.final_eval
        log(f"dpo: held-out loss {final['eval_loss']:.4f}, reward accuracy {final['eval_rewards_accuracy']:.3f}, "
            f"margin {final['eval_rewards_margin']:+.4f}")
    return {"train_pairs": len(pairs), "eval_pairs": len(held_out), "data": report.to_dict(),
            "eval_data": held_report.to_dict() if held_report else None, "steps": result.step,
            "final_loss": result.losses()[-1] if result.losses() else None, "last_batch": stats,
            "eval_before": eval_before, "eval": result.final_eval or None, "seconds": seconds,
            "seconds_per_step": result.elapsed_s / max(result.step, 1), "config": config.to_dict()}

