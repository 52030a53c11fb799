"""What every `minifm` subcommand shares: how it is declared, its --config file, its dataclass flags.

A subcommand is a `Command(name, summary, add_arguments, run)`: `add_arguments(parser)` declares
its flags, `run(args) -> exit code` does the work. Every subcommand takes `--config FILE` (added
by minifm/cli/__init__.py); `settings_from(args, cls, base)` builds a settings dataclass from

    the class's defaults  <  `base` (e.g. a preset's values)  <  the --config file  <  the flags

so flags win. Flags are generated from the dataclass fields (`add_dataclass_arguments`: one
`--field-name` per field, booleans as --x / --no-x); a file key that belongs to none of the
command's dataclasses is an error listing the valid keys. Files are TOML or JSON, a flat table of
the same names (dashes or underscores).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from minifm.checkpoint import TRAIN_STATE_FILE
from minifm.config import annotation_types


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag is one line on stderr (naming the flag, the value and the way
    to the help) and exit code 2, instead of the usage block followed by the message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def read_config_file(path) -> dict:
    """The table in a .toml or .json file, keys with dashes turned into underscores (nested tables kept)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: {path} does not exist or is not a file")
    try:
        if path.suffix.lower() == ".toml":
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        elif path.suffix.lower() == ".json":
            values = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise ValueError(f"--config must be a .toml or .json file, got {path.name}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--config {path}: cannot parse it: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} must hold a table/object at the top level")
    return {key.replace("-", "_"): value for key, value in values.items()}


def config_values(args, allowed: list[str]) -> dict:
    """The --config file's values (an empty dict without --config); keys outside `allowed` are an error."""
    if getattr(args, "config", None) is None:
        return {}
    values = read_config_file(args.config)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"--config {args.config}: unknown keys {unknown}; valid keys: {sorted(allowed)}")
    return values


FIELD_COMMENT = re.compile(r"^    (\w+)\s*:[^#]*#\s*(.+)$")


def field_help(cls) -> dict[str, str]:
    """{field: the comment at the end of its line in the class body}, the subclass's comment winning:
    the settings dataclasses document each field there, and --help shows the same words."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # no source (a frozen build): flags keep their defaults as help
            continue
        for line in source.splitlines():
            match = FIELD_COMMENT.match(line)
            if match:
                helps[match.group(1)] = match.group(2).strip()
    return helps


def add_dataclass_arguments(parser, cls, title: str | None = None, skip=()) -> None:
    """One `--field-name` flag per dataclass field (default None: "not given", so files and defaults apply),
    its help the field's comment and its default."""
    group = parser.add_argument_group(title or cls.__name__)
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)  # once per class: the parser of every subcommand is built at start-up
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = annotation_types(hints[field.name])[0][0]  # X of "X | None"
        default = field.default if field.default is not dataclasses.MISSING else None
        text = f"{helps[field.name]} " if field.name in helps else ""
        text = f"{text}(default {default})".replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                               help=text)
        elif kind in (int, float, str):
            group.add_argument(flag, dest=field.name, type=kind, default=None, metavar=field.name.upper(),
                               help=text)


def flag_values(args, cls) -> dict:
    """The fields of `cls` given as flags on the command line."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)
            if getattr(args, field.name, None) is not None}


def settings_from(args, cls, base: dict | None = None, file_values: dict | None = None):
    """cls(...) from its defaults < base < the --config file's values for its fields < flags."""
    names = {field.name for field in dataclasses.fields(cls)}
    values = dict(base or {})
    values.update({key: value for key, value in (file_values or {}).items() if key in names})
    values.update(flag_values(args, cls))
    return cls(**values)


def field_names(*classes) -> list[str]:
    return [field.name for cls in classes for field in dataclasses.fields(cls)]


def add_run_arguments(parser, default_name: str) -> None:
    """--run-name and --out, shared by the commands that write a run directory under runs/."""
    parser.add_argument("--run-name", default=default_name, help=f"run directory name (default {default_name})")
    parser.add_argument("--out", default="runs", help="parent directory of runs (default runs)")


def run_directory(args) -> Path:
    return Path(args.out) / args.run_name


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_directory(path, flag: str) -> Path:
    """Before any work: `path` can be (or become) a directory we may write in; else a ValueError naming the flag."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a directory")
    existing = _nearest_existing(path.absolute())
    if not existing.is_dir():
        raise ValueError(f"{flag} {path}: {existing} is a file, so the directory cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: no permission to write in {existing}")
    return path


def check_output_file(path, flag: str) -> Path:
    """Before any work: `path` names a file we may create or replace; else a ValueError naming the flag."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: no permission to write in {parent}")
    return path


def add_overwrite_argument(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run in the output directory (without it, an existing run is kept "
                             "and the command stops)")


def check_not_overwriting(directory, args, marker: str = TRAIN_STATE_FILE, flag: str = "--out") -> None:
    """Refuse to start over an existing run in `directory` (one holding `marker`) unless --overwrite
    (or --resume, for commands that have it) was given."""
    directory = Path(directory)
    if (directory / marker).exists() and not getattr(args, "overwrite", False) and not getattr(args, "resume", False):
        resume = " --resume to continue it, or" if hasattr(args, "resume") else ""
        raise ValueError(f"{flag} {directory} already holds a run ({marker}); pass{resume} --overwrite to replace it")


__all__ = ["Command", "OneLineErrorParser", "add_dataclass_arguments", "add_overwrite_argument", "add_run_arguments",
           "check_not_overwriting", "check_output_directory", "check_output_file", "config_values", "field_names",
           "flag_values", "read_config_file", "run_directory", "settings_from"]
