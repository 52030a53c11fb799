"""`minifm sft | reward | ppo | dpo`: the post-training stages on a run directory.

    minifm sft    --model RUN_DIR --out DIR [--peft lora ...]    supervised fine-tuning on tinyworld instructions
    minifm reward --model SFT_DIR --out DIR                      a reward model on tinyworld preference pairs
    minifm ppo    --model SFT_DIR --reward-model DIR --out DIR   PPO (or --advantage-estimator grpo)
    minifm dpo    --model SFT_DIR --out DIR [--peft lora ...]    direct preference optimisation

Settings: a stage's config (SFTConfig, RewardConfig, PPOConfig, DPOConfig) starts from the
lifecycle preset's values (--preset, minifm/lifecycle/presets.py; the preset also sets how much
tinyworld data is used), then the --config file (a flat table of the config's fields), then flags.
The result is a run directory (minifm/runs.py) that `minifm generate --run` and the next stage read.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from minifm.cli.common import Command, add_dataclass_arguments, config_values, field_names, settings_from
from minifm.cli.peft_options import add_peft_arguments, apply_peft_from_args
from minifm.lifecycle.post_training import dpo_stage, ppo_stage, reward_stage, sft_stage
from minifm.lifecycle.presets import PRESETS
from minifm.peft import PeftModel
from minifm.runs import load_model, load_run, save_run
from minifm.train.dpo import DPOConfig
from minifm.train.ppo import PPOConfig
from minifm.train.reward import RewardConfig
from minifm.train.sft import SFTConfig

STAGE_CONFIGS = {"sft": SFTConfig, "reward": RewardConfig, "ppo": PPOConfig, "dpo": DPOConfig}


def stage_settings(args, stage: str) -> dict:
    """The preset's post-training settings with this stage's config rebuilt from preset < --config < flags."""
    config_class = STAGE_CONFIGS[stage]
    settings = copy.deepcopy(PRESETS[args.preset]["post_training"])
    file_values = config_values(args, field_names(config_class))
    config = settings_from(args, config_class, base=settings[stage], file_values=file_values)
    settings[stage] = config.to_dict()
    return settings


def print_summary(metrics: dict) -> None:
    shown = {key: value for key, value in metrics.items() if key not in ("examples_after", "config", "history")}
    print(json.dumps(shown, indent=2, default=str))


def run_sft(args) -> int:
    settings = stage_settings(args, "sft")
    policy, tokenizer = load_run(args.model)
    policy = apply_peft_from_args(policy, args, tokenizer=tokenizer)
    metrics = sft_stage(policy, tokenizer, args.out, settings)
    save_run(policy, tokenizer, args.out)
    print_summary(metrics)
    return 0


def run_reward(args) -> int:
    settings = stage_settings(args, "reward")
    policy, tokenizer = load_run(args.model)
    if isinstance(policy, PeftModel):
        # a prompt/prefix/adapter-tuned policy: the reward model starts from its transformer alone
        # (the adapter shapes generation; the reward head reads the plain network)
        policy = policy.unload()
    reward_model, metrics = reward_stage(policy, tokenizer, args.out, settings)
    save_run(reward_model, tokenizer, args.out)
    print_summary(metrics)
    return 0


def run_ppo(args) -> int:
    settings = stage_settings(args, "ppo")
    policy, tokenizer = load_run(args.model)
    reward_model = load_model(args.reward_model)
    trained, history, metrics = ppo_stage(policy, reward_model, tokenizer, args.out, settings)
    save_run(trained, tokenizer, args.out)
    print_summary({**metrics, "last": history[-1]})
    return 0


def run_dpo(args) -> int:
    settings = stage_settings(args, "dpo")
    policy, tokenizer = load_run(args.model)
    trained, metrics = dpo_stage(policy, tokenizer, args.out, settings,
                                 wrap=lambda copy: apply_peft_from_args(copy, args, tokenizer=tokenizer))
    save_run(trained, tokenizer, args.out)
    print_summary(metrics)
    return 0


def add_common_arguments(parser: argparse.ArgumentParser, stage: str, model_help: str) -> None:
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--out", required=True, type=Path, help="output run directory")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="the lifecycle preset whose settings and data sizes start this stage (default default)")
    add_dataclass_arguments(parser, STAGE_CONFIGS[stage], f"{stage} settings")


def add_sft_arguments(parser) -> None:
    add_common_arguments(parser, "sft", "run directory of a pre-trained GPT (e.g. runs/lifecycle/pretrain)")
    add_peft_arguments(parser)


def add_reward_arguments(parser) -> None:
    add_common_arguments(parser, "reward", "run directory of the SFT policy the reward model starts from")


def add_ppo_arguments(parser) -> None:
    add_common_arguments(parser, "ppo", "run directory of the SFT policy (also the frozen reference)")
    parser.add_argument("--reward-model", required=True, help="run directory written by `minifm reward`")


def add_dpo_arguments(parser) -> None:
    add_common_arguments(parser, "dpo", "run directory of the SFT policy (also the frozen reference)")
    add_peft_arguments(parser)


COMMANDS = [
    Command("sft", "supervised fine-tuning on tinyworld instructions (optionally --peft)", add_sft_arguments,
            run_sft),
    Command("reward", "train a reward model on tinyworld preference pairs", add_reward_arguments, run_reward),
    Command("ppo", "PPO (or GRPO) against a reward model, KL-leashed to the start policy", add_ppo_arguments,
            run_ppo),
    Command("dpo", "direct preference optimisation on tinyworld preference pairs (optionally --peft)",
            add_dpo_arguments, run_dpo),
]
