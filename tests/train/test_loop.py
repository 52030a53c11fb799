"""The shared training loop: exact resume, NaN stop, Ctrl-C and SIGTERM checkpoints, a closed pipe for
output, gradient accumulation."""
import json
import os
import signal

import numpy as np
import pytest

import minifm.functional as F
from minifm.checkpoint import load_safetensors
from minifm.models import GPT, GPTConfig
from minifm.optim import SGD
from minifm.train.loop import (
    NonFiniteLossError, SupervisedStep, TrainConfig, Trainer, TrainingInterrupted, TrainingLoop, read_metrics, train,
)

VOCAB, BLOCK = 17, 8


def make_model(dropout=0.1, dtype="float32"):
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, dropout=dropout,
                         seed=3, dtype=dtype))


def random_batches(rng, batch_size=4):
    """An endless stream of random (B, BLOCK + 1) token rows, every draw from `rng`."""
    while True:
        yield rng.integers(0, VOCAB, size=(batch_size, BLOCK + 1))


def lm_loss(model, batch):
    logits = model(batch[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits, batch[:, 1:]), batch[:, 1:].size


def config(**overrides):
    values = dict(max_steps=8, per_device_train_batch_size=4, learning_rate=3e-3, warmup_steps=2,
                  gradient_accumulation_steps=2, eval_steps=3, save_steps=0, seed=5, disable_tqdm=True)
    values.update(overrides)
    return TrainConfig(**values)


def held_out(model):
    batch = np.random.default_rng(99).integers(0, VOCAB, size=(4, BLOCK + 1))
    loss, _ = lm_loss(model, batch)
    return {"val_loss": float(loss.data)}


class FailAt:
    """A loss_fn that behaves like lm_loss until call number `call`, then fails with `error`."""

    def __init__(self, call, error):
        self.call, self.error, self.calls = call, error, 0

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.call:
            if self.error == "nan":
                loss, n = lm_loss(model, batch)
                return loss * float("nan"), n
            if self.error in ("sigint", "sigterm"):
                os.kill(os.getpid(), signal.SIGINT if self.error == "sigint" else signal.SIGTERM)
            else:
                raise self.error
        return lm_loss(model, batch)


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    model = make_model()
    result = train(model, lm_loss, random_batches, config(), run_dir=run_dir, eval_fn=held_out, stage="pretrain")
    return result, weights(model), run_dir


def test_uninterrupted_run_writes_metrics_and_checkpoint(uninterrupted):
    result, _, run_dir = uninterrupted
    assert result.step == 8 and len(result.losses()) == 8
    assert all(np.isfinite(result.losses()))
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["loss"] for r in rows if "loss" in r] == result.losses()
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6, 8]
    for name in ("model.safetensors", "optimizer.safetensors", "train_state.json", "config.json"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "train_state.json").read_text())["step"] == 8


def test_ctrl_c_inside_a_step_saves_and_resume_is_bit_for_bit(uninterrupted, tmp_path):
    expected, final_weights, _ = uninterrupted
    model = make_model()
    # 2 micro-batches per step: call 9 is the first micro-batch of step 5 (4 steps completed)
    with pytest.raises(TrainingInterrupted) as caught:
        train(model, FailAt(9, KeyboardInterrupt()), random_batches, config(), run_dir=tmp_path, eval_fn=held_out,
              stage="pretrain")
    assert caught.value.step == 4
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 4

    resumed_model = make_model()
    resumed = train(resumed_model, lm_loss, random_batches, config(), run_dir=tmp_path, eval_fn=held_out,
                    stage="pretrain", resume=True)
    assert resumed.losses() == expected.losses()  # exact equality, over the whole run: same floats
    for name, value in weights(resumed_model).items():
        np.testing.assert_array_equal(value, final_weights[name], err_msg=name)
    all_losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert all_losses == expected.losses()


def test_a_crash_resumes_from_the_last_periodic_checkpoint(uninterrupted, tmp_path):
    expected, final_weights, _ = uninterrupted
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(make_model(), FailAt(12, RuntimeError("disk on fire")), random_batches, config(save_steps=3),
              run_dir=tmp_path, stage="pretrain")
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 3
    model = make_model()
    resumed = train(model, lm_loss, random_batches, config(save_steps=3), run_dir=tmp_path, stage="pretrain",
                    resume=True)
    assert resumed.losses() == expected.losses()  # the history covers the whole run, before the resume too
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 9))  # rows past the checkpoint were dropped
    for name, value in weights(model).items():
        np.testing.assert_array_equal(value, final_weights[name], err_msg=name)


