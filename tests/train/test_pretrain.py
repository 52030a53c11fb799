"""Pre-training: the pipeline's files and numbers, held-out loss against an independent computation,
document split, and one step of each objective (causal / masked LM / span corruption)."""
import json
import math

import numpy as np
import pytest

from minifm.data import tinyworld
from minifm.runs import load_run
from minifm.train.config import TrainConfig
from minifm.train.pretrain import (
    CausalLMObjective, PretrainConfig, build_model, make_objective, pack, run_pretraining,
    split_documents, train_tokenizer,
)


@pytest.fixture(scope="module")
def texts():
    return tinyworld.clean_corpus(size_bytes=40_000, seed=1)


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts, 320)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, texts, tokenizer):
    run_dir = tmp_path_factory.mktemp("pretrain")
    config = PretrainConfig(block_size=32, n_layer=1, n_head=2, n_embd=32, eval_batches=2, val_fraction=0.1)
    train_config = TrainConfig(max_steps=12, per_device_train_batch_size=8, learning_rate=5e-3, warmup_steps=2,
                               eval_steps=6, disable_tqdm=True)
    summary = run_pretraining(run_dir, config, train_config, tokenizer=tokenizer, texts=texts, log=lambda *a: None)
    return summary, run_dir, config, train_config


def test_pipeline_writes_the_run_files_and_consistent_numbers(pretrained):
    summary, run_dir, _, _ = pretrained
    for name in ("config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json", "metrics.jsonl",
                 "loss_curve.png", "train_state.json", "pretrain_summary.json"):
        assert (run_dir / name).stat().st_size > 0, name
    assert summary["steps"] == 12
    assert math.isclose(summary["val_ppl"], math.exp(summary["val_loss"]), rel_tol=1e-12)
    assert summary["final_train_loss"] < summary["first_loss"]
    assert summary["first_loss"] == pytest.approx(math.log(summary["vocab_size"]), abs=0.5)  # near-uniform start
    on_disk = json.loads((run_dir / "pretrain_summary.json").read_text())
    assert on_disk["val_loss"] == summary["val_loss"]


def test_load_run_restores_the_trained_model(pretrained):
    summary, run_dir, _, _ = pretrained
    model, tokenizer = load_run(run_dir)
    ids = np.array([tokenizer.encode("Mara lives in")])
    np.testing.assert_array_equal(model(ids).data, summary["model"](ids).data)
    assert type(model).__name__ == "GPT"


def test_held_out_loss_matches_an_independent_cross_entropy(pretrained, texts, tokenizer):
    summary, _, config, train_config = pretrained
    eos = tokenizer.special_tokens["<|endoftext|>"]
    _, val_docs = split_documents(tokenizer.encode_batch(texts), config.val_fraction, train_config.seed)
    windows = pack(val_docs, config.block_size, eos, "held-out")[:train_config.per_device_train_batch_size * config.eval_batches]
    logits = summary["model"](windows[:, :-1]).data.astype(np.float64)  # (n, T, V)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    targets = windows[:, 1:]
    expected = -np.take_along_axis(log_probs, targets[..., None], axis=-1).mean()
    assert summary["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_split_documents_is_a_disjoint_cover():
    docs = [[i, i + 1] for i in range(50)]
    train, val = split_documents(docs, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert sorted(map(tuple, train + val)) == sorted(map(tuple, docs))
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_documents([[1]], 0.5, seed=0)


@pytest.mark.parametrize("arch", ["bert", "t5"])
def test_masked_lm_and_span_corruption_objectives_train_and_evaluate(arch, texts, tokenizer):
    config = PretrainConfig(arch=arch, block_size=32, n_layer=1, n_head=2, n_embd=32, eval_batches=1)
    eos = tokenizer.special_tokens["<|endoftext|>"]
    windows = pack(tokenizer.encode_batch(texts[:20]), 32, eos, "training")
    objective = make_objective(config, windows, windows, 4, tokenizer)
    model = build_model(config, tokenizer.vocab_size, tokenizer.special_tokens)
    batch = next(objective.batches(np.random.default_rng(0)))
    loss, n_tokens = objective.loss(model, batch)
    if arch == "bert":
        inputs, labels = batch
        assert n_tokens == int((labels != -100).sum()) > 0
        originals = np.where(labels != -100, labels, inputs)  # undo the masking: each row is a real window
        assert all(any(np.array_equal(row, w) for w in windows[:, :-1]) for row in originals)
    else:
        encoder_ids, targets = batch
        assert n_tokens == targets.size
        sentinel = tokenizer.special_tokens["<|extra_0|>"]
        assert np.all(targets[:, 0] == sentinel) and np.all((encoder_ids == sentinel).sum(axis=1) == 1)
    assert abs(float(loss.data) - math.log(tokenizer.vocab_size)) < 1.0
    loss.backward()
    assert any(p.grad is not None and np.abs(p.grad).sum() > 0 for p in model.parameters())
    first, second = objective.evaluate(model), objective.evaluate(model)
    assert first == second  # the held-out masking / corruption is fixed


def test_causal_batches_cover_every_window_once_per_epoch():
    windows = np.arange(10 * 5).reshape(10, 5)
    objective = CausalLMObjective(windows, windows, batch_size=2, eval_batches=1)
    stream = objective.batches(np.random.default_rng(0))
    seen = [next(stream)[0][:, 0] for _ in range(5)]
    assert sorted(np.concatenate(seen).tolist()) == windows[:, 0].tolist()


def test_pretrain_config_rejects_unknown_keys_and_bad_arch():
    with pytest.raises(ValueError, match=r"PretrainConfig: unknown keys \['layers'\]"):
        PretrainConfig.from_dict({"layers": 3})
    with pytest.raises(ValueError, match="arch"):
        PretrainConfig(arch="rnn")
