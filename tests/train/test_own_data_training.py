"""SFT and DPO on your own rows (minifm.train.sft.train_sft_on_rows, minifm.train.dpo.train_dpo_on_rows) on
a tiny GPT: held-out metrics equal their definitions whatever the batching, batches padded to their longest
row give the same loss, evaluation before / during / after training lands in metrics.jsonl and the
summary, max_length is cut to the context, a resumed run is bit-for-bit the uninterrupted one, and a
resume on other data is refused."""
import json
import math

import numpy as np
import pytest

from minifm.autograd.grad_mode import no_grad
from minifm.data.batches import IGNORE_INDEX, collate_sft
from minifm.data.conversations import encode_preference_rows, encode_sft_rows, padding_id
from minifm.data.sources import read_jsonl_records
from minifm.models import GPT, GPTConfig
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS
from minifm.train import dpo, sft
from minifm.train.loop import TrainingInterrupted, read_metrics


@pytest.fixture(scope="module")
def tokenizer():
    """One id per byte plus minifm's special tokens: instant, and minifm's chat template."""
    return BPETokenizer(np.zeros((0, 2), dtype=np.int64), special_tokens=DEFAULT_SPECIAL_TOKENS)


def tiny_gpt(tokenizer, seed=0, block_size=64):
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16,
                         seed=seed))


