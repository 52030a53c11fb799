"""The lifecycle's post-training half: SFT -> reward model -> PPO, and side by side DPO and best-of-N.

`run_post_training(policy, tokenizer, run_dir, preset)` takes a pre-trained GPT, its tokenizer and
the post_training settings of a preset (minifm/lifecycle/presets.py) and runs, on tinyworld's data:

    sft        instruction tuning; greedy accuracy and ground-truth reward before and after
    reward     a reward model started from the SFT policy, trained on preference pairs; held-out
               preference accuracy and correlation with tinyworld.ground_truth_reward
    ppo        PPO from the SFT policy against the reward model, KL-leashed to the SFT policy, and
               with ptx_coef > 0 (the default preset) PPO-ptx: the SFT demonstrations' NLL in the
               loss; per-iteration learned and ground-truth reward (the reward-hacking plot)
    dpo        DPO from the SFT policy on the same preference pairs
    best_of_n  the SFT policy sampling N answers and the reward model picking one

and then evaluates every policy the same way on held-out prompts (minifm/lifecycle/evaluation.py).
Outputs in run_dir: one subdirectory per trainer (checkpoints and metrics.jsonl of the shared
loop), post_training.json, post_training.md (a report section) and the plots ppo_rewards.png
(learned vs ground-truth reward per PPO iteration) and reward_vs_kl.png.

The stage functions (`sft_stage`, `reward_stage`, `ppo_stage`, `dpo_stage`) can be called one by
one; the `minifm sft|reward|ppo|dpo` commands call them on a run directory.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_bytes, atomic_write_json, has_checkpoint
from minifm.data import tinyworld
from minifm.data.conversations import (
    END_TOKEN, PAD_TOKEN, decode_response, encode_sft_examples, prompt_ids, special_id,
)
from minifm.lifecycle.evaluation import context_length, evaluate_instructions, evaluate_policies, fitting
from minifm.lifecycle.report import plot_ppo_rewards, plot_reward_vs_kl, post_training_markdown
from minifm.models.heads import RewardModel, ValueModel
from minifm.train.dpo import DPOConfig, train_dpo
from minifm.train.ppo import PPOConfig, PPOTrainer
from minifm.train.reward import RewardConfig, evaluate_reward_model, train_reward_model
from minifm.train.sft import SFTConfig, train_sft


def _stage_settings(preset: dict, policy) -> dict:
    """Per-stage settings with sequence lengths clamped to the model's context length."""
    block = context_length(policy)
    settings = copy.deepcopy(preset)
    settings["sft"]["max_length"] = min(settings["sft"].get("max_length", block - 1), block - 1)
    for stage in ("reward", "dpo"):
        settings[stage]["max_length"] = min(settings[stage].get("max_length", block), block)
    return settings


def _pairs(split: str, preset: dict, tokenizer, policy) -> list[dict]:
    """tinyworld preference pairs of `split` whose prompts leave room for an answer in the context."""
    n = preset["n_train_pairs"] if split == "train" else preset["n_eval_pairs"]
    return fitting(tinyworld.preferences(split, n=n), tokenizer, context_length(policy), preset["max_new_tokens"])


def _train_tasks(preset: dict, tokenizer, policy, new_tokens: int) -> list[dict]:
    """tinyworld's train instructions whose prompt leaves room for `new_tokens`: what SFT learns from,
    what PPO samples prompts from, and what PPO-ptx keeps the policy close to."""
    return fitting(tinyworld.instructions("train", n=preset["n_train_instructions"]), tokenizer,
                   context_length(policy), new_tokens)


