"""`minifm sft | reward | ppo | dpo`: the post-training stages on a run directory or a real model.

    minifm sft    --model RUN_DIR --out DIR [--peft lora ...]    supervised fine-tuning on tinyworld instructions
    minifm reward --model SFT_DIR --out DIR                      a reward model on tinyworld preference pairs
    minifm ppo    --model SFT_DIR --reward-model DIR --out DIR   PPO (or --advantage-estimator grpo)
    minifm dpo    --model SFT_DIR --out DIR [--peft lora ...]    direct preference optimisation

    minifm sft --model PATH_OR_NAME --data FILE.jsonl --out DIR  fine-tuning on your own rows (TRL's fields)
    minifm dpo --model PATH_OR_NAME --data FILE.jsonl --out DIR  DPO on your own preference pairs

Settings: a stage's config (SFTConfig, RewardConfig, PPOConfig, DPOConfig) starts from the
lifecycle preset's values (--preset, minifm/lifecycle/presets.py; the preset also sets how much
tinyworld data is used) -- or, with --data, from TRL's defaults (sft.OWN_DATA_DEFAULTS,
dpo.OWN_DATA_DEFAULTS) -- then the --config file (a flat table of the config's fields and of
OwnData's), then flags. The result is a run directory (minifm/runs.py) that `minifm generate`,
`minifm chat` and the next stage read, with the training's metrics.jsonl and summary.json.
While a stage trains, the shared loop checkpoints it in DIR/<stage>/ (Ctrl-C saves there; `--resume`
continues from there); when it finishes, the model is written once to DIR and that folder is removed.

With --data (sft, dpo): PATH_OR_NAME is anything minifm.runs.load_any takes (a minifm run, a Hugging
Face directory, a .gguf, a short name). Every line of FILE (and of --eval-data) is read and checked
before the model is loaded (a malformed line: one line on stderr naming the file, line and field,
exit 2); --eval-fraction of the rows (default 0.1, at least one; seeded by --seed) is held out unless
--eval-data is given, and scored every --eval-steps and at the end (minifm.train.sft / dpo).
What a TRL user gets from trainer.save_model: a Hugging Face model is written, besides the run,
as DIR/hf/ (config.json, model.safetensors, tokenizer files: transformers loads it), and with --peft
the adapter alone (DIR/adapter_config.json + adapter_model.safetensors, as save_run writes it) and no
DIR/hf/. --save-hf also writes DIR/hf/ for a minifm-trained model or a merged LoRA/IA3;
--no-save-hf skips it.

--dtype q8_0|q4_0|q4_1 (sft, dpo; default float32) loads the base with its weights as frozen quantized
blocks and trains the --peft method's float32 parameters on top (QLoRA-style; without --peft it is a
one-line error, exit 2). DIR then holds the quantized base, unmerged, with the adapter beside it
(merging would round it into the blocks; minifm/peft/layer.py): load_run puts it back on, and the
adapter files load onto the float32 model too.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from minifm.checkpoint import atomic_write_json
from minifm.cli.common import (
    Command, add_dataclass_arguments, add_overwrite_argument, check_not_overwriting, check_output_directory,
    config_values, field_names, settings_from,
)
from minifm.cli.peft_options import (
    add_base_dtype_argument, add_peft_arguments, apply_peft_from_args, base_dtype, check_base_dtype, config_from_args,
)
from minifm.config import ConfigBase
from minifm.data.conversations import uses_minifm_template
from minifm.data.sources import PREFERENCE_FORMATS, SFT_FORMATS, hold_out, read_jsonl_records
from minifm.distributed import get_world
from minifm.lifecycle.post_training import dpo_stage, ppo_folder, ppo_stage, reward_stage, sft_stage
from minifm.lifecycle.presets import PRESETS, TRAINER_CONFIGS
from minifm.models import GPT
from minifm.peft import PeftModel
from minifm.pretrained.architectures import FAMILIES
from minifm.runs import load_any, load_model, load_run, save_run
from minifm.tokenizer.chat import CHAT_SPECIAL_TOKENS
from minifm.train import dpo, sft
from minifm.train.ppo import PPOConfig

HF_FOLDER = "hf"
DEFAULT_EVAL_FRACTION = 0.1
OWN_DATA_DEFAULTS = {"sft": sft.OWN_DATA_DEFAULTS, "dpo": dpo.OWN_DATA_DEFAULTS}
STAGE_FORMATS = {"sft": (SFT_FORMATS, "minifm sft reads TRL's text, prompt/completion or messages rows"),
                 "dpo": (PREFERENCE_FORMATS, "minifm dpo reads TRL's prompt/chosen/rejected rows")}


@dataclass
class OwnData(ConfigBase):
    """Your own training data (sft, dpo): flags and --config keys."""

    data: str | None = None              # JSONL of TRL rows to train on instead of tinyworld
    eval_data: str | None = None         # JSONL of held-out rows (instead of holding out --eval-fraction)
    eval_fraction: float | None = None   # share of --data held out for evaluation, seeded (default 0.1; 0 = none)
    save_hf: bool | None = None          # write DIR/hf/ (default: for a Hugging Face model without --peft)

    def validate(self) -> None:
        self.check_range("eval_fraction", 0.0, 1.0, high_open=True)


def prepare_stage(args, stage: str) -> tuple[dict, OwnData]:
    """Before any work: the preset's post-training settings with this stage's config rebuilt from
    preset (or, with --data, TRL's defaults) < --config < flags, the OwnData options (sft, dpo), and
    the output directory checked (writable, not an existing run)."""
    config_class = TRAINER_CONFIGS[stage]
    settings = copy.deepcopy(PRESETS[args.preset]["post_training"])
    takes_data = stage in OWN_DATA_DEFAULTS
    file_values = config_values(args, field_names(config_class, *([OwnData] if takes_data else [])))
    own = settings_from(args, OwnData, file_values=file_values) if takes_data else OwnData()
    base = OWN_DATA_DEFAULTS[stage] if own.data is not None else settings[stage]
    config = settings_from(args, config_class, base=base, file_values=file_values)
    settings[stage] = config.to_dict()
    if own.eval_data is not None and own.eval_fraction is not None:
        raise ValueError("give --eval-data FILE or --eval-fraction, not both")
    if own.data is None and (own.eval_data is not None or own.eval_fraction is not None):
        raise ValueError("--eval-data and --eval-fraction need --data (tinyworld has its own held-out split)")
    check_output_directory(args.out, "--out")
    check_not_overwriting(args.out, args)
    check_not_overwriting(args.out / checkpoint_folder(stage, config), args)  # an interrupted run of this stage
    return settings, own


def read_own_data(own: OwnData, stage: str, seed: int) -> tuple[list, list]:
    """(train rows, held-out rows) of --data / --eval-data, every line of both checked first."""
    formats, purpose = STAGE_FORMATS[stage]
    files = [("--data", own.data)] + ([("--eval-data", own.eval_data)] if own.eval_data is not None else [])
    for flag, path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path} does not exist or is not a file")
    rows = read_jsonl_records(own.data, formats, purpose)
    if not rows:
        raise ValueError(f"--data {own.data} holds no rows (empty or only blank lines)")
    if own.eval_data is not None:
        held_out = read_jsonl_records(own.eval_data, formats, purpose)
        if not held_out:
            raise ValueError(f"--eval-data {own.eval_data} holds no rows (empty or only blank lines)")
        return rows, held_out
    fraction = DEFAULT_EVAL_FRACTION if own.eval_fraction is None else own.eval_fraction
    return hold_out(rows, fraction, seed, what=f"--data {own.data}")


def hf_layout_problem(model) -> str | None:
    """Why `model` cannot be written as a Hugging Face directory (None when it can)."""
    if not isinstance(model, GPT):
        return f"a {type(model).__name__} has no Hugging Face export here (GPT models only)"
    config = dict(model.config.to_dict(), mlp_hidden=model.config.ffn_hidden)
    if not any(module.matches(config) for module in FAMILIES["gpt"]):
        return ("its layout is neither Llama's (pos='rope', norm='rmsnorm', mlp='swiglu') nor GPT-2's "
                "(pos='learned', norm='layernorm', mlp='gelu', bias=True)")
    return None


def wants_hf_directory(own: OwnData, args, model, tokenizer) -> bool:
    """Whether to write DIR/hf/ (see the module docstring); an impossible --save-hf is refused before training."""
    peft = config_from_args(args)
    problem = hf_layout_problem(model)
    if own.save_hf is None:
        return not uses_minifm_template(tokenizer) and peft is None and problem is None
    if not own.save_hf:
        return False
    if base_dtype(args) != "float32":
        raise ValueError(f"--save-hf: with --dtype {base_dtype(args)} the adapter stays apart from the quantized base "
                         "(merging would round it into the blocks); share the adapter files in --out, or train with "
                         "--dtype float32 to get a merged Hugging Face directory")
    if problem is not None:
        raise ValueError(f"--save-hf: {args.model} cannot be written as a Hugging Face directory: {problem}")
    if peft is not None and peft.peft_type not in ("lora", "ia3"):
        raise ValueError(f"--save-hf: a {peft.peft_type} adapter cannot be merged into the weights, and Hugging Face "
                         "directories hold plain models; the adapter files in --out are what to share")
    return True


def checkpoint_folder(stage: str, config) -> str:
    """Where the shared loop checkpoints a stage inside --out (PPO: ppo_folder, "grpo" with GRPO)."""
    return ppo_folder(config) if stage == "ppo" else stage


def finish(model, tokenizer, out: Path, checkpoint_folder: str, save_hf: bool = False,
           summary: dict | None = None) -> None:
    """Write the finished model to `out` (and `out`/hf/ with save_hf), keep the training's metrics.jsonl
    (and the summary) there, and drop the training checkpoint folder (one model file per output).
    Under mpiexec only rank 0 writes (one writer)."""
    if not get_world().is_writer:
        return
    adapted = isinstance(model, PeftModel)
    save_run(model, tokenizer, out)
    metrics = out / checkpoint_folder / "metrics.jsonl"
    if metrics.is_file():
        shutil.copyfile(metrics, out / "metrics.jsonl")
    if summary is not None:
        atomic_write_json(out / "summary.json", summary)
    if save_hf:
        plain = load_model(out) if adapted else model  # save_run merged the adapter into out's weights
        plain.save_pretrained(out / HF_FOLDER)
        tokenizer.save_pretrained(out / HF_FOLDER)
        print(f"wrote {out / HF_FOLDER} (a Hugging Face directory: transformers' from_pretrained loads it)")
    shutil.rmtree(out / checkpoint_folder, ignore_errors=True)


def load_tinyworld_model(name_or_path: str, dtype: str = "float32"):
    """(model, tokenizer) for the tinyworld path, which needs minifm's tokenizer and chat tokens."""
    model, tokenizer = load_any(name_or_path, dtype=dtype)
    chat_ready = uses_minifm_template(tokenizer) and all(
        token in tokenizer.special_tokens for token in CHAT_SPECIAL_TOKENS)
    if not chat_ready:
        raise ValueError(f"--model {name_or_path}: without --data the stage trains on tinyworld in minifm's chat "
                         f"format, which needs a model trained by minifm; give --data FILE.jsonl (TRL's fields)")
    return model, tokenizer


def print_summary(metrics: dict) -> None:
    shown = {key: value for key, value in metrics.items() if key not in ("examples_after", "config", "history")}
    print(json.dumps(shown, indent=2, default=str))


# The four commands follow one pattern on purpose (settings and outputs checked, model loaded, stage
# trained, result written once); what differs between them is the stage.
def run_sft(args) -> int:
    check_base_dtype(args)
    settings, own = prepare_stage(args, "sft")
    config = sft.SFTConfig(**settings["sft"])
    if own.data is None:
        policy, tokenizer = load_tinyworld_model(args.model, base_dtype(args))
        save_hf = wants_hf_directory(own, args, policy, tokenizer)
        policy = apply_peft_from_args(policy, args, tokenizer=tokenizer)
        metrics = sft_stage(policy, tokenizer, args.out, settings, resume=args.resume)
    else:
        train_rows, eval_rows = read_own_data(own, "sft", config.seed)  # every line checked before the model loads
        policy, tokenizer = load_any(args.model, dtype=base_dtype(args))
        save_hf = wants_hf_directory(own, args, policy, tokenizer)
        policy = apply_peft_from_args(policy, args, tokenizer=tokenizer)
        metrics = sft.train_sft_on_rows(policy, tokenizer, train_rows, eval_rows, config, run_dir=args.out / "sft",
                                        resume=args.resume, source=own.data, eval_source=own.eval_data)
    finish(policy, tokenizer, args.out, "sft", save_hf, summary=metrics)
    print_summary(metrics)
    return 0


def run_reward(args) -> int:
    settings, _ = prepare_stage(args, "reward")
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
    settings, _ = prepare_stage(args, "ppo")
    policy, tokenizer = load_run(args.model)
    reward_model = load_model(args.reward_model)
    trained, history, metrics = ppo_stage(policy, reward_model, tokenizer, args.out, settings, resume=args.resume)
    finish(trained, tokenizer, args.out, checkpoint_folder("ppo", PPOConfig(**settings["ppo"])))
    print_summary({**metrics, "last": history[-1]})
    return 0


def run_dpo(args) -> int:
    check_base_dtype(args)
    settings, own = prepare_stage(args, "dpo")
    config = dpo.DPOConfig(**settings["dpo"])
    if own.data is None:
        reference, tokenizer = load_tinyworld_model(args.model, base_dtype(args))
        save_hf = wants_hf_directory(own, args, reference, tokenizer)
        trained, metrics = dpo_stage(reference, tokenizer, args.out, settings,
                                     wrap=lambda copy: apply_peft_from_args(copy, args, tokenizer=tokenizer),
                                     resume=args.resume)
    else:
        train_rows, eval_rows = read_own_data(own, "dpo", config.seed)  # every line checked before the model loads
        reference, tokenizer = load_any(args.model, dtype=base_dtype(args))
        save_hf = wants_hf_directory(own, args, reference, tokenizer)
        reference.requires_grad_(False)
        reference.eval()
        trained = copy.deepcopy(reference)  # the policy; the model as loaded stays the frozen reference
        trained.requires_grad_(True)
        trained = apply_peft_from_args(trained, args, tokenizer=tokenizer)
        metrics = dpo.train_dpo_on_rows(trained, tokenizer, train_rows, eval_rows, config, ref_policy=reference,
                                        run_dir=args.out / "dpo", resume=args.resume, source=own.data,
                                        eval_source=own.eval_data)
    finish(trained, tokenizer, args.out, "dpo", save_hf, summary=metrics)
    print_summary(metrics)
    return 0


def add_common_arguments(parser: argparse.ArgumentParser, stage: str, model_help: str) -> None:
    parser.add_argument("--model", required=True, metavar="PATH_OR_NAME", help=model_help)
    parser.add_argument("--out", required=True, type=Path, help="output run directory (it must not hold a run yet)")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="the lifecycle preset whose settings and data sizes start this stage on tinyworld "
                             "(default default; with --data the settings start from TRL's defaults)")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue an interrupted run from its checkpoint in OUT/{stage}/ (same settings)"
                             + (" (OUT/grpo/ for GRPO)" if stage == "ppo" else ""))
    add_overwrite_argument(parser)
    add_dataclass_arguments(parser, TRAINER_CONFIGS[stage], f"{stage} settings")


