"""A lifecycle run directory is never lost and always continues: --resume after Ctrl-C gives the same
figures as an uninterrupted run, --stages re-runs any subset on the results of finished stages, and
report.md keeps every finished stage's section."""
import json
import os
import signal

import pytest

from minifm.lifecycle import run_lifecycle
from minifm.lifecycle.reuse import stages_to_load
from minifm.train.loop import TrainingInterrupted, TrainingLoop

STAGES = ["curate", "tokenizer", "pretrain", "sampling", "post_training"]
TIMINGS = {"seconds", "elapsed_s", "train_elapsed_s", "total_elapsed_s", "tokens_per_s_median", "train_seconds",
           "wall_time_s", "evaluation_seconds", "tokens_per_s"}


def figures_without_timings(value):
    """The report's figures with every wall-time entry removed (they differ from run to run)."""
    if isinstance(value, dict):
        return {key: figures_without_timings(item) for key, item in value.items() if key not in TIMINGS}
    if isinstance(value, list):
        return [figures_without_timings(item) for item in value]
    return value


def test_stages_to_load_names_what_is_missing():
    assert stages_to_load(["sampling"], ["curate", "tokenizer", "pretrain"]) == ["pretrain"]
    assert stages_to_load(["tokenizer", "pretrain"], ["curate"]) == ["curate"]
    assert stages_to_load(["curate", "tokenizer"], []) == []
    with pytest.raises(ValueError, match="stage 'peft' needs 'pretrain', which has not finished"):
        stages_to_load(["peft"], ["curate", "tokenizer"])


@pytest.mark.slow
def test_interrupted_lifecycle_resumes_to_the_same_figures(tmp_path, monkeypatch):
    reference = run_lifecycle("tiny", run_name="whole", out=tmp_path, stages=STAGES)

    original_write_row = TrainingLoop._write_row

    def ctrl_c_in_sft(self, row):  # a real SIGINT after SFT's 5th step, once
        original_write_row(self, row)
        if self.stage == "sft" and row.get("step") == 5:
            monkeypatch.setattr(TrainingLoop, "_write_row", original_write_row)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(TrainingLoop, "_write_row", ctrl_c_in_sft)
    with pytest.raises(TrainingInterrupted):
        run_lifecycle("tiny", run_name="stopped", out=tmp_path, stages=STAGES)
    stopped = tmp_path / "stopped"
    assert json.loads((stopped / "report.json").read_text())["finished"] == ["curate", "tokenizer", "pretrain",
                                                                            "sampling"]
    assert (stopped / "sft" / "train_state.json").is_file()
    resumed = run_lifecycle(run_name="stopped", out=tmp_path, resume=True, stages=STAGES)
    assert resumed["finished"] == STAGES
    assert figures_without_timings(resumed["stages"]) == figures_without_timings(reference["stages"])

    # a subset on the finished run: only sampling runs again, every other section stays in report.md
    before = (stopped / "report.md").read_text()
    run_lifecycle(run_name="stopped", out=tmp_path, stages=["sampling"])
    after = (stopped / "report.md").read_text()
    headings = [line for line in after.splitlines() if line.startswith("## ")]
    assert headings == [line for line in before.splitlines() if line.startswith("## ")] and len(headings) == 5
    with pytest.raises(ValueError, match="was run with preset 'tiny'"):
        run_lifecycle("default", run_name="stopped", out=tmp_path, stages=["sampling"])
    with pytest.raises(FileNotFoundError, match="no lifecycle run"):
        run_lifecycle(run_name="nothing-here", out=tmp_path, resume=True)
