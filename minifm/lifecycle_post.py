"""The post-training half of the lifecycle: SFT -> reward model -> PPO, and side by side DPO and best-of-N.

`run_post_training(policy, tokenizer, run_dir, preset)` takes a pre-trained GPT and its tokenizer
and runs, on tinyworld's data:

    sft        instruction tuning; greedy accuracy and ground-truth reward before and after
    reward     a reward model started from the SFT policy, trained on preference pairs; held-out
               preference accuracy and correlation with tinyworld.ground_truth_reward
    ppo        PPO from the SFT policy against the reward model, KL-leashed to the SFT policy, and
               with ptx_coef > 0 (the default preset) PPO-ptx: the SFT demonstrations' NLL in the
               loss; per-iteration learned and ground-truth reward (the reward-hacking plot)
    dpo        DPO from the SFT policy on the same preference pairs
    best_of_n  the SFT policy sampling N answers and the reward model picking one

and then evaluates every policy the same way on held-out prompts: mean ground-truth reward of
sampled answers (at the PPO temperature), greedy accuracy and greedy ground-truth reward, and the
KL to the SFT policy (k1 estimate, sampled at that temperature; for best-of-N the analytic bound
log N - (N-1)/N). Outputs in run_dir: one subdirectory per stage (checkpoints and metrics.jsonl of
the shared loop), post_training.json, post_training.md (a report section) and the plots
ppo_rewards.png (learned vs ground-truth reward per PPO iteration) and reward_vs_kl.png.

The stage functions (`sft_stage`, `reward_stage`, `ppo_stage`, `dpo_stage`, `best_of_n_stage`,
`evaluate_policies`) can be called one by one; minifm/lifecycle.py calls `run_post_training`.
Presets: "tiny" (seconds, a smoke test) and "default" (a few minutes on 2 cores).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.train import rl_math
from minifm.train.dpo import DPOConfig, train_dpo
from minifm.train.ppo import PPOConfig, PPOTrainer, ValueModel, response_logprobs
from minifm.train.reward import RewardConfig, RewardModel, evaluate_reward_model, train_reward_model
from minifm.train.sft import (
    END_TOKEN, PAD_TOKEN, SFTConfig, decode_response, encode_sft_examples, evaluate_instructions, prompt_ids,
    special_id, train_sft,
)

PRESETS = {
    "tiny": {
        "n_train_instructions": 256, "n_eval": 24, "n_train_pairs": 256, "n_eval_pairs": 32,
        "sft": {"max_steps": 30, "per_device_train_batch_size": 16, "learning_rate": 2e-3},
        "reward": {"max_steps": 20, "per_device_train_batch_size": 16, "learning_rate": 1e-3},
        "ppo": {"num_iterations": 3, "batch_size": 16, "response_length": 16, "num_ppo_epochs": 2,
                "learning_rate": 3e-5, "kl_coef": 0.3, "ptx_coef": 0.1},
        "dpo": {"max_steps": 10, "per_device_train_batch_size": 16, "learning_rate": 1e-4},
        "best_of_n": 4, "max_new_tokens": 16, "eval_samples": 1,
    },
    "default": {  # measured figures in docs/post-training.md
        "n_train_instructions": None, "n_eval": None, "n_train_pairs": 2500, "n_eval_pairs": 200,
        "sft": {"max_steps": 150, "per_device_train_batch_size": 32, "learning_rate": 1e-3},
        "reward": {"max_steps": 160, "per_device_train_batch_size": 16, "learning_rate": 3e-4, "max_length": 64},
        "ppo": {"num_iterations": 30, "batch_size": 32, "response_length": 24, "num_ppo_epochs": 2,
                "num_mini_batches": 2, "learning_rate": 6e-5, "kl_coef": 0.3, "temperature": 0.7,
                "ptx_coef": 1.0},  # PPO-ptx: without it PPO learns style but loses accuracy
        "dpo": {"max_steps": 60, "per_device_train_batch_size": 16, "learning_rate": 3e-5, "beta": 0.25,
                "rpo_alpha": 1.0, "max_length": 64},
        "best_of_n": 8, "max_new_tokens": 24, "eval_samples": 4,
    },
}


def get_preset(preset) -> dict:
    if isinstance(preset, dict):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return copy.deepcopy(PRESETS[preset])


def fitting(items: list[dict], tokenizer, block_size: int, new_tokens: int) -> list[dict]:
    """The items whose chat prompt plus `new_tokens` fits in the model's context (block_size)."""
    return [item for item in items if len(prompt_ids(tokenizer, item["prompt"])) + new_tokens <= block_size]