# ---------------------------------------------------------------------- stages
def sft_stage(policy, tokenizer, run_dir, preset: dict, log=print, resume: bool = False) -> dict:
    """SFT in place on tinyworld's train instructions; accuracy before and after on held-out prompts."""
    preset = _stage_settings(preset, policy)
    block, new_tokens = context_length(policy), preset["max_new_tokens"]
    train_tasks = _train_tasks(preset, tokenizer, policy, new_tokens)
    eval_tasks = fitting(tinyworld.instructions("test", n=preset["n_eval"]), tokenizer, block, new_tokens)
    before = evaluate_instructions(policy, tokenizer, eval_tasks, preset["max_new_tokens"])
    log(f"sft: held-out accuracy before {before['accuracy']:.3f}")
    config = SFTConfig(**preset["sft"])
    started = time.perf_counter()
    result = train_sft(policy, tokenizer, train_tasks, config, run_dir=Path(run_dir) / "sft", resume=resume)
    after = evaluate_instructions(policy, tokenizer, eval_tasks, preset["max_new_tokens"])
    log(f"sft: loss {result.losses()[0]:.3f} -> {result.losses()[-1]:.3f}, accuracy after {after['accuracy']:.3f}")
    return {"accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
            "ground_truth_reward_before": before["mean_ground_truth_reward"],
            "ground_truth_reward_after": after["mean_ground_truth_reward"],
            "final_loss": result.losses()[-1], "steps": result.step, "seconds": time.perf_counter() - started,
            "examples_after": after["examples"], "config": config.to_dict()}


def reward_stage(sft_policy, tokenizer, run_dir, preset: dict, log=print,
                 resume: bool = False) -> tuple[RewardModel, dict]:
    """A reward model started from the SFT policy; held-out preference accuracy and correlation."""
    preset = _stage_settings(preset, sft_policy)
    config = RewardConfig(**preset["reward"])
    reward_model = RewardModel.from_policy(sft_policy)
    started = time.perf_counter()
    result = train_reward_model(reward_model, tokenizer, _pairs("train", preset, tokenizer, sft_policy),
                                config, run_dir=Path(run_dir) / "reward", resume=resume)
    metrics = evaluate_reward_model(reward_model, tokenizer, _pairs("test", preset, tokenizer, sft_policy),
                                    tinyworld.ground_truth_reward, config.max_length)
    metrics.update(final_loss=result.losses()[-1], steps=result.step, seconds=time.perf_counter() - started,
                   config=config.to_dict())
    log(f"reward: held-out preference accuracy {metrics['preference_accuracy']:.3f}, "
        f"pearson r with ground truth {metrics['pearson_r']:.3f}")
    return reward_model, metrics


def _ground_truth_fn(tokenizer, prompts: list[str]):
    def ground_truth(prompt_indices, responses):
        return np.array([tinyworld.ground_truth_reward(prompts[i], decode_response(tokenizer, r))
                         for i, r in zip(prompt_indices, responses)])

    return ground_truth


def ppo_folder(config: PPOConfig) -> str:
    """The folder of the run directory PPO checkpoints in: "ppo", or "grpo" with GRPO's advantages."""
    return "grpo" if config.advantage_estimator == "grpo" else "ppo"


def ppo_stage(sft_policy, reward_model, tokenizer, run_dir, preset: dict, log=print, resume: bool = False,
              **overrides):
    """PPO from a copy of the SFT policy, through the shared loop (checkpoints in run_dir/ppo or
    run_dir/grpo); returns (policy, history, metrics).

    With ptx_coef > 0 (PPO-ptx) the SFT stage's training demonstrations enter the loss as an NLL term."""
    config = PPOConfig(**{**preset["ppo"], **overrides})
    prompts = [task["prompt"] for task in _train_tasks(preset, tokenizer, sft_policy, config.response_length)]
    policy = _trainable(sft_policy)
    value_model = ValueModel.from_reward_model(reward_model) if config.advantage_estimator == "gae" else None
    ptx_examples = None
    if config.ptx_coef > 0:  # the SFT stage's demonstrations (the same filter as sft_stage)
        demonstrations = _train_tasks(preset, tokenizer, sft_policy, preset["max_new_tokens"])
        ptx_examples = encode_sft_examples(tokenizer, demonstrations)
    trainer = PPOTrainer(config, policy, reward_model, [prompt_ids(tokenizer, p) for p in prompts],
                         value_model=value_model, ref_policy=sft_policy,
                         stop_token_id=special_id(tokenizer, END_TOKEN), pad_token_id=special_id(tokenizer, PAD_TOKEN),
                         ground_truth_fn=_ground_truth_fn(tokenizer, prompts), ptx_examples=ptx_examples)

    def record(row):
        ptx = f" ptx {row['ptx_loss']:.3f}" if row["ptx_loss"] is not None else ""
        log(f"{row['stage']} {row['iteration']:3d}: reward {row['reward_mean']:+.3f} "
            f"ground truth {row['ground_truth_reward_mean']:+.3f} kl {row['kl']:.3f} "
            f"entropy {row['entropy']:.3f} clipfrac {row['clipfrac']:.3f}{ptx}")

    started = time.perf_counter()
    stage_dir = Path(run_dir) / ppo_folder(config)
    history = trainer.train(run_dir=stage_dir, resume=resume, log=record)
    metrics = {"seconds": time.perf_counter() - started, "iterations": len(history), "config": config.to_dict()}
    return policy, history, metrics


