"""`minifm lifecycle`: a foundation model's life end to end on tinyworld, with a report.

    presets.py          every stage's settings for the "tiny" and "default" presets, one table
    pretraining.py      curate -> tokenizer -> pretrain -> sampling
    post_training.py    SFT -> reward model -> PPO, DPO and best-of-N side by side
    peft_comparison.py  full fine-tuning against LoRA, adapters, prompt/prefix tuning and IA3
    evaluation.py       how policies are graded (tinyworld's grader and ground-truth reward)
    report.py           report.md / report.json, tables and plots
    reuse.py            what finished stages leave on disk, so later runs can skip them

Stages run in order, each a function `stage(run_dir, settings, outputs, resume) -> dict`:
  run_dir   Path of the run (runs/<name>/); a stage writes its files there or in a subfolder;
  settings  this stage's settings (PRESETS[preset][stage], overridden by --config);
  outputs   {earlier stage name: its returned dict}, so a stage can use the model, tokenizer, ...
  resume    continue from the stage's own checkpoints where it keeps them (pre-training and the
            post-training trainers); the other stages are short and deterministic and run again
and returns a dict with
  "figures"    JSON-able numbers and short texts -> report.json (every figure, machine-readable)
  "markdown"   this stage's section of report.md (tables, images relative to run_dir)
  "artifacts"  live objects for later stages (model, tokenizer, texts); reuse.py gets them back from disk.

A run directory remembers its preset, settings and finished stages in report.json. Running again
into it: `resume=True` skips the finished stages and continues the interrupted one; `stages=[...]`
runs just those (again), taking earlier stages' results from the directory; either way report.md
is rebuilt with every finished stage's section, in stage order.
"""
from __future__ import annotations

import copy
import json
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
from minifm.lifecycle.presets import PRESETS, check_settings, settings_for
from minifm.lifecycle.pretraining import curate_stage, pretrain_stage, sampling_stage, tokenizer_stage
from minifm.lifecycle.report import write_report
from minifm.lifecycle.reuse import artifacts_from_disk, save_artifacts, stages_to_load


def post_training_stage(run_dir: Path, settings: dict, outputs: dict, resume: bool = False) -> dict:
    """run_post_training on a copy of the pre-trained GPT (SFT changes it in place)."""
    artifacts = outputs["pretrain"]["artifacts"]
    policy = copy.deepcopy(artifacts["model"])
    summary = run_post_training(policy, artifacts["tokenizer"], run_dir, settings, resume=resume)
    markdown = summary.pop("markdown", "")
    return {"figures": summary, "markdown": markdown, "artifacts": {"sft_policy": policy}}


def peft_stage(run_dir: Path, settings: dict, outputs: dict, resume: bool = False) -> dict:
    """run_peft_comparison on the pre-trained GPT (it trains fresh copies; nothing to resume)."""
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
    function: Callable[[Path, dict, dict, bool], dict]


STAGES: list[Stage] = [
    Stage("curate", "Data curation", curate_stage),
    Stage("tokenizer", "Tokenizer", tokenizer_stage),
    Stage("pretrain", "Pre-training", pretrain_stage),
    Stage("sampling", "Sampling strategies", sampling_stage),
    Stage("post_training", "Post-training: SFT, reward model, PPO, DPO, best-of-N", post_training_stage),
    Stage("peft", "Parameter-efficient fine-tuning", peft_stage),
]


def previous_report(run_dir: Path) -> dict | None:
    """The report.json an earlier run left in run_dir, or None."""
    path = run_dir / "report.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_lifecycle(preset: str | None = None, run_name: str = "lifecycle", out="runs", stages=None,
                  overrides: dict | None = None, resume: bool = False) -> dict:
    """Run the stages in order into out/run_name; write report.md and report.json; return the report dict.

    stages   a subset of stage names (default: all); earlier stages they need are taken from the run
             directory, which must hold them finished
    resume   skip the stages that finished in the run directory and continue the others
    preset   "tiny" or "default" (None: "default" for a new run). On an existing run directory the
             run's own preset and settings are used (report.json); another preset or overrides are refused."""
    run_dir = Path(out) / run_name
    names = [s.name for s in STAGES]
    if stages is not None:
        unknown = sorted(set(stages) - set(names))
        if unknown:
            raise ValueError(f"unknown stages {unknown}; stages: {names}")
    report = previous_report(run_dir) if (resume or stages is not None) else None
    if resume and report is None:
        raise FileNotFoundError(f"--resume: no lifecycle run in {run_dir} (no report.json)")
    if report is not None:
        if (preset is not None and report["preset"] != preset) or overrides:
            raise ValueError(f"{run_dir} was run with preset {report['preset']!r} and its own settings; "
                             "a run into it uses those (drop --preset/--config, or use another --run-name)")
        settings = report["settings"]
        check_settings(settings)
    else:
        preset = preset or "default"
        settings = settings_for(preset, overrides)
        kernels = backend_info()
        report = {"minifm_version": __version__, "preset": preset, "run_dir": str(run_dir),
                  "machine": {"python": platform.python_version(), "platform": platform.platform(),
                              "numpy": np.__version__, "kernels": kernels},
                  "settings": settings, "stages": {}, "sections": {}, "seconds": {}, "finished": []}
    finished = list(report["finished"])
    selected = [name for name in names if (stages is None or name in stages) and not (resume and name in finished)]
    run_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, dict] = {}
    for name in stages_to_load(selected, finished):
        print(f"== {name}: finished earlier, its results are read from {run_dir}")
        outputs[name] = {"artifacts": artifacts_from_disk(name, run_dir)}
    started = time.perf_counter()
    for stage in STAGES:
        if stage.name not in selected:
            continue
        print(f"\n== {stage.title}")
        stage_started = time.perf_counter()
        result = stage.function(run_dir, settings[stage.name], outputs, resume)
        seconds = time.perf_counter() - stage_started
        outputs[stage.name] = result
        save_artifacts(stage.name, run_dir, result)
        report["stages"][stage.name] = result.get("figures", {})
        report["sections"][stage.name] = f"## {stage.title}\n\n{result.get('markdown', '')}\n\n*{seconds:.1f} s*\n"
        report["seconds"][stage.name] = seconds
        report["finished"] = [name for name in names if name in set(report["finished"]) | {stage.name}]
        print(f"   ({seconds:.1f} s)")
        write_report(run_dir, report, report_sections(report))  # after every stage: a stopped run keeps its report
    report["seconds"]["this_run"] = time.perf_counter() - started
    write_report(run_dir, report, report_sections(report))
    print(f"\nreport: {run_dir / 'report.md'} ({report['seconds']['this_run']:.1f} s)")
    return report


def report_sections(report: dict) -> list[str]:
    """report.md's parts: the title, then every finished stage's section in stage order, then the time."""
    kernels = report["machine"]["kernels"].get("backend")
    sections = [f"# minifm lifecycle report ({report['preset']} preset)\n",
                f"minifm {report['minifm_version']}, kernels: {kernels}, Python {report['machine']['python']}.\n"]
    sections += [report["sections"][stage.name] for stage in STAGES if stage.name in report["sections"]]
    total = sum(seconds for name, seconds in report["seconds"].items() if name in report["sections"])
    sections.append(f"Total time of the stages: {total:.1f} s.\n")
    return sections


__all__ = ["PRESETS", "STAGES", "Stage", "run_lifecycle"]
