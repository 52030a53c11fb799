"""`minifm sft | reward | ppo | dpo`: the post-training stages on a run directory.

    minifm sft    --model RUN_DIR --out DIR [--peft lora ...]    supervised fine-tuning on tinyworld instructions
    minifm reward --model SFT_DIR --out DIR                      a reward model on tinyworld preference pairs
    minifm ppo    --model SFT_DIR --reward-model DIR --out DIR   PPO (or --advantage-estimator grpo)
    minifm dpo    --model SFT_DIR --out DIR [--peft lora ...]    direct preference optimisation

Settings: a stage's config (SFTConfig, RewardConfig, PPOConfig, DPOConfig) starts from the
lifecycle preset's values (--preset, minifm/lifecycle/presets.py; the preset also sets how much
tinyworld data is used), then the --config file (a flat table of the config's fields), then flags.
The result is a run directory (minifm/runs.py) that `minifm generate --run` and the next stage read.
While a stage trains, the shared loop checkpoints it in DIR/<stage>/ (Ctrl-C saves there; `--resume`
continues from there); when it finishes, the model is written once to DIR and that folder is removed.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

from minifm.cli.common import (
    Command, add_dataclass_arguments, add_overwrite_argument, check_not_overwriting, check_output_directory,
    config_values, field_names, settings_from,
)
from minifm.cli.peft_options import add_peft_arguments, apply_peft_from_args
from minifm.lifecycle.post_training import dpo_stage, ppo_folder, ppo_stage, reward_stage, sft_stage
from minifm.lifecycle.presets import PRESETS, TRAINER_CONFIGS
from minifm.peft import PeftModel
from minifm.runs import load_model, load_run, save_run
from minifm.train.ppo import PPOConfig


def prepare_stage(args, stage: str) -> dict:
    """Before any work: the preset's post-training settings with this stage's config rebuilt from
    preset < --config < flags, and the output directory checked (writable, not an existing run)."""
    config_class = TRAINER_CONFIGS[stage]
    settings = copy.deepcopy(PRESETS[args.preset]["post_training"])
    file_values = config_values(args, field_names(config_class))
    config = settings_from(args, config_class, base=settings[stage], file_values=file_values)
    settings[stage] = config.to_dict()
    check_output_directory(args.out, "--out")
    check_not_overwriting(args.out, args)
    check_not_overwriting(args.out / checkpoint_folder(stage, config), args)  # an interrupted run of this stage
    return settings


def checkpoint_folder(stage: str, config) -> str:
    """Where the shared loop checkpoints a stage inside --out (PPO: ppo_folder, "grpo" with GRPO)."""
    return ppo_folder(config) if stage == "ppo" else stage


def finish(model, tokenizer, out: Path, checkpoint_folder: str) -> None:
    """Write the finished model to `out` and drop the training checkpoint folder (one model file per output)."""
    save_run(model, tokenizer, out)
    shutil.rmtree(out / checkpoint_folder, ignore_errors=True)


def print_summary(metrics: dict) -> None:
    shown = {key: value for key, value in metrics.items() if key not in ("examples_after", "config", "history")}
    print(json.dumps(shown, indent=2, default=str))


# The four commands follow one pattern on purpose (settings and outputs checked, model loaded, stage
# trained, result written once); what differs between them is the stage.
def run_sft(args) -> int:
    settings = prepare_stage(args, "sft")
    policy, tokenizer = load_run(args.model)
    policy = apply_peft_from_args(policy, args, tokenizer=tokenizer)
    metrics = sft_stage(policy, tokenizer, args.out, settings, resume=args.resume)
    finish(policy, tokenizer, args.out, "sft")
    print_summary(metrics)
    return 0


def run_reward(args) -> int:
    settings = prepare_stage(args, "reward")
    policy, tokenizer = load_run(args.model)
    if isinstance(policy, PeftModel):
        # a prompt/prefix/adapter-tuned policy: the reward model starts from its transformer alone
        # (the adapter shapes generation; the reward head reads the plain network)
        policy = policy.unload()
    reward_model, metrics = reward_stage(policy, tokenizer, args.out, settings, resume=args.resume)
    finish(reward_model, tokenizer, args.out, "reward")
    print_summary(metrics)
    return 0


def run_ppo(args) -> int:
    settings = prepare_stage(args, "ppo")
    policy, tokenizer = load_run(args.model)
    reward_model = load_model(args.reward_model)
    trained, history, metrics = ppo_stage(policy, reward_model, tokenizer, args.out, settings, resume=args.resume)
    finish(trained, tokenizer, args.out, checkpoint_folder("ppo", PPOConfig(**settings["ppo"])))
    print_summary({**metrics, "last": history[-1]})
    return 0


def run_dpo(args) -> int:
    settings = prepare_stage(args, "dpo")
    policy, tokenizer = load_run(args.model)
    trained, metrics = dpo_stage(policy, tokenizer, args.out, settings,
                                 wrap=lambda copy: apply_peft_from_args(copy, args, tokenizer=tokenizer),
                                 resume=args.resume)
    finish(trained, tokenizer, args.out, "dpo")
    print_summary(metrics)
    return 0


def add_common_arguments(parser: argparse.ArgumentParser, stage: str, model_help: str) -> None:
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--out", required=True, type=Path, help="output run directory (it must not hold a run yet)")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="the lifecycle preset whose settings and data sizes start this stage (default default)")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue an interrupted run from its checkpoint in OUT/{stage}/ (same settings)"
                             + (" (OUT/grpo/ for GRPO)" if stage == "ppo" else ""))
    add_overwrite_argument(parser)
    add_dataclass_arguments(parser, TRAINER_CONFIGS[stage], f"{stage} settings")


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