def context_length(policy) -> int:
    """Positions left for real tokens: block_size minus the virtual tokens of a prompt- or
    prefix-tuned model (a PeftModel reports num_virtual_tokens; a plain model has none)."""
    return policy.config.block_size - int(getattr(policy, "num_virtual_tokens", 0) or 0)


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
    from minifm.data import tinyworld

    n = preset["n_train_pairs"] if split == "train" else preset["n_eval_pairs"]
    return fitting(tinyworld.preferences(split, n=n), tokenizer, context_length(policy), preset["max_new_tokens"])


def _log(log, message: str) -> None:
    if log:
        log(message)


def _train_tasks(preset: dict, tokenizer, policy, new_tokens: int) -> list[dict]:
    """tinyworld's train instructions whose prompt leaves room for `new_tokens`: what SFT learns from,
    what PPO samples prompts from, and what PPO-ptx keeps the policy close to."""
    from minifm.data import tinyworld

    return fitting(tinyworld.instructions("train", n=preset["n_train_instructions"]), tokenizer,
                   context_length(policy), new_tokens)


# ---------------------------------------------------------------------- stages
def sft_stage(policy, tokenizer, run_dir, preset: dict, log=print) -> dict:
    """SFT in place on tinyworld's train instructions; accuracy before and after on held-out prompts."""
    from minifm.data import tinyworld

    preset = _stage_settings(preset, policy)
    block, new_tokens = context_length(policy), preset["max_new_tokens"]
    train_tasks = _train_tasks(preset, tokenizer, policy, new_tokens)
    eval_tasks = fitting(tinyworld.instructions("test", n=preset["n_eval"]), tokenizer, block, new_tokens)
    before = evaluate_instructions(policy, tokenizer, eval_tasks, preset["max_new_tokens"])
    _log(log, f"sft: held-out accuracy before {before['accuracy']:.3f}")
    config = SFTConfig(**preset["sft"])
    started = time.perf_counter()
    result = train_sft(policy, tokenizer, train_tasks, config, run_dir=Path(run_dir) / "sft")
    after = evaluate_instructions(policy, tokenizer, eval_tasks, preset["max_new_tokens"])
    _log(log, f"sft: loss {result.losses()[0]:.3f} -> {result.losses()[-1]:.3f}, accuracy after {after['accuracy']:.3f}")
    return {"accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
            "ground_truth_reward_before": before["mean_ground_truth_reward"],
            "ground_truth_reward_after": after["mean_ground_truth_reward"],
            "final_loss": result.losses()[-1], "steps": result.step, "seconds": time.perf_counter() - started,
            "examples_after": after["examples"], "config": config.to_dict()}


def reward_stage(sft_policy, tokenizer, run_dir, preset: dict, log=print) -> tuple[RewardModel, dict]:
    """A reward model started from the SFT policy; held-out preference accuracy and correlation."""
    preset = _stage_settings(preset, sft_policy)
    config = RewardConfig(**preset["reward"])
    reward_model = RewardModel.from_policy(sft_policy)
    started = time.perf_counter()
    result = train_reward_model(reward_model, tokenizer, _pairs("train", preset, tokenizer, sft_policy),
                                config, run_dir=Path(run_dir) / "reward")
    metrics = evaluate_reward_model(reward_model, tokenizer, _pairs("test", preset, tokenizer, sft_policy),
                                    config.max_length)
    metrics.update(final_loss=result.losses()[-1], steps=result.step, seconds=time.perf_counter() - started,
                   config=config.to_dict())
    _log(log, f"reward: held-out preference accuracy {metrics['preference_accuracy']:.3f}, "
              f"pearson r with ground truth {metrics['pearson_r']:.3f}")
    return reward_model, metrics


