"""`minifm lifecycle`: a foundation model's life end to end on tinyworld, with a report.

    presets.py          every stage's settings for the "tiny" and "default" presets, one table
    pretraining.py      curate -> tokenizer -> pretrain -> sampling
    post_training.py    SFT -> reward model -> PPO, DPO and best-of-N side by side
    peft_comparison.py  full fine-tuning against LoRA, adapters, prompt/prefix tuning and IA3
    evaluation.py       how policies are graded (tinyworld's grader and ground-truth reward)
    report.py           report.md / report.json, tables and plots

Stages run in order, each a function `stage(run_dir, settings, outputs) -> dict`:
  run_dir   Path of the run (runs/<name>/); a stage writes its files there or in a subfolder;
  settings  this stage's settings (PRESETS[preset][stage], overridden by --config);
  outputs   {earlier stage name: its returned dict}, so a stage can use the model, tokenizer, ...
and returns a dict with
  "figures"    JSON-able numbers and short texts -> report.json[stage]   (every figure, machine-readable)
  "markdown"   this stage's section of report.md (tables, images relative to run_dir)
  "artifacts"  live objects for later stages (model, tokenizer, texts); never serialised.
"""
from __future__ import annotations

import copy
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from minifm import __version__
from minifm.kernels import backend_info
from minifm.lifecycle.peft_comparison import run_peft_comparison
from minifm.lifecycle.post_training import run_post_training
from minifm.lifecycle.presets import PRESETS, settings_for
from minifm.lifecycle.pretraining import curate_stage, pretrain_stage, sampling_stage, tokenizer_stage
from minifm.lifecycle.report import write_report


def post_training_stage(run_dir: Path, settings: dict, outputs: dict) -> dict:
    """run_post_training on a copy of the pre-trained GPT (SFT changes it in place)."""
    artifacts = outputs["pretrain"]["artifacts"]
    policy = copy.deepcopy(artifacts["model"])
    summary = run_post_training(policy, artifacts["tokenizer"], run_dir, settings)
    markdown = summary.pop("markdown", "")
    return {"figures": summary, "markdown": markdown, "artifacts": {"sft_policy": policy}}


def peft_stage(run_dir: Path, settings: dict, outputs: dict) -> dict:
    """run_peft_comparison on the pre-trained GPT (it trains fresh copies)."""
    artifacts = outputs["pretrain"]["artifacts"]
    report = run_peft_comparison(artifacts["model"], artifacts["tokenizer"], run_dir, settings)
    table = report.pop("table_markdown", "")
    markdown = table + "\n\n" + report["lora_r16_vs_full"]["summary"]
    markdown += "\n\n![PEFT trade-off](peft/peft_tradeoff.png)"
    return {"figures": report, "markdown": markdown, "artifacts": {}}


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    function: Callable[[Path, dict, dict], dict]


STAGES: list[Stage] = [
    Stage("curate", "Data curation", curate_stage),
    Stage("tokenizer", "Tokenizer", tokenizer_stage),
    Stage("pretrain", "Pre-training", pretrain_stage),
    Stage("sampling", "Sampling strategies", sampling_stage),
    Stage("post_training", "Post-training: SFT, reward model, PPO, DPO, best-of-N", post_training_stage),
    Stage("peft", "Parameter-efficient fine-tuning", peft_stage),
]


def run_lifecycle(preset: str = "default", run_name: str = "lifecycle", out="runs", stages=None,
                  overrides: dict | None = None) -> dict:
    """Run the stages in order into out/run_name; write report.md and report.json; return the report dict."""
    run_dir = Path(out) / run_name
    settings = settings_for(preset, overrides)
    names = [s.name for s in STAGES]
    if stages is not None:
        unknown = sorted(set(stages) - set(names))
        if unknown:
            raise ValueError(f"unknown stages {unknown}; stages: {names}")
    run_dir.mkdir(parents=True, exist_ok=True)
    kernels = backend_info()
    report = {"minifm_version": __version__, "preset": preset, "run_dir": str(run_dir),
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "numpy": np.__version__, "kernels": kernels},
              "settings": settings, "stages": {}, "seconds": {}}
    sections = [f"# minifm lifecycle report ({preset} preset)\n",
                f"minifm {__version__}, kernels: {kernels.get('backend')}, Python {platform.python_version()}.\n"]
    outputs: dict[str, dict] = {}
    started = time.perf_counter()
    for stage in STAGES:
        if stages is not None and stage.name not in stages:
            continue
        print(f"\n== {stage.title}")
        stage_started = time.perf_counter()
        result = stage.function(run_dir, settings[stage.name], outputs)
        seconds = time.perf_counter() - stage_started
        outputs[stage.name] = result
        report["stages"][stage.name] = result.get("figures", {})
        report["seconds"][stage.name] = seconds
        sections.append(f"## {stage.title}\n\n{result.get('markdown', '')}\n\n*{seconds:.1f} s*\n")
        print(f"   ({seconds:.1f} s)")
        write_report(run_dir, report, sections)  # after every stage, so a stopped run still has one
    report["seconds"]["total"] = time.perf_counter() - started
    sections.append(f"Total time: {report['seconds']['total']:.1f} s.\n")
    write_report(run_dir, report, sections)
    print(f"\nreport: {run_dir / 'report.md'} ({report['seconds']['total']:.1f} s)")
    return report


__all__ = ["PRESETS", "STAGES", "Stage", "run_lifecycle"]
