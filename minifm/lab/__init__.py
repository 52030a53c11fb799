"""The laboratory: the chapter's claims as experiments, one file per claim, each written as a lesson.

    minifm lab --list                       the experiments, one line each, with their default run time
    minifm lab NAME [--preset tiny|default] [--seeds N] [--out runs]

Each experiment file states its question first, then its setup, then what it measures; it writes
runs/lab-NAME/report.md (tables, plots, what it shows), report.json (every figure) and its plots,
and keeps finished sub-runs so a re-run resumes (minifm/lab/common.py). The tiny presets are for
tests and CI; the default presets are what docs/experiments.md reports.

    scaling.py        "model size depends on data and compute": L(N, D) fitted, compute-optimal size
    multilingual.py   "non-English languages are under-represented": tokens per word and loss per byte
    data_quality.py   "high-quality data improves performance": raw vs curated vs 2x parameters; misinformation
    attention.py      "attention captures long-range dependencies": loss by position, passkey vs a sliding window
    architectures.py  encoder vs decoder vs encoder-decoder at matched size and compute: next token, blank, translation
    sampling_tradeoff.py  (sampling) "lower temperature: more accurate, higher: more diverse": decoding sweeps
    structured_outputs.py  (structured) "constrained decoding makes outputs parse": validity, accuracy, mask cost
    test_time_compute.py  "sampling more and choosing buys quality": best-of-N, majority vote, over-optimisation
    confidence.py     "pre-trained probabilities are calibrated": ECE and AUROC before/after SFT and DPO
    alignment.py      "preference tuning makes outputs better": reward models, PPO / GRPO / DPO, over-optimisation
    peft_real.py      (peft-real) "PEFT nearly matches full fine-tuning": SmolLM2-135M, LoRA / adapters / prompt / prefix / IA3
    alignment_real.py (alignment-real) "preference tuning makes outputs better" on SmolLM2-135M: SFT, DPO, PPO-ptx
"""
from __future__ import annotations

from pathlib import Path

from minifm.lab import (
    alignment, architectures, attention, confidence, data_quality, multilingual, sampling_tradeoff, scaling,
    test_time_compute,
)
from minifm.lab import structured_outputs
from minifm.lab import peft_real
from minifm.lab import alignment_real
from minifm.lab.common import LabRun

EXPERIMENTS = {module.NAME: module for module in (scaling, multilingual, sampling_tradeoff, test_time_compute,
                                                   confidence, alignment, data_quality, attention, architectures)}
EXPERIMENTS[structured_outputs.NAME] = structured_outputs
EXPERIMENTS[peft_real.NAME] = peft_real
EXPERIMENTS[alignment_real.NAME] = alignment_real
PRESET_NAMES = ("tiny", "default")


def run_experiment(name: str, preset: str = "default", seeds: int | None = None, out="runs", log=print) -> LabRun:
    """Run (or resume) one experiment; returns its LabRun (report in lab.directory / report.md)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; the experiments are {sorted(EXPERIMENTS)}")
    if preset not in PRESET_NAMES:
        raise ValueError(f"--preset must be one of {list(PRESET_NAMES)}, got {preset!r}")
    module = EXPERIMENTS[name]
    settings = dict(module.PRESETS[preset])
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {seeds}")
        settings["seeds"] = seeds
    lab = LabRun(name, settings, Path(out) / f"lab-{name}", preset, log=log)
    lab.log(f"{module.CLAIM!r}: preset {preset}, writing {lab.directory}")
    module.run(lab)
    lab.log(f"report: {lab.directory / 'report.md'}")
    return lab


__all__ = ["EXPERIMENTS", "LabRun", "PRESET_NAMES", "run_experiment"]