def _ground_truth_fn(tokenizer, prompts: list[str]):
    from minifm.data import tinyworld

    def ground_truth(prompt_indices, responses):
        return np.array([tinyworld.ground_truth_reward(prompts[i], decode_response(tokenizer, r))
                         for i, r in zip(prompt_indices, responses)])

    return ground_truth


def ppo_stage(sft_policy, reward_model, tokenizer, run_dir, preset: dict, log=print, **overrides):
    """PPO from a copy of the SFT policy; returns (policy, history, metrics).

    With ptx_coef > 0 (PPO-ptx) the SFT stage's training demonstrations enter the loss as an NLL term."""
    from minifm.checkpoint import save_checkpoint

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
    started = time.perf_counter()
    stage_dir = Path(run_dir) / config.advantage_estimator.replace("gae", "ppo")
    stage_dir.mkdir(parents=True, exist_ok=True)
    with open(stage_dir / "metrics.jsonl", "w") as handle:
        def record(row):
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            ptx = f" ptx {row['ptx_loss']:.3f}" if row["ptx_loss"] is not None else ""
            _log(log, f"{row['stage']} {row['iteration']:3d}: reward {row['reward_mean']:+.3f} "
                      f"ground truth {row['ground_truth_reward_mean']:+.3f} kl {row['kl']:.3f} "
                      f"entropy {row['entropy']:.3f} clipfrac {row['clipfrac']:.3f}{ptx}")
        history = trainer.train(log=record)
    save_checkpoint(stage_dir, policy, config=policy.config)
    metrics = {"seconds": time.perf_counter() - started, "iterations": len(history), "config": config.to_dict()}
    return policy, history, metrics


def dpo_stage(sft_policy, tokenizer, run_dir, preset: dict, log=print, wrap=None):
    """DPO from a copy of the SFT policy (the SFT policy is the reference); returns (policy, metrics).
    `wrap(copy) -> model` may wrap the trainable copy first (the CLI's --peft)."""
    policy = _trainable(sft_policy)
    if wrap is not None:
        policy = wrap(policy)
    preset = _stage_settings(preset, policy)
    config = DPOConfig(**preset["dpo"])
    started = time.perf_counter()
    result, stats = train_dpo(policy, tokenizer, _pairs("train", preset, tokenizer, policy), config,
                              ref_policy=sft_policy, run_dir=Path(run_dir) / "dpo")
    _log(log, f"dpo: loss {result.losses()[0]:.3f} -> {result.losses()[-1]:.3f}, last-batch reward accuracy "
              f"{stats.get('rewards_accuracy', float('nan')):.2f}")
    return policy, {"final_loss": result.losses()[-1], "steps": result.step, "last_batch": stats,
                    "seconds": time.perf_counter() - started, "config": config.to_dict()}


# ---------------------------------------------------------------------- evaluation
def sample_answers(policy, tokenizer, prompts, max_new_tokens: int, temperature: float, seed: int,
                   best_of: int | None = None, reward_model=None, chunk: int = 128):
    """Sampled answers per prompt, in chunks of `chunk` prompts (bounded KV-cache memory); with best_of,
    the reward model picks one of best_of samples. Returns a list of GenerateOutput, one per chunk."""
    from minifm.sampling.generate import generate

    rng = np.random.default_rng(seed)
    outputs = []
    for start in range(0, len(prompts), chunk):
        ids = [prompt_ids(tokenizer, p) for p in prompts[start:start + chunk]]
        outputs.append(generate(policy, ids, max_new_tokens, do_sample=True, temperature=temperature, top_k=0,
                                eos_token_id=special_id(tokenizer, END_TOKEN),
                                pad_token_id=special_id(tokenizer, PAD_TOKEN), seed=rng,
                                return_dict_in_generate=True, best_of=best_of, reward_model=reward_model))
    return outputs


