"""Two ranks train one model: equal to one process at the doubled batch, bucketed == plain, ZeRO-1 == plain DP.

Each test launches `mpiexec -n 2 python scripts/<script>` (mpi_launch.run_ranks, with a timeout) and
compares what the ranks leave with one process running the same script. The model is float64
without dropout and each process runs on one thread, so the only differences left are rounding:
one process sums the 2B rows' gradients in one product, two ranks sum B rows each and then add the
two sums (the allreduce of 2 ranks is a + b, the same bits on both ranks: see
minifm/distributed/ddp.py on the reduction order). After 5 AdamW steps the parameters agree to
1e-10 (measured: ~2e-15).
"""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from minifm.checkpoint import read_train_state
from mpi_launch import run_ranks, run_single

TOLERANCE = 1e-10


def params(results, rank: int = 0) -> dict:
    return load_file(str(results / f"rank{rank}.safetensors"))


def facts(results, rank: int = 0) -> dict:
    return json.loads((results / f"rank{rank}.json").read_text())


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


def assert_ranks_identical(results) -> None:
    first, second = params(results, 0), params(results, 1)
    assert all(np.array_equal(first[name], second[name]) for name in first), "the two ranks' weights differ"


@pytest.mark.parametrize("accumulation", [1, 2])
def test_two_ranks_at_batch_b_equal_one_process_at_batch_2b(tmp_path, accumulation):
    two, one = tmp_path / "two", tmp_path / "one"
    run_ranks("train_tiny.py", "--results", two, "--run-dir", two / "run", "--batch", 2, "--accumulation",
              accumulation, "--steps", 5)
    # one process: the same rows per step in one micro-batch (2 ranks x accumulation x 2 rows), each
    # micro-batch of the two ranks weighted by its tokens as the big batch's mean weighs them
    run_single("train_tiny.py", "--results", one, "--run-dir", one / "run", "--batch", 2 * 2 * accumulation,
               "--steps", 5)
    assert_ranks_identical(two)
    assert max_difference(params(two), params(one)) < TOLERANCE
    assert np.allclose(facts(two)["losses"], facts(one)["losses"], rtol=0, atol=TOLERANCE)
    assert facts(two)["tokens"] == facts(one)["tokens"]  # the tokens of both ranks are counted
    # one writer, and the files of a single-process run
    assert sorted(p.name for p in (two / "run").iterdir()) == sorted(p.name for p in (one / "run").iterdir())
    rows = [json.loads(line) for line in (two / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]  # each row once
    assert read_train_state(two / "run")["world_size"] == 2 and "world_size" not in read_train_state(one / "run")
    saved = load_file(str(two / "run" / "model.safetensors"))
    assert max_difference(saved, load_file(str(one / "run" / "model.safetensors"))) < TOLERANCE


def test_bucketed_overlapped_allreduce_equals_the_plain_one(tmp_path):
    found = tmp_path / "gradients.json"
    run_ranks("gradients.py", found)
    result = json.loads(found.read_text())
    assert result["buckets"] > 10 and result["buckets_sent_in_backward"] == result["buckets"] - 1  # all but `unused`'s
    assert result["no_overlap_sent_in_backward"] == 0 and result["single_bucket_count"] == 1
    assert result["bucketed_equals_plain"] and result["single_equals_plain"] and result["no_overlap_equals_plain"]
    assert result["accumulated_equals_plain"]
    assert result["unused_grad_is_none"]
    # used on rank 0 only: rank 0's gradient (2 * 1.0) averaged with rank 1's none (0) = 1.0
    assert result["rank0_only_local"] == [2.0, 2.0, 2.0] and result["rank0_only_grad"] == [1.0, 1.0, 1.0]


def test_zero_stage_1_equals_plain_data_parallel_saves_the_same_files_and_resumes(tmp_path):
    plain, zero = tmp_path / "plain", tmp_path / "zero"
    run_ranks("train_tiny.py", "--results", plain, "--run-dir", plain / "run", "--steps", 4)
    # ZeRO-1, crashed after its step-2 checkpoint (gathered on rank 0) and resumed (broadcast, re-sharded)
    crashed = run_ranks("train_tiny.py", "--results", zero, "--run-dir", zero / "run", "--zero", 1, "--steps", 4,
                        "--save-steps", 2, "--fail-rank", 0, "--fail-step", 3, check=False)
    assert crashed.returncode != 0 and read_train_state(zero / "run")["step"] == 2
    run_ranks("train_tiny.py", "--results", zero, "--run-dir", zero / "run", "--zero", 1, "--steps", 4, "--resume")
    for rank in (0, 1):
        assert max_difference(params(plain, rank), params(zero, rank)) == 0.0
    # the state is sharded: each rank holds some of the parameters' moments, together all of them
    plain_states = facts(plain)["optimizer_states"]
    zero_states = [facts(zero, rank)["optimizer_states"] for rank in (0, 1)]
    assert sum(zero_states) == plain_states and 0 < min(zero_states) < plain_states
    # the checkpoint gathered on rank 0 is the single-process file, byte for byte
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (plain / "run" / name).read_bytes() == (zero / "run" / name).read_bytes()


def test_resume_on_the_same_ranks_is_bit_for_bit_and_on_other_counts_continues(tmp_path):
    straight = tmp_path / "straight"
    run_ranks("train_tiny.py", "--results", straight, "--steps", 6)
    # a run stopped by a failure after its step-3 checkpoint, resumed on 2 ranks
    broken = tmp_path / "broken"
    failed = run_ranks("train_tiny.py", "--results", broken, "--run-dir", broken / "run", "--steps", 6,
                       "--save-steps", 3, "--fail-rank", 1, "--fail-step", 5, check=False)
    assert failed.returncode != 0
    assert read_train_state(broken / "run")["step"] == 3
    run_ranks("train_tiny.py", "--results", broken, "--run-dir", broken / "run", "--steps", 6, "--resume")
    assert max_difference(params(broken), params(straight)) == 0.0
    assert facts(broken)["losses"] == facts(straight)["losses"]
    # 2 ranks -> 1 process: the data continues at the same position of the stream
    single = tmp_path / "single"
    run_single("train_tiny.py", "--results", single, "--run-dir", broken / "run", "--steps", 8, "--resume")
    assert facts(single)["step"] == 8 and facts(single)["micro_batches"] == 6 * 2 + 2
    # 1 process -> 2 ranks
    run_ranks("train_tiny.py", "--results", single, "--run-dir", broken / "run", "--steps", 9, "--resume")
    assert facts(single, 1)["micro_batches"] == 6 * 2 + 2 + 2 and read_train_state(broken / "run")["step"] == 9


def test_a_stage_that_cannot_run_data_parallel_is_refused_on_every_rank(tmp_path):
    result = run_ranks("other_step_kind.py", check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("refused: ") == 2 and "does not run data-parallel" in result.stdout
