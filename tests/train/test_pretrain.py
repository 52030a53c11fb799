"""Pre-training: the pipeline's files and numbers, held-out loss against an independent computation,
the held-out split (whole documents, or the tail of the tokens when there are few), packing errors that
say what to change, and one step of each objective (causal / masked LM / span corruption)."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifm.data import tinyworld
from minifm.runs import load_run
from minifm.train.config import TrainConfig
from minifm.train.pretrain import (
    DOCUMENT_SPLIT_MIN_DOCUMENTS, CausalLMObjective, PretrainConfig, build_model, make_objective, pack, pack_split,
    run_pretraining, split_documents, train_tokenizer,
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
    split = split_documents(tokenizer.encode_batch(texts), config.val_fraction, train_config.seed)
    assert split.kind == "document" and summary["held_out_split"] == "document"
    windows = pack(split.held_out, config.block_size, eos, "held-out")[:train_config.per_device_train_batch_size * config.eval_batches]
    logits = summary["model"](windows[:, :-1]).data.astype(np.float64)  # (n, T, V)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    targets = windows[:, 1:]
    expected = -np.take_along_axis(log_probs, targets[..., None], axis=-1).mean()
    assert summary["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_split_documents_is_a_disjoint_cover():
    docs = [[i, i + 1] for i in range(50)]
    train, val, kind, description = split_documents(docs, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40 and kind == "document"
    assert sorted(map(tuple, train + val)) == sorted(map(tuple, docs))
    assert description == "held out 10 of 50 documents (20.0%), chosen at random (a document-level split)"
    assert len(split_documents(docs[:20], 0.99, seed=0).train) == 1      # never all documents held out


def test_one_document_holds_out_the_tail_of_its_tokens():
    split = split_documents([list(range(100))], 0.1, seed=0)
    assert split.kind == "token"
    assert split.train == [list(range(90))] and split.held_out == [list(range(90, 100))]
    assert split.description == ("held out the last 10 of 100 tokens (10.0%), a token-level split since 1 document "
                                 "is fewer than 20")
    assert split_documents([[1, 2]], 0.01, seed=0).held_out == [[2]]       # at least one token held out ...
    assert split_documents([[1, 2]], 0.99, seed=0).train == [[1]]          # ... and at least one kept
    with pytest.raises(ValueError, match="at least 2 tokens to hold some out, got 1 in 1 document"):
        split_documents([[1]], 0.5, seed=0)
    with pytest.raises(ValueError, match="got 0 in 0 documents"):
        split_documents([], 0.5, seed=0)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=40), val_fraction=st.floats(0.01, 0.99),
       seed=st.integers(0, 3))
def test_split_documents_properties(lengths, val_fraction, seed):
    starts = np.cumsum([0] + lengths)
    docs = [list(range(a, b)) for a, b in zip(starts[:-1], starts[1:])]
    n_tokens = int(starts[-1])
    if n_tokens < 2:
        with pytest.raises(ValueError, match="at least 2 tokens"):
            split_documents(docs, val_fraction, seed)
        return
    split = split_documents(docs, val_fraction, seed)
    train_tokens = [t for d in split.train for t in d]
    held_tokens = [t for d in split.held_out for t in d]
    assert train_tokens and held_tokens
    if len(docs) >= DOCUMENT_SPLIT_MIN_DOCUMENTS:       # whole documents, at random
        assert split.kind == "document"
        assert sorted(map(tuple, split.train + split.held_out)) == sorted(map(tuple, docs))
        assert len(split.held_out) == min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    else:                                               # the tail of the token stream, in order
        assert split.kind == "token"
        assert train_tokens + held_tokens == list(range(n_tokens))
        assert len(held_tokens) == min(n_tokens - 1, max(1, round(n_tokens * val_fraction)))
        assert len(split.train) + len(split.held_out) in (len(docs), len(docs) + 1)   # at most one document cut


def test_pack_split_says_what_to_change_with_the_numbers():
    config = PretrainConfig(block_size=32, val_fraction=0.05)
    split = split_documents([list(range(400))], config.val_fraction, seed=0)      # 20 tokens held out
    with pytest.raises(ValueError, match=r"the held-out split has 21 tokens, fewer than one window of block_size \+ 1 "
                                         r"= 33: raise val_fraction \(now 0\.05; about 0\.09 would do\), lower "
                                         r"block_size to at most 20, or add text \(the corpus has 402 tokens\)"):
        pack_split(split, config, batch_size=2, eos_id=0)
    config = PretrainConfig(block_size=32, val_fraction=0.2)
    split = split_documents([list(range(400))], config.val_fraction, seed=0)
    with pytest.raises(ValueError, match=r"the training split has 321 tokens, which pack into 10 windows of "
                                         r"block_size \+ 1 = 33, fewer than one batch of per_device_train_batch_size "
                                         r"= 16: .* \(one batch needs 513 training tokens\)"):
        pack_split(split, config, batch_size=16, eos_id=0)
    train_windows, val_windows = pack_split(split, config, batch_size=8, eos_id=0)
    assert train_windows.shape == (10, 33) and val_windows.shape == (2, 33)
    assert val_windows[0, 0] == 320                                             # the held-out tail of the text
    tiny = split_documents([list(range(20))], 0.5, seed=0)
    with pytest.raises(ValueError, match=r"has 11 tokens, .*: lower block_size to at most 10 or add text"):
        pack_split(tiny, config, batch_size=1, eos_id=0)                       # no val_fraction would do


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


@pytest.mark.parametrize("arch", ["gpt", "bert", "t5"])
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_build_model_gives_every_architecture_the_configured_positions(arch, pos, tokenizer):
    config = PretrainConfig(arch=arch, pos=pos, block_size=16, n_layer=2, n_head=2, n_embd=16)
    model = build_model(config, tokenizer.vocab_size, tokenizer.special_tokens)
    assert model.config.pos == pos
    tables = [name for name, _ in model.named_parameters() if "wpe" in name]
    assert bool(tables) == (pos == "learned")    # an absolute position table exists only for learned positions


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