def test_a_real_sigint_finishes_the_step_then_saves(tmp_path):
    model = make_model()
    handler_before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `nohup ... &`
    with pytest.raises(TrainingInterrupted) as caught:
        train(model, FailAt(5, "sigint"), random_batches, config(), run_dir=tmp_path, stage="pretrain")
    assert caught.value.step == 3  # the signal arrived during step 3, which completed first
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler_before  # the loop puts the caller's handler back


def test_sigterm_finishes_the_step_then_saves(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as caught:
        train(make_model(), FailAt(5, "sigterm"), random_batches, config(), run_dir=tmp_path, stage="pretrain")
    assert caught.value.step == 3
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before


class ClosedPipe:
    """A stream like stdout/stderr piped into a reader that has gone away."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_output_to_a_closed_pipe_never_stops_a_run(tmp_path, monkeypatch):
    """The bar, the Ctrl-C message and a printing log callback all fail: the run still finishes its
    step after Ctrl-C and saves it."""
    monkeypatch.setattr("sys.stderr", ClosedPipe())

    def print_to_closed_pipe(row):
        raise BrokenPipeError(32, "Broken pipe")

    step_kind = SupervisedStep(make_model(), FailAt(5, "sigint"), random_batches, config(disable_tqdm=False))
    loop = TrainingLoop(step_kind, config(disable_tqdm=False), run_dir=tmp_path, stage="pretrain",
                        log=print_to_closed_pipe)
    with pytest.raises(TrainingInterrupted) as caught:
        loop.fit()
    assert caught.value.step == 3
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 3
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"at step 6 .*last good checkpoint \(step 4\)"):
        train(make_model(), FailAt(11, "nan"), random_batches, config(save_steps=2), run_dir=tmp_path / "nan",
              stage="pretrain")
    assert json.loads((tmp_path / "nan" / "train_state.json").read_text())["step"] == 4
    # the same run stopped by Ctrl-C during step 5 saves the weights after 4 good steps: they must match
    with pytest.raises(TrainingInterrupted):
        train(make_model(), FailAt(9, KeyboardInterrupt()), random_batches, config(save_steps=2),
              run_dir=tmp_path / "ctrl_c", stage="pretrain")
    kept = load_safetensors(tmp_path / "nan" / "model.safetensors")
    good = load_safetensors(tmp_path / "ctrl_c" / "model.safetensors")
    assert kept.keys() == good.keys()
    for name in kept:
        np.testing.assert_array_equal(kept[name], good[name], err_msg=name)


def test_gradient_accumulation_equals_the_big_batch_gradient():
    rng = np.random.default_rng(0)
    big = rng.integers(0, VOCAB, size=(6, BLOCK + 1))
    targets = big[:, 1:].copy()
    targets[0, :5] = -100  # unequal token counts per micro-batch
    targets[3, :2] = -100

    def masked_loss(model, batch):
        inputs, batch_targets = batch
        logits = model(inputs)
        return F.cross_entropy(logits, batch_targets), int((batch_targets != -100).sum())

    def run(splits):
        model = make_model(dropout=0.0, dtype="float64")
        optimizer = SGD(model.parameters(), lr=0.5)
        pieces = np.split(np.arange(6), splits)

        def batches(_rng):
            while True:
                for rows in pieces:
                    yield big[rows, :-1], targets[rows]

        cfg = TrainConfig(max_steps=1, gradient_accumulation_steps=len(pieces), max_grad_norm=0.0,
                          lr_scheduler_type="constant", learning_rate=0.5, warmup_steps=0, eval_steps=0,
                          disable_tqdm=True)
        train(model, masked_loss, batches, cfg, optimizer=optimizer)
        return weights(model)

    one_batch, accumulated = run(1), run(3)
    for name in one_batch:
        np.testing.assert_allclose(accumulated[name], one_batch[name], rtol=1e-10, atol=1e-12, err_msg=name)
    assert any(not np.array_equal(one_batch[k], make_model(0.0, "float64").state_dict()[k]) for k in one_batch)


def test_resume_refuses_changed_settings_and_missing_checkpoints(uninterrupted, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(make_model(), lm_loss, random_batches, config(), run_dir=tmp_path, stage="pretrain", resume=True)
    _, _, run_dir = uninterrupted
    with pytest.raises(ValueError, match="learning_rate"):
        Trainer(make_model(), lm_loss, random_batches, config(learning_rate=1.0), run_dir=run_dir,
                stage="pretrain")._load()
    with pytest.raises(ValueError, match="stage"):
        Trainer(make_model(), lm_loss, random_batches, config(), run_dir=run_dir, stage="sft")._load()


def test_train_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown keys \['lr'\].*valid keys"):
        TrainConfig.from_dict({"lr": 1e-3})
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        TrainConfig(gradient_accumulation_steps=0)
    assert TrainConfig.from_dict(TrainConfig(learning_rate=0.5).to_dict()) == TrainConfig(learning_rate=0.5)
