"""PPO and GRPO through the shared loop: the checkpoint layout (the policy loads as a plain GPT),
bit-exact resume after Ctrl-C between or inside iterations, after a crash and after a NaN stop,
a longer run continued from a shorter one, and resumes that would change the run refused."""
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifm.checkpoint import CheckpointError, load_checkpoint
from minifm.data.conversations import sft_example
from minifm.models import GPT, GPTConfig, ValueModel
from minifm.train.loop import NonFiniteLossError, TrainingInterrupted, read_metrics
from minifm.train.ppo import PPOConfig, PPOTrainer

VOCAB, STOP, PAD, GOOD = 10, 9, 0, 3
PROMPTS = [[1, 2], [4], [5, 6, 7]]
DEMOS = [sft_example([1, 2], [GOOD, STOP]), sft_example([4], [GOOD, GOOD, STOP]), sft_example([5], [6, STOP])]
ITERATIONS = 4
# PPO with every piece of resumable state in play (adaptive KL, PPO-ptx), and GRPO with PPO-ptx
KINDS = {
    "ppo": {"advantage_estimator": "gae", "adaptive_kl": True, "target_kl": 0.05, "kl_horizon": 20.0},
    "grpo": {"advantage_estimator": "grpo", "num_generations": 2},
}


def gpt(seed):
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=10, n_layer=1, n_head=2, n_embd=16, seed=seed))


def reward(sequences, attention_mask):
    """More GOOD tokens are better, longer sequences slightly worse."""
    return (sequences == GOOD).sum(axis=1) - 0.1 * attention_mask.sum(axis=1)


def make_trainer(kind, prompts=PROMPTS, **overrides):
    config = PPOConfig(**{"learning_rate": 1e-2, "max_steps": ITERATIONS, "per_device_train_batch_size": 4,
                          "num_mini_batches": 2, "num_ppo_epochs": 2, "response_length": 3, "temperature": 1.0,
                          "kl_coef": 0.05, "ptx_coef": 0.5, "ptx_batch_size": 2, "seed": 2, **KINDS[kind],
                          **overrides})
    value_model = ValueModel(gpt(1)) if kind == "ppo" else None
    return PPOTrainer(config, gpt(0), reward, prompts, value_model=value_model, stop_token_id=STOP, pad_token_id=PAD,
                      ptx_examples=DEMOS)


def weights(trainer) -> dict:
    arrays = {f"policy.{k}": v.copy() for k, v in trainer.policy.state_dict().items()}
    if trainer.value_model is not None:
        arrays.update({f"value.{k}": v.copy() for k, v in trainer.value_model.state_dict().items()})
    return arrays


def without_time(rows) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in rows]


def assert_same_run(trainer, history, run_dir, expected):
    """The run's records, metrics.jsonl and final weights equal the uninterrupted run's, bit for bit."""
    assert without_time(history) == expected["records"]
    assert without_time(read_metrics(Path(run_dir) / "metrics.jsonl")) == expected["records"]
    final = weights(trainer)
    assert final.keys() == expected["weights"].keys()
    for name, value in final.items():
        np.testing.assert_array_equal(value, expected["weights"][name], err_msg=name)


@pytest.fixture(scope="module", params=sorted(KINDS))
def uninterrupted(request, tmp_path_factory):
    kind = request.param
    run_dir = tmp_path_factory.mktemp(f"{kind}_full")
    trainer = make_trainer(kind)
    history = trainer.train(run_dir=run_dir)
    return {"kind": kind, "records": without_time(history), "weights": weights(trainer), "run_dir": run_dir}


def test_checkpoint_layout_metrics_and_policy_as_a_plain_gpt(uninterrupted):
    kind, run_dir = uninterrupted["kind"], uninterrupted["run_dir"]
    records = uninterrupted["records"]
    assert [r["iteration"] for r in records] == list(range(1, ITERATIONS + 1))
    assert {r["stage"] for r in records} == {kind}
    assert all(r["ptx_loss"] is not None for r in records)
    for name in ("model.safetensors", "optimizer.safetensors", "train_state.json", "config.json", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "value_model.safetensors").is_file() == (kind == "ppo")
    state = json.loads((run_dir / "train_state.json").read_text())
    assert state["stage"] == kind and state["step"] == ITERATIONS
    assert without_time(state["step_state"]["history"]) == records
    # model.safetensors is the policy alone: it loads into a plain GPT (another init seed is allowed)
    plain = gpt(seed=7)
    load_checkpoint(run_dir, plain)
    for name, value in plain.state_dict().items():
        np.testing.assert_array_equal(value, uninterrupted["weights"][f"policy.{name}"], err_msg=name)