def mean_and_standard_error(values_per_prompt: np.ndarray) -> tuple[float, float]:
    """Mean over prompts and its standard error (sample std over prompts / sqrt(number of prompts))."""
    values = np.asarray(values_per_prompt, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()) if values.size else float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def sampled_kl(policy, reference, out, temperature: float) -> float:
    """Mean over rows of sum_t k1 = log pi(token) - log ref(token) (both at temperature): KL(pi || ref) estimate."""
    mask = out.attention_mask[:, out.prompt_length:].astype(np.float64)
    with no_grad():
        logprobs, _ = response_logprobs(policy, out.sequences, out.attention_mask, out.prompt_length, temperature)
        ref_logprobs, _ = response_logprobs(reference, out.sequences, out.attention_mask, out.prompt_length,
                                            temperature)
    kl = rl_math.kl_per_token(logprobs.data, ref_logprobs.data, "k1") * mask
    return float(kl.sum(axis=1).mean())


def evaluate_policies(policies: dict, sft_policy, reward_model, tokenizer, preset: dict, temperature: float,
                      log=print) -> dict:
    """Held-out comparison: sampled / greedy ground-truth reward, accuracy, learned reward and KL to SFT.

    Every policy answers the same held-out prompts (`eval_samples` samples each, the same seed). The
    ground-truth reward is averaged per prompt first, so its standard error (over prompts) counts
    the prompt-to-prompt spread honestly; `difference_vs_sft` is the paired per-prompt difference to
    the first policy of `policies` (the SFT model) with its own standard error.
    """
    from minifm.data import tinyworld

    tasks = fitting(tinyworld.instructions("test", n=preset["n_eval"]), tokenizer, context_length(sft_policy),
                    preset["max_new_tokens"])
    n_prompts, copies = len(tasks), preset["eval_samples"]
    prompts = [t["prompt"] for t in tasks] * copies
    table, baseline = {}, None
    for name, policy in policies.items():
        best_of = preset["best_of_n"] if name == "best_of_n" else None
        with no_grad():
            outs = sample_answers(policy, tokenizer, prompts, preset["max_new_tokens"], temperature, seed=123,
                                  best_of=best_of, reward_model=reward_model if best_of else None)
            answers = [decode_response(tokenizer, out.new_tokens(row)) for out in outs
                       for row in range(out.sequences.shape[0])]
            learned = np.concatenate([reward_model.score(out.sequences, out.attention_mask) for out in outs])
        truth = np.array([tinyworld.ground_truth_reward(p, a) for p, a in zip(prompts, answers)])
        per_prompt = truth.reshape(copies, n_prompts).mean(axis=0)  # (n_prompts,)
        if best_of:
            kl = rl_math_kl_bound(best_of)
            greedy = table["sft"]["greedy"] if "sft" in table else {"accuracy": float("nan"),
                                                                    "mean_ground_truth_reward": float("nan")}
        else:
            if policy is sft_policy:
                kl = 0.0
            else:
                weights = np.array([out.sequences.shape[0] for out in outs], dtype=np.float64)
                kl = float(np.average([sampled_kl(policy, sft_policy, out, temperature) for out in outs],
                                      weights=weights))
            greedy = evaluate_instructions(policy, tokenizer, tasks, preset["max_new_tokens"])
        mean, standard_error = mean_and_standard_error(per_prompt)
        if baseline is None:
            baseline = per_prompt
        difference, difference_se = mean_and_standard_error(per_prompt - baseline)
        polite = float(np.mean([tinyworld.tasks.strip_polite_prefix(a)[1] for a in answers]))
        table[name] = {"ground_truth_reward": mean, "ground_truth_reward_se": standard_error,
                       "difference_vs_sft": difference, "difference_vs_sft_se": difference_se,
                       "learned_reward": float(np.mean(learned)), "polite_fraction": polite,
                       "accuracy_sampled": float(np.mean([tinyworld.grade(p, a) for p, a in zip(prompts, answers)])),
                       "kl_to_sft": kl, "greedy": {k: greedy[k] for k in ("accuracy", "mean_ground_truth_reward")},
                       "n_prompts": n_prompts, "samples_per_prompt": copies,
                       "examples": [{"prompt": p, "response": a} for p, a in list(zip(prompts, answers))[:3]]}
        _log(log, f"eval {name:10s}: ground truth {mean:+.3f} ± {standard_error:.3f} "
                  f"(vs sft {difference:+.3f} ± {difference_se:.3f}) learned {table[name]['learned_reward']:+.3f} "
                  f"polite {polite:.2f} kl {kl:.3f}")
    return table


