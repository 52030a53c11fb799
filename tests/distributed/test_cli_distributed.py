"""`mpiexec -n 2 minifm pretrain|sft|dpo ...`: the commands of a single process, unchanged, on two ranks.

One chain on a tiny model: pre-train on 2 ranks, resume it on 1 process (the checkpoint of 2 ranks
continues on 1), fine-tune with SFT and then DPO on 2 ranks. Each run directory holds the files of
a single-process run, written once (rank 0), and stdout carries rank 0's lines only.
"""
import json
import subprocess
import sys

import pytest

from minifm.checkpoint import read_train_state
from mpi_launch import environment, require_mpi

PRETRAIN = ["--corpus-bytes", "60000", "--vocab-size", "300", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
            "--block-size", "96", "--per-device-train-batch-size", "4", "--eval-steps", "0", "--disable-tqdm"]


def minifm(*args, ranks: int = 2, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    prefix = [require_mpi(), "-n", str(ranks)] if ranks > 1 else []
    command = prefix + [sys.executable, "-m", "minifm.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment())
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def rows(run_dir) -> list:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_pretrain_sft_and_dpo_run_on_two_ranks_with_the_single_process_command(tmp_path):
    pretrain = minifm("pretrain", *PRETRAIN, "--max-steps", 4, "--out", tmp_path, "--run-name", "pre")
    run = tmp_path / "pre"
    assert pretrain.stdout.count("run saved in") == 1  # rank 0's stdout only
    for name in ("model.safetensors", "optimizer.safetensors", "tokenizer.json", "metrics.jsonl", "loss_curve.png",
                 "pretrain_summary.json", "config.json", "train_state.json"):
        assert (run / name).is_file(), name
    assert [row["step"] for row in rows(run) if "loss" in row] == [1, 2, 3, 4]
    assert rows(run)[0]["tokens"] == 2 * 4 * 96  # both ranks' tokens
    assert read_train_state(run)["world_size"] == 2

    resumed = minifm("pretrain", "--out", tmp_path, "--run-name", "pre", "--resume", "--max-steps", 5, ranks=1)
    assert "written by 2 process(es), this run has 1" in resumed.stderr
    assert read_train_state(run)["step"] == 5 and "world_size" not in read_train_state(run)

    minifm("sft", "--model", run, "--out", tmp_path / "sft", "--preset", "tiny", "--max-steps", 3)
    assert [row["step"] for row in rows(tmp_path / "sft")] == [1, 2, 3]
    assert rows(tmp_path / "sft")[0]["tokens"] > 0 and (tmp_path / "sft" / "model.safetensors").is_file()

    minifm("dpo", "--model", tmp_path / "sft", "--out", tmp_path / "dpo", "--preset", "tiny", "--max-steps", 2,
           "--max-length", 96, "--per-device-train-batch-size", 4)
    dpo_rows = rows(tmp_path / "dpo")
    assert [row["step"] for row in dpo_rows] == [1, 2] and dpo_rows[0]["tokens"] == 2 * 4  # pairs of both ranks
    assert (tmp_path / "dpo" / "model.safetensors").is_file()


def test_commands_that_do_not_train_are_refused_once_with_exit_code_2():
    result = minifm("info", check=False, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("this command does not run data-parallel") == 1  # rank 0 says it, for both
    assert "only minifm pretrain | sft | reward | dpo do" in result.stderr