def rows_file(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return read_jsonl_records(path)


def sft_rows(tmp_path, n=12, name="sft.jsonl"):
    return rows_file(tmp_path / name, [{"messages": [{"role": "user", "content": f"{i}+1?"},
                                                     {"role": "assistant", "content": f"{i + 1}"}]} for i in range(n)])


def pair_rows(tmp_path, n=10):
    return rows_file(tmp_path / "pairs.jsonl", [{"prompt": [{"role": "user", "content": f"{i}+1?"}],
                                                 "chosen": [{"role": "assistant", "content": f"{i + 1}"}],
                                                 "rejected": [{"role": "assistant", "content": f"{i + 2}!"}]}
                                                for i in range(n)])


def config(**overrides):
    values = dict(sft.OWN_DATA_DEFAULTS, learning_rate=3e-3, max_steps=6, per_device_train_batch_size=4,
                  max_length=48, eval_steps=3, disable_tqdm=True)
    values.update(overrides)
    return sft.SFTConfig(**values)


def weights(model):
    return {name: value.copy() for name, value in model.state_dict().items()}


def test_held_out_metrics_are_their_definitions_whatever_the_batch(tmp_path, tokenizer):
    examples, _ = encode_sft_rows(tokenizer, sft_rows(tmp_path, n=5), max_length=48)
    model = tiny_gpt(tokenizer)
    pad = padding_id(tokenizer)
    total, count, correct = 0.0, 0, 0
    with no_grad():
        for ids, labels in examples:  # one row at a time, no padding
            logits = model(ids[None, :-1]).data[0]  # (T-1, V)
            targets = labels[1:]
            keep = targets != IGNORE_INDEX
            log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            total -= log_probs[np.flatnonzero(keep), targets[keep]].sum()
            count += int(keep.sum())
            correct += int((logits.argmax(-1)[keep] == targets[keep]).sum())
    for batch_size in (1, 2, 5):
        metrics = sft.evaluate_sft(model, examples, pad, max_length=48, batch_size=batch_size)
        assert metrics["eval_loss"] == pytest.approx(total / count, rel=1e-5)
        assert metrics["eval_mean_token_accuracy"] == correct / count


def test_padding_to_the_longest_row_gives_the_same_loss(tmp_path, tokenizer):
    examples, _ = encode_sft_rows(tokenizer, sft_rows(tmp_path, n=4), max_length=48)
    model = tiny_gpt(tokenizer)
    short = collate_sft(examples, 48, padding_id(tokenizer), pad_to_longest=True)
    full = collate_sft(examples, 48, padding_id(tokenizer))
    assert short[0].shape[1] == max(ids.size for ids, _ in examples) - 1 < full[0].shape[1] == 48
    with no_grad():
        assert sft.sft_loss(model, *short).item() == pytest.approx(sft.sft_loss(model, *full).item(), rel=1e-6)


def test_sft_on_rows_evaluates_before_during_and_after(tmp_path, tokenizer):
    model = tiny_gpt(tokenizer)
    train_rows = sft_rows(tmp_path, n=12)
    eval_rows = sft_rows(tmp_path, n=3, name="held.jsonl")
    lines = []
    summary = sft.train_sft_on_rows(model, tokenizer, train_rows, eval_rows, config(max_steps=12, eval_steps=4),
                                    run_dir=tmp_path / "run", source="sft.jsonl", log=lines.append)
    assert summary["train_rows"] == 12 and summary["eval_rows"] == 3 and summary["steps"] == 12
    assert summary["eval"]["eval_loss"] < summary["eval_before"]["eval_loss"]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [row["step"] for row in rows if "eval_loss" in row] == [4, 8, 12]
    assert rows[-1]["eval_loss"] == summary["eval"]["eval_loss"]
    assert lines[0] == "sft: 12 training rows, 3 held out; 12 steps of 4 rows = 4.0 epochs"
    assert summary["seconds_per_step"] > 0 and summary["tokens"] > 0


def test_max_length_is_cut_to_the_context(tmp_path, tokenizer):
    model = tiny_gpt(tokenizer, block_size=16)
    lines = []
    summary = sft.train_sft_on_rows(model, tokenizer, sft_rows(tmp_path, n=4), (),
                                    config(max_length=1024, max_steps=1), log=lines.append)
    assert "max_length 1024 is longer than the model's context; using 16" in lines
    assert summary["config"]["max_length"] == 16 and summary["eval"] is None


def test_an_interrupted_sft_run_resumes_bit_for_bit_and_refuses_other_data(tmp_path, tokenizer, monkeypatch):
    rows, held = sft_rows(tmp_path, n=10), sft_rows(tmp_path, n=2, name="held.jsonl")
    full_model = tiny_gpt(tokenizer)
    full = sft.train_sft_on_rows(full_model, tokenizer, rows, held, config(), run_dir=tmp_path / "full",
                                 log=lambda line: None)
    real_loss, calls = sft.sft_loss, []

    def interrupted_at_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(sft, "sft_loss", interrupted_at_step_4)
    with pytest.raises(TrainingInterrupted) as caught:
        sft.train_sft_on_rows(tiny_gpt(tokenizer), tokenizer, rows, held, config(), run_dir=tmp_path / "cut",
                              log=lambda line: None)
    assert caught.value.step == 3
    monkeypatch.setattr(sft, "sft_loss", real_loss)
    with pytest.raises(ValueError, match="resume: the data differ"):
        sft.train_sft_on_rows(tiny_gpt(tokenizer), tokenizer, rows[:-1], held, config(), run_dir=tmp_path / "cut",
                              resume=True, log=lambda line: None)
    resumed_model = tiny_gpt(tokenizer, seed=5)  # other initial weights: the checkpoint replaces them
    resumed = sft.train_sft_on_rows(resumed_model, tokenizer, rows, held, config(), run_dir=tmp_path / "cut",
                                    resume=True, log=lambda line: None)
    assert resumed["eval_before"] == full["eval_before"] and resumed["eval"] == full["eval"]
    for name, value in weights(resumed_model).items():
        np.testing.assert_array_equal(value, weights(full_model)[name], err_msg=name)
    losses = [[row["loss"] for row in read_metrics(tmp_path / name / "metrics.jsonl") if "loss" in row]
              for name in ("full", "cut")]
    assert losses[0] == losses[1]


def test_dpo_on_rows_starts_at_log_2_and_reports_held_out_preferences(tmp_path, tokenizer):
    policy = tiny_gpt(tokenizer, seed=3)
    rows = pair_rows(tmp_path)
    train_rows, held = rows[:8], rows[8:]
    dpo_config = dpo.DPOConfig(**dict(dpo.OWN_DATA_DEFAULTS, learning_rate=1e-2, max_steps=8,
                                      per_device_train_batch_size=4, eval_steps=4, disable_tqdm=True))
    summary = dpo.train_dpo_on_rows(policy, tokenizer, train_rows, held, dpo_config, run_dir=tmp_path / "dpo",
                                    log=lambda line: None)
    before = summary["eval_before"]
    assert before["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)  # the policy is the reference
    assert before["eval_rewards_margin"] == 0.0 and before["eval_rewards_accuracy"] == 0.0
    after = summary["eval"]
    assert after["eval_loss"] < math.log(2) and after["eval_rewards_margin"] > 0  # the held-out pairs learned
    assert after["eval_rewards_margin"] == pytest.approx(after["eval_rewards_chosen"] - after["eval_rewards_rejected"])
    evaluations = [row for row in read_metrics(tmp_path / "dpo" / "metrics.jsonl") if "eval_loss" in row]
    assert [row["step"] for row in evaluations] == [4, 8] and evaluations[-1]["eval_loss"] == after["eval_loss"]


def test_evaluate_dpo_is_the_mean_of_the_pairs(tmp_path, tokenizer):
    policy, reference = tiny_gpt(tokenizer, seed=1), tiny_gpt(tokenizer, seed=2)
    pairs, _ = encode_preference_rows(tokenizer, pair_rows(tmp_path, n=5), max_length=48)
    pad = padding_id(tokenizer)
    dpo.precompute_reference(reference, pairs, pad, batch_size=2)
    config = dpo.DPOConfig(beta=0.5)
    metrics = dpo.evaluate_dpo(policy, pairs, config, pad, batch_size=2)
    with no_grad():
        chosen, rejected = dpo.pair_logps(policy, pairs, pad)
    logits = (chosen.data - rejected.data) - np.array([p["ref_chosen_logps"] - p["ref_rejected_logps"] for p in pairs])
    expected_loss = np.mean(-np.log(1 / (1 + np.exp(-0.5 * logits))))
    assert metrics["eval_loss"] == pytest.approx(expected_loss, rel=1e-5)
    margins = 0.5 * logits
    assert metrics["eval_rewards_margin"] == pytest.approx(margins.mean(), rel=1e-5, abs=1e-7)
    assert metrics["eval_rewards_accuracy"] == np.mean(margins > 0)


def test_an_interrupted_dpo_run_resumes_bit_for_bit(tmp_path, tokenizer, monkeypatch):
    rows = pair_rows(tmp_path)
    dpo_config = dpo.DPOConfig(**dict(dpo.OWN_DATA_DEFAULTS, learning_rate=1e-2, max_steps=5,
                                      per_device_train_batch_size=3, eval_steps=2, save_steps=1, disable_tqdm=True))

    def fit(run_dir, resume=False, seed=3):
        policy = tiny_gpt(tokenizer, seed=seed)
        reference = tiny_gpt(tokenizer, seed=3)  # the reference is the starting policy, also after a resume
        summary = dpo.train_dpo_on_rows(policy, tokenizer, rows[:8], rows[8:], dpo_config, ref_policy=reference,
                                        run_dir=run_dir, resume=resume, log=lambda line: None)
        return policy, summary

    full_policy, full = fit(tmp_path / "full")
    real_loss_fn = dpo.dpo_loss_fn

    def interrupting_loss_fn(*args):
        loss_fn, calls = real_loss_fn(*args), []

        def wrapped(model, batch):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return loss_fn(model, batch)

        wrapped.last_stats = {}
        return wrapped

    monkeypatch.setattr(dpo, "dpo_loss_fn", interrupting_loss_fn)
    with pytest.raises(TrainingInterrupted):
        fit(tmp_path / "cut")
    monkeypatch.setattr(dpo, "dpo_loss_fn", real_loss_fn)
    resumed_policy, resumed = fit(tmp_path / "cut", resume=True, seed=9)
    assert resumed["eval"] == full["eval"] and resumed["eval_before"] == full["eval_before"]
    for name, value in weights(resumed_policy).items():
        np.testing.assert_array_equal(value, weights(full_policy)[name], err_msg=name)
