"""What every laboratory experiment shares: its run directory, finished sub-runs kept, the report.

An experiment (one file in minifm/lab/) answers one claim of the chapter. It declares

    NAME, CLAIM, SUMMARY          its command name, the claim it tests, one line for `minifm lab --list`
    PRESETS = {"tiny": {...}, "default": {...}}, DEFAULT_MINUTES
    run(lab: LabRun) -> None      the experiment itself, written as a lesson

and does its work through a LabRun:

    lab.settings                  the preset's settings (with --seeds applied)
    lab.sub_run(key, compute)     compute() -> dict, once: the result is saved in subruns.json as soon
                                  as it exists, so a re-run (after Ctrl-C, or to rewrite the report)
                                  skips every finished sub-run and reports "(kept)"
    lab.log(text)                 progress lines, prefixed with the experiment's name
    lab.write_report(...)         report.md (question, setup, tables, plots, conclusion) and report.json

Files: runs/lab-NAME/{report.md, report.json, subruns.json, *.png, runs/...}. A sub-run's key is a
string naming its settings ("size=32 budget=4096 seed=0"); changing a preset's values changes the keys,
so stale results are never reused for new settings.
"""
from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_json, read_json_file

SUBRUNS_FILE = "subruns.json"


class LabRun:
    """One experiment's run: its directory, settings, kept sub-runs and report (see the module docstring)."""

    def __init__(self, name: str, settings: dict, directory, preset: str, log: Callable[[str], None] = print):
        self.name, self.settings, self.preset = name, settings, preset
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log = log
        subruns_path = self.directory / SUBRUNS_FILE
        self.subruns: dict[str, dict] = read_json_file(subruns_path) if subruns_path.exists() else {}
        self.started = time.perf_counter()

    def log(self, text: str) -> None:
        self._log(f"[lab {self.name}] {text}")

    def sub_run(self, key: str, compute: Callable[[], dict]) -> dict:
        """The result of the sub-run `key`: kept from an earlier run, or computed now and saved at once."""
        if key in self.subruns:
            self.log(f"{key}: kept")
            return self.subruns[key]
        started = time.perf_counter()
        result = dict(compute())
        result["seconds"] = round(time.perf_counter() - started, 3)
        self.subruns[key] = result
        atomic_write_json(self.directory / SUBRUNS_FILE, self.subruns)
        self.log(f"{key}: done in {result['seconds']:.1f} s")
        return result

    def path(self, name: str) -> Path:
        return self.directory / name

    def write_report(self, title: str, sections: Sequence[tuple[str, str]], data: dict) -> Path:
        """report.md: `# title`, then each (heading, markdown body); report.json: `data` plus the run facts."""
        elapsed = time.perf_counter() - self.started
        lines = [f"# {title}", "", f"`minifm lab {self.name} --preset {self.preset}` "
                 f"({elapsed:.0f} s this time; sub-runs kept from earlier runs are not re-timed)", ""]
        for heading, body in sections:
            lines += [f"## {heading}", "", body.rstrip(), ""]
        path = self.directory / "report.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        facts = {"experiment": self.name, "preset": self.preset, "settings": self.settings,
                 "elapsed_s": round(elapsed, 1)}
        atomic_write_json(self.directory / "report.json", _json_safe(dict(facts, **data)))
        return path


def _json_safe(value):
    """`value` with NaN/inf floats as None and NumPy scalars as Python numbers (report.json is strict JSON)."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table; floats are shown with 4 significant digits."""
    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return "n/a" if not math.isfinite(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def settings_fingerprint(settings: dict) -> str:
    """Eight hex digits naming a preset's values (the seed count aside, which only adds sub-runs).

    An experiment whose keys do not spell out every setting puts this in each key (and run directory), so
    that a run with changed settings never reuses a result kept under the same words.
    """
    named = {key: value for key, value in settings.items() if key != "seeds"}
    return f"{zlib.crc32(json.dumps(named, sort_keys=True).encode('utf-8')):08x}"


def quiet(_text: str) -> None:
    """A log function that drops the line (for the training runs inside a sub-run)."""