def add_sft_arguments(parser) -> None:
    add_common_arguments(parser, "sft", "the model to fine-tune: a run directory (e.g. runs/lifecycle/pretrain); "
                                        "with --data also a Hugging Face directory, a .gguf or a short name "
                                        "(smollm2-135m-instruct)")
    add_dataclass_arguments(parser, OwnData, "your own data (TRL's JSONL fields)")
    add_peft_arguments(parser)
    add_base_dtype_argument(parser)


def add_reward_arguments(parser) -> None:
    add_common_arguments(parser, "reward", "run directory of the SFT policy the reward model starts from")


def add_ppo_arguments(parser) -> None:
    add_common_arguments(parser, "ppo", "run directory of the SFT policy (also the frozen reference)")
    parser.add_argument("--reward-model", required=True, help="run directory written by `minifm reward`")


def add_dpo_arguments(parser) -> None:
    add_common_arguments(parser, "dpo", "the SFT policy (also the frozen reference): a run directory; with --data "
                                        "also a Hugging Face directory, a .gguf or a short name")
    add_dataclass_arguments(parser, OwnData, "your own data (TRL's JSONL fields)")
    add_peft_arguments(parser)
    add_base_dtype_argument(parser)


COMMANDS = [
    Command("sft", "supervised fine-tuning on tinyworld instructions or your --data JSONL (optionally --peft)",
            add_sft_arguments, run_sft),
    Command("reward", "train a reward model on tinyworld preference pairs", add_reward_arguments, run_reward),
    Command("ppo", "PPO (or GRPO) against a reward model, KL-leashed to the start policy", add_ppo_arguments,
            run_ppo),
    Command("dpo", "direct preference optimisation on tinyworld pairs or your --data JSONL (optionally --peft)",
            add_dpo_arguments, run_dpo),
]
