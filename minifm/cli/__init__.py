"""The `minifm` command: one subcommand per lifecycle step, each declared the same way.

    lifecycle.py       minifm lifecycle    every stage on tinyworld, report.md + report.json
    data.py            minifm curate       quality rules + dedup, the per-rule table
                       minifm tokenize     train a BPE tokenizer, fertility / bytes per token
    pretrain.py        minifm pretrain     pre-train GPT / BERT / T5 on tinyworld, python-stdlib or your files
    generate.py        minifm generate     continue text with a run or a real model (interactive without --prompt)
    chat.py            minifm chat         chat with a model through its own chat template, replies streamed
    embed.py           minifm embed        sentence vectors and cosine similarities (all-minilm-l6-v2)
    convert.py         minifm convert      GGUF / Hugging Face checkpoints <-> minifm run directories
    lab.py             minifm lab          the chapter's claims as experiments (minifm/lab/)
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

import os
import sys
import warnings

from minifm import __version__
from minifm.cli import chat, convert, data, embed, generate, info, lab, lifecycle, post_training, pretrain
from minifm.cli.common import OneLineErrorParser
from minifm.config import ConfigError
from minifm.train.loop import NonFiniteLossError, TrainingInterrupted

COMMANDS = (lifecycle.COMMANDS + data.COMMANDS + pretrain.COMMANDS + generate.COMMANDS + chat.COMMANDS
            + embed.COMMANDS + convert.COMMANDS + post_training.COMMANDS + lab.COMMANDS + info.COMMANDS)


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog="minifm", allow_abbrev=False,
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


def show_warning_on_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the command line: `minifm: warning: <message>`, without the source line."""
    print(f"minifm: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    warnings.showwarning = show_warning_on_one_line
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
    except (NonFiniteLossError, FloatingPointError) as error:  # training diverged: say so in one line
        print(f"\nminifm {args.command}: error: {describe(error)}", file=sys.stderr)
        return 1
    except (ConfigError, ValueError, KeyError, OSError) as error:  # bad settings or paths: one line, no traceback
        if os.environ.get("MINIFM_DEBUG"):
            raise
        print(f"minifm {args.command}: error: {describe(error)} (set MINIFM_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 2


def describe(error: BaseException) -> str:
    """One line for an error: OSErrors say what failed on which path; a KeyError's message unquoted."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename}"
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return " ".join(str(error).split())


__all__ = ["COMMANDS", "build_parser", "main"]
