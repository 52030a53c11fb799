"""The `minifm` command: one subcommand per lifecycle step, each declared the same way.

    lifecycle.py       minifm lifecycle    every stage on tinyworld, report.md + report.json
    data.py            minifm curate       quality rules + dedup, the per-rule table
                       minifm tokenize     train a BPE tokenizer, fertility / bytes per token
    pretrain.py        minifm pretrain     pre-train GPT / BERT / T5 on tinyworld, python-stdlib or your files
    generate.py        minifm generate     continue text with a run or a real model (interactive without --prompt)
    chat.py            minifm chat         chat with a model through its own chat template, replies streamed
    embed.py           minifm embed        sentence vectors and cosine similarities (all-minilm-l6-v2)
    convert.py         minifm convert      GGUF / Hugging Face checkpoints <-> minifm run directories
    quantize.py        minifm quantize     a GPT's weights as Q8_0 / Q4_0 / Q4_1 blocks, in a new run directory
    lab.py             minifm lab          the chapter's claims as experiments (minifm/lab/)
    post_training.py   minifm sft | reward | ppo | dpo   the post-training stages on a run directory
    info.py            minifm info         version, kernel backend, a tiny forward/backward
    common.py          Command, --config files, flags generated from settings dataclasses
    peft_options.py    the --peft flags of sft and dpo

Each module lists its subcommands in COMMANDS (minifm.cli.common.Command: name, summary,
add_arguments, run). Every subcommand also takes `--config FILE` (TOML or JSON; flags win over
the file, the file over the defaults; an unknown key is an error listing the valid ones).
A bad setting or path ends the command with one line on stderr and exit code 2.

Under `mpiexec -n N minifm ...` every rank runs the same command (minifm/distributed/): main()
finds the ranks first (mpi4py is imported only then), sends the stdout of every rank but 0 to
/dev/null (one writer), prints an error every rank raised together once (rank 0), and when a rank
fails alone it prints its error with its rank and calls MPI_Abort with the exit code, so the
others, which may be waiting for it in a collective, stop at once. Only the training commands of
DATA_PARALLEL_COMMANDS run under mpiexec with several ranks; the others are refused (N copies of
`minifm chat` or of the lifecycle's reports would only compete).
"""
from __future__ import annotations

import os
import sys
import warnings

from minifm import __version__
from minifm.cli import chat, convert, data, embed, generate, info, lab, lifecycle, post_training, pretrain, quantize
from minifm.cli.common import OneLineErrorParser
from minifm.config import ConfigError
from minifm.distributed import DistributedError, get_world, is_raised_on_every_rank, raised_on_every_rank
from minifm.train.loop import NonFiniteLossError, TrainingInterrupted

DATA_PARALLEL_COMMANDS = ("pretrain", "sft", "reward", "dpo")  # the ones that run under mpiexec -n N > 1

COMMANDS = (lifecycle.COMMANDS + data.COMMANDS + pretrain.COMMANDS + generate.COMMANDS + chat.COMMANDS
            + embed.COMMANDS + convert.COMMANDS + quantize.COMMANDS + post_training.COMMANDS + lab.COMMANDS
            + info.COMMANDS)


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
    try:
        world = get_world()  # one process unless mpiexec started several
    except (ImportError, ConfigError, ValueError) as error:  # mpiexec without mpi4py, a bad MINIFM_DIST_* value
        print(f"minifm: error: {describe(error)}", file=sys.stderr)
        return 2
    if world.distributed and not world.is_writer:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # one writer: rank 0 prints
    code, error = run_command(argv, world)
    if world.distributed and code != 0 and not is_raised_on_every_rank(error):
        world.abort(code)  # this rank failed alone: the others may wait for it in a collective
    return code


def run_command(argv, world) -> tuple[int, BaseException | None]:
    """Parse and run one subcommand: (exit code, the error that ended it or None)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2, None

    def report(error: BaseException, line: str) -> None:
        """Print on stderr; an error every rank raised together only once (rank 0)."""
        if world.is_writer or not is_raised_on_every_rank(error):
            print(line, file=sys.stderr)

    name = f"minifm {args.command}"
    try:
        if world.distributed and args.command not in DATA_PARALLEL_COMMANDS:
            raise raised_on_every_rank(ValueError(
                f"this command does not run data-parallel: under mpiexec with several processes (here {world.size}) "
                f"only minifm {' | '.join(DATA_PARALLEL_COMMANDS)} do; run it without mpiexec"))
        return int(handler(args) or 0), None
    except TrainingInterrupted as interrupted:
        report(interrupted, f"\n{interrupted}")
        return 130, interrupted
    except KeyboardInterrupt as interrupted:
        report(interrupted, "\ninterrupted")
        return 130, interrupted
    except (NonFiniteLossError, FloatingPointError, DistributedError) as error:  # training diverged: one line
        report(error, f"\n{labelled(name, world, error)}: error: {describe(error)}")
        return 1, error
    except (ConfigError, ValueError, KeyError, OSError) as error:  # bad settings or paths: one line, no traceback
        if os.environ.get("MINIFM_DEBUG"):
            raise
        report(error, f"{labelled(name, world, error)}: error: {describe(error)} (set MINIFM_DEBUG=1 for the traceback)")
        return 2, error


def labelled(name: str, world, error: BaseException) -> str:
    """`minifm pretrain`, or with several ranks and an error of this rank alone, `minifm pretrain (rank 1 of 2)`."""
    if world.distributed and not is_raised_on_every_rank(error):
        return f"{name} ({world.describe()})"
    return name


def describe(error: BaseException) -> str:
    """One line for an error: OSErrors say what failed on which path; a KeyError's message unquoted."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename}"
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return " ".join(str(error).split())


__all__ = ["COMMANDS", "DATA_PARALLEL_COMMANDS", "build_parser", "main", "run_command"]
