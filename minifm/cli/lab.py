"""`minifm lab`: the chapter's claims as experiments (minifm/lab/).

    minifm lab --list
    minifm lab scaling [--preset tiny|default] [--seeds N] [--out runs]

Re-running an experiment keeps its finished sub-runs (Ctrl-C, then the same command, resumes);
--overwrite starts it over.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from minifm.cli.common import Command, check_output_directory, config_values
from minifm.lab import EXPERIMENTS, PRESET_NAMES, run_experiment


def add_lab_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", choices=sorted(EXPERIMENTS), metavar="NAME",
                        help=f"the experiment: {', '.join(sorted(EXPERIMENTS))}")
    parser.add_argument("--list", action="store_true", help="list the experiments with their default run time")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="default",
                        help="tiny (seconds, for tests) or default (what docs/experiments.md reports)")
    parser.add_argument("--seeds", type=int, default=None, help="repeats with different seeds (default: the preset's)")
    parser.add_argument("--out", default="runs", help="parent directory of runs/lab-NAME")
    parser.add_argument("--overwrite", action="store_true", help="discard kept sub-runs and start over")


def run_lab(args) -> int:
    config_values(args, [])
    if args.list:
        for name, module in sorted(EXPERIMENTS.items()):
            print(f"{name:<14} ~{module.DEFAULT_MINUTES:>3} min  {module.SUMMARY}")
        return 0
    if args.name is None:
        raise ValueError(f"name an experiment ({', '.join(sorted(EXPERIMENTS))}) or pass --list")
    directory = check_output_directory(Path(args.out) / f"lab-{args.name}", "--out")
    if args.overwrite and directory.exists():
        shutil.rmtree(directory)
    run_experiment(args.name, preset=args.preset, seeds=args.seeds, out=args.out)
    return 0


COMMANDS = [Command("lab", "the chapter's claims as experiments (minifm lab --list)", add_lab_arguments, run_lab)]
