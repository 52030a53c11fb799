"""The `minifm` command: one subcommand per lifecycle step, each declared the same way.

    lifecycle.py       minifm lifecycle    every stage on tinyworld, report.md + report.json
    data.py            minifm curate       quality rules + dedup, the per-rule table
                       minifm tokenize     train a BPE tokenizer, fertility / bytes per token
    pretrain.py        minifm pretrain     pre-train GPT / BERT / T5 on tinyworld, python-stdlib or your files
    generate.py        minifm generate     sample from a run (interactive without --prompt)
    post_training.py   minifm sft | reward | ppo | dpo   the post-training stages on a run directory
    info.py            minifm info         version, kernel backend, a tiny forward/backward
    common.py          Command, --config files, flags generated from settings dataclasses
    peft_options.py    the --peft flags of sft and dpo

Each module lists its subcommands in COMMANDS (minifm.cli.common.Command: name, summary,
add_arguments, run). Every subcommand also takes `--config FILE` (TOML or JSON; flags win over
the file, the file over the defaults; an unknown key is an error listing the valid ones).
A bad setting or path ends the command with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from minifm import __version__
from minifm.cli import data, generate, info, lifecycle, post_training, pretrain
from minifm.train.loop import NonFiniteLossError, TrainingInterrupted

COMMANDS = (lifecycle.COMMANDS + data.COMMANDS + pretrain.COMMANDS + generate.COMMANDS + post_training.COMMANDS
            + info.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minifm", allow_abbrev=False,
                                     description="A foundation model's whole life, from scratch in NumPy. "
                                                 "`minifm lifecycle` runs everything on the built-in tinyworld corpus.")
    parser.add_argument("--version", action="version", version=f"minifm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.summary, description=command.summary,
                                    allow_abbrev=False)
        command.add_arguments(sub)
        sub.add_argument("--config", default=None, metavar="FILE",
                         help="TOML or JSON file of settings (flags override it)")
        sub.set_defaults(func=command.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except TrainingInterrupted as interrupted:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except NonFiniteLossError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, FileNotFoundError) as error:  # bad settings or paths: a message, not a traceback
        if os.environ.get("MINIFM_DEBUG"):
            raise
        print(f"minifm {args.command}: error: {error} (set MINIFM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "main"]
