"""`minifm pretrain`: pre-train a GPT (causal LM), BERT (masked LM) or T5 (span corruption).

    minifm pretrain [--arch gpt|bert|t5] [--corpus tinyworld|python-stdlib|PATH] [--max-steps N] [--resume]

Settings are the fields of PretrainConfig (data and model) and TrainConfig (optimisation), as
flags or in a flat --config file.

Under `mpiexec -n N minifm pretrain ...` the same command trains data-parallel (docs/distributed.md);
with --resume rank 0 reads the run's saved settings and shares them, so the other ranks need no copy
of the run directory.
"""
from __future__ import annotations

import json
from pathlib import Path

from minifm.cli.common import (
    Command, add_dataclass_arguments, add_overwrite_argument, add_run_arguments, check_not_overwriting,
    check_output_directory, config_values, field_names, run_directory, settings_from,
)
from minifm.distributed import get_world
from minifm.tokenizer import BPETokenizer
from minifm.train.config import TrainConfig
from minifm.train.pretrain import PretrainConfig, run_pretraining


def add_pretrain_arguments(parser) -> None:
    add_run_arguments(parser, "pretrain")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out/--run-name bit-for-bit, with its own saved settings "
                             "(flags may then change only max_steps, eval_steps, save_steps, disable_tqdm)")
    add_overwrite_argument(parser)
    parser.add_argument("--tokenizer", default=None, help="use this tokenizer.json instead of training one")
    add_dataclass_arguments(parser, PretrainConfig, "data and model")
    add_dataclass_arguments(parser, TrainConfig, "optimisation")


def saved_settings(run_dir: Path) -> tuple[dict, dict]:
    """(PretrainConfig values, TrainConfig values) that a pre-training run recorded in its config.json."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {run_dir} holds no pre-training run (no config.json)")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("stage") != "pretrain":
        raise ValueError(f"--resume: {run_dir} holds a {record.get('stage')!r} run, not a pre-training run")
    return record["pretrain"], record["train"]


def shared_saved_settings(run_dir: Path) -> tuple[dict, dict]:
    """saved_settings(run_dir) as rank 0 reads them, on every rank (one process: read here)."""
    shared = get_world().share_from_root(lambda: json.dumps(saved_settings(run_dir)).encode("utf-8"),
                                         "the reading of the run's settings on rank 0")
    model_base, train_base = json.loads(shared.decode("utf-8"))
    return model_base, train_base


def run_pretrain(args) -> int:
    file_values = config_values(args, field_names(PretrainConfig, TrainConfig))
    run_dir = check_output_directory(run_directory(args), "--out/--run-name")
    check_not_overwriting(run_dir, args, flag="--out/--run-name")
    model_base, train_base = shared_saved_settings(run_dir) if args.resume else ({}, {})
    config = settings_from(args, PretrainConfig, base=model_base, file_values=file_values)
    train_config = settings_from(args, TrainConfig, base=train_base, file_values=file_values)
    if args.resume:
        print(f"resuming with the run's own settings; flags may change only {', '.join(TrainConfig.RESUME_FREE)}")
    # with several ranks rank 0's tokenizer is shared (run_pretraining): only rank 0 needs the file
    tokenizer = BPETokenizer.load(args.tokenizer) if args.tokenizer and get_world().is_writer else None
    run_pretraining(run_dir, config, train_config, tokenizer=tokenizer, resume=args.resume)
    print(f"run saved in {run_dir}")
    return 0


COMMANDS = [Command("pretrain", "pre-train a GPT (causal LM), BERT (masked LM) or T5 (span corruption)",
                    add_pretrain_arguments, run_pretrain)]
