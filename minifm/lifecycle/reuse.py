"""Finished stages, reused: what each lifecycle stage leaves in the run directory for later runs.

A lifecycle run directory remembers which stages finished (report.json: "finished", with each
stage's figures and report section), so a later `minifm lifecycle --resume` or `--stages ...` can
skip them and hand their results to the stages that need them:

    stage       needs                 leaves for later stages
    curate      -                     curated.jsonl (the kept documents with their language)
    tokenizer   curate                tokenizer.json
    pretrain    curate, tokenizer     pretrain/ (a run directory: model, tokenizer, checkpoint)
    sampling    pretrain              -
    post_training  pretrain           -
    peft        pretrain              -

`artifacts_from_disk(stage, run_dir)` rebuilds what a finished stage handed on in memory ("artifacts"
of its result); `save_artifacts` writes what is not already on disk (the curated documents).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from minifm.checkpoint import atomic_write_bytes
from minifm.runs import load_run
from minifm.tokenizer import BPETokenizer

NEEDS = {"curate": (), "tokenizer": ("curate",), "pretrain": ("curate", "tokenizer"), "sampling": ("pretrain",),
         "post_training": ("pretrain",), "peft": ("pretrain",)}
CURATED_FILE = "curated.jsonl"


@dataclass(frozen=True)
class CuratedDocument:
    """A kept document as the tokenizer stage reads it: its text and language."""

    text: str
    language: str


def save_artifacts(stage: str, run_dir: Path, result: dict) -> None:
    """Write the parts of a stage's artifacts that later runs need and that are not on disk yet."""
    if stage == "curate":
        lines = [json.dumps({"text": d.text, "language": d.language}) + "\n" for d in result["artifacts"]["documents"]]
        atomic_write_bytes(run_dir / CURATED_FILE, "".join(lines).encode("utf-8"))


def artifacts_from_disk(stage: str, run_dir: Path) -> dict:
    """The artifacts a finished stage handed to later stages, read back from the run directory."""
    if stage == "curate":
        with open(run_dir / CURATED_FILE, encoding="utf-8") as handle:
            documents = [CuratedDocument(**json.loads(line)) for line in handle if line.strip()]
        return {"documents": documents, "texts": [d.text for d in documents]}
    if stage == "tokenizer":
        return {"tokenizer": BPETokenizer.load(run_dir / "tokenizer.json")}
    if stage == "pretrain":
        model, tokenizer = load_run(run_dir / "pretrain")
        model.eval()
        return {"model": model, "tokenizer": tokenizer}
    return {}


def stages_to_load(selected: list[str], finished: list[str]) -> list[str]:
    """The finished stages whose results the selected stages need, in stage order (a stage read from disk
    does not run, so its own needs are not loaded); a ValueError names a needed stage that has neither
    finished nor been selected."""
    needed = set()
    for stage in selected:
        for need in NEEDS[stage]:
            if need in selected:
                continue
            if need not in finished:
                raise ValueError(f"stage {stage!r} needs {need!r}, which has not finished in this run directory: "
                                 f"run it first (--stages {need}) or add it to --stages")
            needed.add(need)
    return [stage for stage in NEEDS if stage in needed]


__all__ = ["CURATED_FILE", "NEEDS", "artifacts_from_disk", "save_artifacts", "stages_to_load"]
