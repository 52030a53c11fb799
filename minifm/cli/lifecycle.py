"""`minifm lifecycle`: every stage on tinyworld, report.md + report.json (minifm/lifecycle/).

    minifm lifecycle [--preset tiny|default] [--run-name NAME] [--out runs] [--stages curate,tokenizer,...]

Its --config file is nested like the presets ({stage: {setting: value}}, minifm/lifecycle/presets.py).
"""
from __future__ import annotations

from pathlib import Path

from minifm.cli.common import (
    Command, add_overwrite_argument, add_run_arguments, check_not_overwriting, check_output_directory, read_config_file,
)
from minifm.lifecycle import PRESETS, STAGES, run_lifecycle


def add_lifecycle_arguments(parser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="tiny: a smoke run of well under two minutes; default: the full run (about five "
                             "minutes on 2 cores). Default: default (an existing run keeps its own)")
    add_run_arguments(parser, "lifecycle")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out/--run-name: finished stages are kept, the interrupted one "
                             "continues from its checkpoint (the run's own preset and settings are used)")
    add_overwrite_argument(parser)
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages to run (again), e.g. sampling,peft; the earlier stages they need "
                             "are read from the run directory. Stages: " + ",".join(s.name for s in STAGES))


def run_lifecycle_command(args) -> int:
    overrides = read_config_file(args.config) if args.config else None
    run_dir = check_output_directory(Path(args.out) / args.run_name, "--out/--run-name")
    stages = None if args.stages is None else [s.strip() for s in args.stages.split(",") if s.strip()]
    if stages is None:  # --stages re-runs chosen stages of an existing run on purpose
        check_not_overwriting(run_dir, args, marker="report.json", flag="--out/--run-name")
    elif args.overwrite:
        raise ValueError("--overwrite replaces a whole run; with --stages only the chosen stages run again")
    run_lifecycle(preset=args.preset, run_name=args.run_name, out=args.out, stages=stages, overrides=overrides,
                  resume=args.resume)
    return 0


COMMANDS = [Command("lifecycle", "run the whole lifecycle on tinyworld and write a report", add_lifecycle_arguments,
                    run_lifecycle_command)]
