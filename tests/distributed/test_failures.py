"""A data-parallel run never hangs: a failing rank, a hung rank and Ctrl-C each end every rank within a bound.

    a rank raises (or its loss is NaN)   it prints its error and calls MPI_Abort: every rank ends at once
    a rank hangs                         the others wait MINIFM_DIST_TIMEOUT (3 s here) in their next
                                         collective, then the watchdog prints where and calls MPI_Abort
    Ctrl-C (SIGINT to mpiexec)           mpiexec forwards it to every rank; the ranks vote after the step,
                                         all stop after the same step, rank 0 saves it
In every case the last finished checkpoint survives and a resume continues from it.
"""
import json
import signal
import subprocess
import sys
import time

from minifm.checkpoint import read_train_state
from mpi_launch import SCRIPTS, environment, require_mpi, run_ranks

BOUND_S = 60  # launch (~5 s of imports) + failure + abort, with room for a loaded machine


def test_a_rank_that_raises_stops_every_rank_at_once_and_keeps_the_checkpoint(tmp_path):
    started = time.monotonic()
    result = run_ranks("train_tiny.py", "--results", tmp_path, "--run-dir", tmp_path / "run", "--steps", 8,
                       "--save-steps", 2, "--fail-rank", 1, "--fail-step", 4, check=False, timeout=BOUND_S * 2)
    assert time.monotonic() - started < BOUND_S
    assert result.returncode != 0
    assert "injected failure on rank 1 at step 4" in result.stderr
    assert "rank 1 of 2 stopped with RuntimeError; stopping every rank" in result.stderr
    assert read_train_state(tmp_path / "run")["step"] == 2  # the last finished checkpoint
    run_ranks("train_tiny.py", "--results", tmp_path, "--run-dir", tmp_path / "run", "--steps", 5, "--resume")
    assert read_train_state(tmp_path / "run")["step"] == 5


def test_a_nan_loss_on_one_rank_stops_every_rank(tmp_path):
    started = time.monotonic()
    result = run_ranks("train_tiny.py", "--results", tmp_path, "--run-dir", tmp_path / "run", "--steps", 8,
                       "--save-steps", 2, "--fail-rank", 0, "--fail-step", 3, "--fail-kind", "nan", check=False,
                       timeout=BOUND_S * 2)
    assert time.monotonic() - started < BOUND_S
    assert result.returncode != 0 and "the loss is nan" in result.stderr
    assert read_train_state(tmp_path / "run")["step"] == 2


def test_a_hung_rank_is_stopped_by_the_watchdog_within_its_timeout(tmp_path):
    started = time.monotonic()
    result = run_ranks("train_tiny.py", "--results", tmp_path, "--run-dir", tmp_path / "run", "--steps", 8,
                       "--save-steps", 2, "--fail-rank", 1, "--fail-step", 3, "--fail-kind", "hang", check=False,
                       env={"MINIFM_DIST_TIMEOUT": "3"}, timeout=BOUND_S * 2)
    assert time.monotonic() - started < BOUND_S
    assert result.returncode != 0
    assert "rank 0 of 2 waited" in result.stderr and "MINIFM_DIST_TIMEOUT=3 s" in result.stderr
    assert read_train_state(tmp_path / "run")["step"] == 2


def test_ctrl_c_stops_every_rank_after_the_same_step_and_rank_0_saves_it(tmp_path):
    mpiexec = require_mpi()
    run_dir = tmp_path / "run"
    command = [mpiexec, "-n", "2", sys.executable, str(SCRIPTS / "train_tiny.py"), "--results", str(tmp_path),
               "--run-dir", str(run_dir), "--steps", "500", "--sleep", "0.2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        deadline = time.monotonic() + BOUND_S
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
            time.sleep(0.2)
        assert metrics.exists(), "the run did not start within the bound"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=BOUND_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "interrupted: checkpoint of step" in stderr
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    state = read_train_state(run_dir)
    assert state["step"] == rows[-1]["step"] >= 2 and state["world_size"] == 2
    run_ranks("train_tiny.py", "--results", tmp_path, "--run-dir", run_dir, "--steps", state["step"] + 1, "--resume")
    assert read_train_state(run_dir)["step"] == state["step"] + 1