@settings(max_examples=3, deadline=None)
@given(stop_after=st.integers(1, ITERATIONS - 1))
def test_ctrl_c_between_iterations_then_resume_is_bit_exact(uninterrupted, stop_after):
    """A real SIGINT during iteration `stop_after`: that iteration finishes, is saved, and the resumed
    run ends with the uninterrupted run's records and weights."""
    kind = uninterrupted["kind"]
    handler_before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `nohup ... &`
    with tempfile.TemporaryDirectory() as run_dir:
        def press_ctrl_c(record):
            if record["iteration"] == stop_after:
                os.kill(os.getpid(), signal.SIGINT)

        with pytest.raises(TrainingInterrupted) as caught:
            make_trainer(kind).train(run_dir=run_dir, log=press_ctrl_c)
        assert caught.value.step == stop_after
        assert signal.getsignal(signal.SIGINT) is handler_before  # the caller's handler is back

        resumed = make_trainer(kind)
        history = resumed.train(run_dir=run_dir, resume=True)
        assert_same_run(resumed, history, run_dir, uninterrupted)


def test_ctrl_c_inside_an_iteration_saves_the_last_completed_one(uninterrupted, tmp_path):
    """KeyboardInterrupt during the rollout of iteration 3 (before any update): iteration 2 is saved."""
    kind = uninterrupted["kind"]
    trainer = make_trainer(kind)
    original_rollout = trainer.rollout

    def rollout():
        if len(trainer.history) == 2:
            raise KeyboardInterrupt
        return original_rollout()

    trainer.rollout = rollout
    with pytest.raises(TrainingInterrupted) as caught:
        trainer.train(run_dir=tmp_path)
    assert caught.value.step == 2
    resumed = make_trainer(kind)
    assert_same_run(resumed, resumed.train(run_dir=tmp_path, resume=True), tmp_path, uninterrupted)


def test_interrupt_after_an_update_saves_nothing_and_the_last_checkpoint_resumes(uninterrupted, tmp_path):
    """KeyboardInterrupt between two mini-batch updates of iteration 3: the weights are half-way, so
    nothing is saved; the periodic checkpoint of iteration 2 (save_steps=1) resumes bit-exactly."""
    kind = uninterrupted["kind"]
    trainer = make_trainer(kind, save_steps=1)
    original_loss = trainer.minibatch_loss
    calls = {"n": 0}

    def minibatch_loss(*args):
        if len(trainer.history) == 2:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        return original_loss(*args)

    trainer.minibatch_loss = minibatch_loss
    with pytest.raises(KeyboardInterrupt) as caught:
        trainer.train(run_dir=tmp_path)
    assert not isinstance(caught.value, TrainingInterrupted)
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 2
    resumed = make_trainer(kind, save_steps=1)
    assert_same_run(resumed, resumed.train(run_dir=tmp_path, resume=True), tmp_path, uninterrupted)


def test_nan_loss_stops_without_saving_and_the_last_good_checkpoint_resumes(uninterrupted, tmp_path):
    kind = uninterrupted["kind"]
    trainer = make_trainer(kind, save_steps=1)
    original_loss = trainer.minibatch_loss

    def minibatch_loss(*args):
        loss, stats = original_loss(*args)
        return (loss * float("nan"), stats) if len(trainer.history) == 2 else (loss, stats)

    trainer.minibatch_loss = minibatch_loss
    with pytest.raises(NonFiniteLossError, match=rf"at step 3 of stage '{kind}'.*last good checkpoint \(step 2\)"):
        trainer.train(run_dir=tmp_path)
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 2
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 2
    load_checkpoint(tmp_path, gpt(0))  # the kept checkpoint is whole
    resumed = make_trainer(kind, save_steps=1)
    assert_same_run(resumed, resumed.train(run_dir=tmp_path, resume=True), tmp_path, uninterrupted)


def test_a_short_run_continued_with_more_max_steps_equals_the_long_run(uninterrupted, tmp_path):
    kind = uninterrupted["kind"]
    make_trainer(kind, max_steps=1).train(run_dir=tmp_path)
    longer = make_trainer(kind)
    assert_same_run(longer, longer.train(run_dir=tmp_path, resume=True), tmp_path, uninterrupted)


def test_resume_refuses_what_would_change_the_run(uninterrupted, tmp_path):
    kind = uninterrupted["kind"]
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted["run_dir"], run_dir)
    with pytest.raises(ValueError, match=r"would change the run: kl_coef: 0\.05 -> 0\.1"):
        make_trainer(kind, kl_coef=0.1).train(run_dir=run_dir, resume=True)
    with pytest.raises(ValueError, match="prompts"):
        make_trainer(kind, prompts=PROMPTS[:2]).train(run_dir=run_dir, resume=True)
    other = "grpo" if kind == "ppo" else "ppo"
    with pytest.raises(ValueError, match=f"from stage '{kind}', not '{other}'"):
        make_trainer(other).train(run_dir=run_dir, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        make_trainer(kind).train(run_dir=tmp_path / "empty", resume=True)
    if kind == "ppo":  # the critic's file is checked against the checkpoint's record
        value_file = run_dir / "value_model.safetensors"
        value_file.write_bytes(value_file.read_bytes()[:-4] + b"\0\0\0\0")
        with pytest.raises(CheckpointError, match="value_model.safetensors"):
            make_trainer(kind).train(run_dir=run_dir, resume=True)