def rl_math_kl_bound(n: int) -> float:
    from minifm.sampling.best_of_n import best_of_n_kl_bound

    return best_of_n_kl_bound(n)


# ---------------------------------------------------------------------- plots and report
def plot_ppo_rewards(history: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [h["iteration"] for h in history]
    fig, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot(iterations, [h["reward_mean"] for h in history], label="learned reward (reward model)")
    axis.plot(iterations, [h["ground_truth_reward_mean"] for h in history], label="ground-truth reward")
    axis.set_xlabel("PPO iteration")
    axis.set_ylabel("mean reward of rollouts")
    axis.legend()
    axis.set_title("PPO: learned vs ground-truth reward (they diverge if the policy hacks the reward model)",
                   fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reward_vs_kl(history: list[dict], table: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot([h["kl"] for h in history], [h["ground_truth_reward_mean"] for h in history], ".-", alpha=0.5,
              label="PPO rollouts (per iteration)")
    for name, row in table.items():
        axis.scatter([row["kl_to_sft"]], [row["ground_truth_reward"]], s=50, label=f"{name} (held-out)")
    axis.set_xlabel("KL(policy || SFT) per response (nats)")
    axis.set_ylabel("mean ground-truth reward")
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_markdown(summary: dict) -> str:
    sft, reward, table = summary["sft"], summary["reward"], summary["evaluation"]
    lines = [
        "## Post-training",
        "",
        f"Preset `{summary['preset']}`, {summary['seconds']:.0f} s in all "
        f"(SFT {sft['seconds']:.0f} s, reward model {reward['seconds']:.0f} s, PPO {summary['ppo']['seconds']:.0f} s, "
        f"DPO {summary['dpo']['seconds']:.0f} s, evaluation {summary['evaluation_seconds']:.0f} s).",
        "",
        f"* SFT, held-out greedy accuracy: {sft['accuracy_before']:.3f} before -> {sft['accuracy_after']:.3f} after "
        f"(ground-truth reward {sft['ground_truth_reward_before']:+.3f} -> {sft['ground_truth_reward_after']:+.3f}).",
        f"* Reward model, held-out preference accuracy {reward['preference_accuracy']:.3f}; correlation with the "
        f"ground-truth reward: Pearson {reward['pearson_r']:.3f}, Spearman {reward['spearman_r']:.3f}.",
        "",
        f"{next(iter(table.values()))['n_prompts']} held-out prompts x "
        f"{next(iter(table.values()))['samples_per_prompt']} sampled answers (temperature "
        f"{summary['temperature']}); standard errors over prompts; KL to the SFT policy per response:",
        "",
        "| policy | ground-truth reward ± s.e. | vs SFT (paired) ± s.e. | learned reward | polite share | "
        "sampled accuracy | greedy accuracy | greedy GT reward | KL to SFT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        kl = f"<= {row['kl_to_sft']:.3f} (bound)" if name == "best_of_n" else f"{row['kl_to_sft']:.3f}"
        greedy = row["greedy"]
        lines.append(f"| {name} | {row['ground_truth_reward']:+.3f} ± {row['ground_truth_reward_se']:.3f} | "
                     f"{row['difference_vs_sft']:+.3f} ± {row['difference_vs_sft_se']:.3f} | "
                     f"{row['learned_reward']:+.3f} | {row['polite_fraction']:.2f} | "
                     f"{row['accuracy_sampled']:.3f} | {greedy['accuracy']:.3f} | "
                     f"{greedy['mean_ground_truth_reward']:+.3f} | {kl} |")
    lines += ["", "![learned vs ground-truth reward over PPO iterations](ppo_rewards.png)", "",
              "![ground-truth reward vs KL](reward_vs_kl.png)", ""]
    return "\n".join(lines)


def run_post_training(policy, tokenizer, run_dir, preset="default", log=print) -> dict:
    """Run every post-training stage on a pre-trained `policy` (changed in place by SFT); returns the summary.

    Writes post_training.json, post_training.md and the two plots into run_dir.
    """
    from minifm.checkpoint import atomic_write_bytes, atomic_write_json

    settings = get_preset(preset)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sft = sft_stage(policy, tokenizer, run_dir, settings, log)
    sft_policy = policy
    sft_policy.requires_grad_(False)  # the frozen reference from here on; copies are made trainable below
    reward_model, reward = reward_stage(sft_policy, tokenizer, run_dir, settings, log)
    ppo_policy, ppo_history, ppo_metrics = ppo_stage(sft_policy, reward_model, tokenizer, run_dir,
                                                     settings, log)
    dpo_policy, dpo_metrics = dpo_stage(sft_policy, tokenizer, run_dir, settings, log)
    evaluation_started = time.perf_counter()
    temperature = PPOConfig(**settings["ppo"]).temperature
    table = evaluate_policies({"sft": sft_policy, "ppo": ppo_policy, "dpo": dpo_policy, "best_of_n": sft_policy},
                              sft_policy, reward_model, tokenizer, settings, temperature, log)
    sft_policy.requires_grad_(True)
    summary = {"preset": preset if isinstance(preset, str) else "custom", "temperature": temperature,
               "sft": sft, "reward": reward, "ppo": {**ppo_metrics, "history": ppo_history}, "dpo": dpo_metrics,
               "evaluation": table, "evaluation_seconds": time.perf_counter() - evaluation_started,
               "seconds": time.perf_counter() - started}
    plot_ppo_rewards(ppo_history, run_dir / "ppo_rewards.png")
    plot_reward_vs_kl(ppo_history, table, run_dir / "reward_vs_kl.png")
    atomic_write_json(run_dir / "post_training.json", summary)
    markdown = report_markdown(summary)
    atomic_write_bytes(run_dir / "post_training.md", markdown.encode("utf-8"))
    summary["markdown"] = markdown
    return summary


def _trainable(model):
    """A deep copy of a (frozen) model with every parameter trainable again."""
    clone = copy.deepcopy(model)
    clone.requires_grad_(True)
    return clone


# ---------------------------------------------------------------------- command line
PEFT_MARKER_NAME = "peft.json"


def _gpt_and_tokenizer(directory):
    """An untrained GPT of the configuration in `directory`/config.json, and the run's tokenizer."""
    from minifm.checkpoint import TRAIN_STATE_FILE, checkpoint_record
    from minifm.models import GPT, GPTConfig
    from minifm.tokenizer import BPETokenizer

    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    config = config.get("model", config)
    if "arch" in config:  # a pre-training run directory: {"model": {"arch": "gpt", "config": {...}}}
        if config["arch"] != "gpt":
            raise ValueError(f"post-training needs a GPT, but {directory} holds a {config['arch']!r} model")
        config = config["config"]
    elif "stage" in config and (directory / TRAIN_STATE_FILE).is_file():
        # a training-loop stage directory (the lifecycle's sft/, reward/, dpo/ ...): config.json holds
        # the run settings; the model's own config is in the checkpoint record
        record = checkpoint_record(directory)
        if record["model_class"] not in ("GPT", "RewardModel", "ValueModel"):
            raise ValueError(f"post-training needs a GPT, but {directory} holds a {record['model_class']}")
        config = record["model_config"]
    tokenizer_path = directory / "tokenizer.json"
    if not tokenizer_path.exists():
        tokenizer_path = directory.parent / "tokenizer.json"
    if not tokenizer_path.exists():
        raise FileNotFoundError(f"no tokenizer.json in {directory} or its parent")
    return GPT(GPTConfig.from_dict(config)), BPETokenizer.load(tokenizer_path)


def _load_policy(directory):
    """A GPT and its tokenizer from a run directory (model.safetensors + config.json + tokenizer.json).

    When the directory also holds an adapter that was not merged (peft.json says so: prompt, prefix
    or bottleneck adapters, written by `minifm sft/dpo --peft ...`), the adapter is put on the model, frozen."""
    from minifm.checkpoint import load_checkpoint

    model, tokenizer = _gpt_and_tokenizer(directory)
    load_checkpoint(directory, model)
    marker = Path(directory) / PEFT_MARKER_NAME
    if marker.is_file() and not json.loads(marker.read_text())["merged"]:
        from minifm.peft import from_pretrained

        model = from_pretrained(model, directory, tokenizer=tokenizer)
    return model, tokenizer


def _load_reward_model(directory) -> RewardModel:
    """The reward model that `minifm reward` wrote to `directory`."""
    from minifm.checkpoint import load_checkpoint

    backbone, _ = _gpt_and_tokenizer(directory)
    reward_model = RewardModel(backbone)
    load_checkpoint(directory, reward_model)
    return reward_model


def _save_policy(model, tokenizer, directory) -> None:
    """Write a trained policy so that `_load_policy(directory)` gives it back.

    A PEFT-wrapped policy also writes its adapter alone (adapter_model.safetensors +
    adapter_config.json, the small file to share). LoRA and IA3 are then merged, so model.safetensors
    is the fine-tuned GPT that later stages load like any other; the other methods cannot be merged,
    so model.safetensors is their base model and peft.json tells `_load_policy` to add the adapter."""
    from minifm.checkpoint import atomic_write_json, save_checkpoint
    from minifm.peft import PeftModel, save_adapter

    directory = Path(directory)
    if isinstance(model, PeftModel):
        save_adapter(model, directory)
        merged = model.mergeable
        atomic_write_json(directory / PEFT_MARKER_NAME, {"method": model.peft_type, "merged": merged})
        model = model.merge_and_unload() if merged else model.unload()  # the wrapper is spent afterwards
    save_checkpoint(directory, model, config=model.config)
    tokenizer.save(directory / "tokenizer.json")


def _cli_sft(args) -> int:
    from minifm.peft import apply_peft_from_args

    policy, tokenizer = _load_policy(args.model)
    policy = apply_peft_from_args(policy, args, tokenizer=tokenizer)
    settings = get_preset(args.preset)
    if args.max_steps:
        settings["sft"]["max_steps"] = args.max_steps
    metrics = sft_stage(policy, tokenizer, args.out, settings)
    _save_policy(policy, tokenizer, args.out)
    print(json.dumps({k: v for k, v in metrics.items() if k != "examples_after"}, indent=2))
    return 0


def _cli_reward(args) -> int:
    from minifm.peft import PeftModel

    policy, tokenizer = _load_policy(args.model)
    if isinstance(policy, PeftModel):
        # a prompt/prefix/adapter-tuned policy: the reward model starts from its transformer alone
        # (the adapter shapes generation; the reward head reads the plain network)
        policy = policy.unload()
    settings = get_preset(args.preset)
    if args.max_steps:
        settings["reward"]["max_steps"] = args.max_steps
    reward_model, metrics = reward_stage(policy, tokenizer, args.out, settings)
    from minifm.checkpoint import save_checkpoint

    save_checkpoint(Path(args.out), reward_model, config=policy.config)
    tokenizer.save(Path(args.out) / "tokenizer.json")
    print(json.dumps(metrics, indent=2))
    return 0


def _cli_ppo(args) -> int:
    policy, tokenizer = _load_policy(args.model)
    reward_model = _load_reward_model(args.reward_model)
    settings = get_preset(args.preset)
    overrides = {"advantage_estimator": "grpo" if args.grpo else "gae"}
    if args.num_iterations:
        overrides["num_iterations"] = args.num_iterations
    if args.kl_coef is not None:
        overrides["kl_coef"] = args.kl_coef
    if args.ptx_coef is not None:
        overrides["ptx_coef"] = args.ptx_coef
    trained, history, metrics = ppo_stage(policy, reward_model, tokenizer, args.out, settings, **overrides)
    _save_policy(trained, tokenizer, args.out)
    print(json.dumps({**metrics, "last": history[-1]}, indent=2))
    return 0


def _cli_dpo(args) -> int:
    from minifm.peft import apply_peft_from_args

    policy, tokenizer = _load_policy(args.model)
    settings = get_preset(args.preset)
    if args.max_steps:
        settings["dpo"]["max_steps"] = args.max_steps
    if args.beta is not None:
        settings["dpo"]["beta"] = args.beta
    if args.loss_type:
        settings["dpo"]["loss_type"] = args.loss_type
    trained, metrics = dpo_stage(policy, tokenizer, args.out, settings,
                                 wrap=lambda copy: apply_peft_from_args(copy, args, tokenizer=tokenizer))
    _save_policy(trained, tokenizer, args.out)
    print(json.dumps(metrics, indent=2))
    return 0


def add_post_training_commands(subparsers) -> None:
    """Register `sft`, `reward`, `ppo` and `dpo` on an argparse subparsers object (minifm/cli.py calls this)."""
    from minifm.peft import add_peft_arguments

    def common(parser, needs_model_help: str):
        parser.add_argument("--model", required=True, help=needs_model_help)
        parser.add_argument("--out", required=True, help="output run directory")
        parser.add_argument("--preset", default="default", choices=sorted(PRESETS))

    parser = subparsers.add_parser("sft", help="supervised fine-tuning on tinyworld instructions")
    common(parser, "run directory of a pre-trained GPT (model.safetensors, config.json, tokenizer.json)")
    parser.add_argument("--max-steps", type=int, default=None)
    add_peft_arguments(parser)
    parser.set_defaults(func=_cli_sft)

    parser = subparsers.add_parser("reward", help="train a reward model on tinyworld preference pairs")
    common(parser, "run directory of the SFT policy the reward model starts from")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.set_defaults(func=_cli_reward)

    parser = subparsers.add_parser("ppo", help="PPO (or GRPO) against a reward model, KL-leashed to the start policy")
    common(parser, "run directory of the SFT policy (also the frozen reference)")
    parser.add_argument("--reward-model", required=True, help="run directory written by `minifm reward`")
    parser.add_argument("--num-iterations", type=int, default=None)
    parser.add_argument("--kl-coef", type=float, default=None)
    parser.add_argument("--ptx-coef", type=float, default=None,
                        help="PPO-ptx: weight of the SFT demonstrations' NLL in the loss (0 = plain PPO)")
    parser.add_argument("--grpo", action="store_true", help="group-relative advantages, no value model")
    parser.set_defaults(func=_cli_ppo)

    parser = subparsers.add_parser("dpo", help="direct preference optimisation on tinyworld preference pairs")
    common(parser, "run directory of the SFT policy (also the frozen reference)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--beta", type=float, default=None)
    parser.add_argument("--loss-type", choices=["sigmoid", "hinge", "ipo"], default=None)
    add_peft_arguments(parser)
    parser.set_defaults(func=_cli_dpo)


def main(argv=None) -> int:
    """Stand-alone entry point (`python -m minifm.lifecycle_post sft ...`) until minifm/cli.py wires the commands."""
    import argparse

    parser = argparse.ArgumentParser(prog="minifm-post", description="minifm post-training stages")
    add_post_training_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