def dpo_stage(sft_policy, tokenizer, run_dir, preset: dict, log=print, wrap=None, resume: bool = False):
    """DPO from a copy of the SFT policy (the SFT policy is the reference); returns (policy, metrics).
    `wrap(copy) -> model` may wrap the trainable copy first (the CLI's --peft)."""
    policy = _trainable(sft_policy)
    if wrap is not None:
        policy = wrap(policy)
    preset = _stage_settings(preset, policy)
    config = DPOConfig(**preset["dpo"])
    started = time.perf_counter()
    result, stats = train_dpo(policy, tokenizer, _pairs("train", preset, tokenizer, policy), config,
                              ref_policy=sft_policy, run_dir=Path(run_dir) / "dpo", resume=resume)
    log(f"dpo: loss {result.losses()[0]:.3f} -> {result.losses()[-1]:.3f}, last-batch reward accuracy "
        f"{stats.get('rewards_accuracy', float('nan')):.2f}")
    return policy, {"final_loss": result.losses()[-1], "steps": result.step, "last_batch": stats,
                    "seconds": time.perf_counter() - started, "config": config.to_dict()}


def run_post_training(policy, tokenizer, run_dir, preset: dict, log=print, resume: bool = False) -> dict:
    """Run every post-training stage on a pre-trained `policy` (changed in place by SFT) with the
    settings `preset` (PRESETS[name]["post_training"]); returns the summary.

    Writes post_training.json, post_training.md and the two plots into run_dir. With `resume`, each
    trainer that left a checkpoint (run_dir/sft, reward, ppo or grpo, dpo) continues from it; a finished
    one runs no further step.
    """
    settings = copy.deepcopy(preset)
    ppo_config = PPOConfig(**settings["ppo"])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sft = sft_stage(policy, tokenizer, run_dir, settings, log, resume=resume and has_checkpoint(run_dir / "sft"))
    sft_policy = policy
    sft_policy.requires_grad_(False)  # the frozen reference from here on; copies are made trainable below
    reward_model, reward = reward_stage(sft_policy, tokenizer, run_dir, settings, log,
                                        resume=resume and has_checkpoint(run_dir / "reward"))
    ppo_policy, ppo_history, ppo_metrics = ppo_stage(sft_policy, reward_model, tokenizer, run_dir, settings, log,
                                                     resume=resume and has_checkpoint(run_dir / ppo_folder(ppo_config)))
    dpo_policy, dpo_metrics = dpo_stage(sft_policy, tokenizer, run_dir, settings, log,
                                        resume=resume and has_checkpoint(run_dir / "dpo"))
    evaluation_started = time.perf_counter()
    temperature = ppo_config.temperature
    table = evaluate_policies({"sft": sft_policy, "ppo": ppo_policy, "dpo": dpo_policy, "best_of_n": sft_policy},
                              sft_policy, reward_model, tokenizer, settings, temperature, log)
    sft_policy.requires_grad_(True)
    summary = {"temperature": temperature,
               "sft": sft, "reward": reward, "ppo": {**ppo_metrics, "history": ppo_history}, "dpo": dpo_metrics,
               "evaluation": table, "evaluation_seconds": time.perf_counter() - evaluation_started,
               "seconds": time.perf_counter() - started}
    plot_ppo_rewards(ppo_history, run_dir / "ppo_rewards.png")
    plot_reward_vs_kl(ppo_history, table, run_dir / "reward_vs_kl.png")
    atomic_write_json(run_dir / "post_training.json", summary)
    markdown = post_training_markdown(summary)
    atomic_write_bytes(run_dir / "post_training.md", markdown.encode("utf-8"))
    summary["markdown"] = markdown
    return summary


def _trainable(model):
    """A deep copy of a (frozen) model with every parameter trainable again."""
    clone = copy.deepcopy(model)
    clone.requires_grad_(True)
    return clone
