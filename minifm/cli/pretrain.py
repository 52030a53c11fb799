"""`minifm pretrain`: pre-train a GPT (causal LM), BERT (masked LM) or T5 (span corruption).

    minifm pretrain [--arch gpt|bert|t5] [--corpus tinyworld|python-stdlib|PATH] [--max-steps N] [--resume]

Settings are the fields of PretrainConfig (data and model) and TrainConfig (optimisation), as
flags or in a flat --config file.
"""
from __future__ import annotations

from minifm.cli.common import (
    Command, add_dataclass_arguments, add_run_arguments, config_values, field_names, run_directory, settings_from,
)
from minifm.tokenizer import BPETokenizer
from minifm.train.config import TrainConfig
from minifm.train.pretrain import PretrainConfig, run_pretraining


def add_pretrain_arguments(parser) -> None:
    add_run_arguments(parser, "pretrain")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out/--run-name bit-for-bit")
    parser.add_argument("--tokenizer", default=None, help="use this tokenizer.json instead of training one")
    add_dataclass_arguments(parser, PretrainConfig, "data and model")
    add_dataclass_arguments(parser, TrainConfig, "optimisation")


def run_pretrain(args) -> int:
    file_values = config_values(args, field_names(PretrainConfig, TrainConfig))
    config = settings_from(args, PretrainConfig, file_values=file_values)
    train_config = settings_from(args, TrainConfig, file_values=file_values)
    tokenizer = BPETokenizer.load(args.tokenizer) if args.tokenizer else None
    run_pretraining(run_directory(args), config, train_config, tokenizer=tokenizer, resume=args.resume)
    print(f"run saved in {run_directory(args)}")
    return 0


COMMANDS = [Command("pretrain", "pre-train a GPT (causal LM), BERT (masked LM) or T5 (span corruption)",
                    add_pretrain_arguments, run_pretrain)]
