"""Checkpoints: exact round trip, clear errors for corrupt or mismatched files, crash-safe saving."""
import json
import struct

import numpy as np
import pytest

import minifm.checkpoint as ckpt
from minifm.models import GPT, GPTConfig
from minifm.optim import AdamW

CONFIG = dict(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.1)


def trained(seed=0, steps=2):
    model = GPT(GPTConfig(**CONFIG, seed=seed))
    optimizer = AdamW(model.parameters(), lr=1e-2)
    ids = np.random.default_rng(seed).integers(0, 13, size=(2, 8))
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(ids[:, :-1], ids[:, 1:]).backward()
        optimizer.step()
    return model, optimizer, ids


def continue_training(model, optimizer, ids, steps=3):
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_round_trip_is_exact_and_resume_continues_bit_for_bit(tmp_path):
    model, optimizer, ids = trained()
    ckpt.save_checkpoint(tmp_path, model, optimizer, train_state={"step": 2, "lr": 0.01, "data": [1, 2]})
    assert json.loads((tmp_path / "config.json").read_text()) == model.config.to_dict()
    fresh, fresh_optimizer, _ = trained(seed=5, steps=1)  # different weights, moments and rng
    state = ckpt.load_checkpoint(tmp_path, fresh, fresh_optimizer)
    assert state == {"step": 2, "lr": 0.01, "data": [1, 2]}
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    for p, q in zip(model.parameters(), fresh.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(optimizer.state[p][key], fresh_optimizer.state[q][key])
        assert optimizer.state[p]["step"] == fresh_optimizer.state[q]["step"] == 2
    assert fresh.rng.bit_generator.state == model.rng.bit_generator.state
    # dropout is on: identical continuations need identical weights, moments and RNG state
    assert continue_training(model, optimizer, ids) == continue_training(fresh, fresh_optimizer, ids)
    np.testing.assert_array_equal(model.wte.weight.data, fresh.wte.weight.data)


def test_safetensors_helpers_round_trip(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    ckpt.save_safetensors(tmp_path / "x.safetensors", arrays)
    loaded = ckpt.load_safetensors(tmp_path / "x.safetensors")
    assert loaded.keys() == arrays.keys()
    for key in arrays:
        np.testing.assert_array_equal(loaded[key], arrays[key])
        assert loaded[key].dtype == arrays[key].dtype


def test_truncated_file_is_reported(tmp_path):
    ckpt.save_safetensors(tmp_path / "x.safetensors", {"weight": np.ones((4, 4), dtype=np.float32)})
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(data[:-10])
    with pytest.raises(ckpt.CheckpointError, match=r"truncated.*'weight'.*\(4, 4\)"):
        ckpt.load_safetensors(tmp_path / "x.safetensors")
    (tmp_path / "x.safetensors").write_bytes(data[:5])
    with pytest.raises(ckpt.CheckpointError, match="truncated"):
        ckpt.load_safetensors(tmp_path / "x.safetensors")


def test_tampered_header_shape_is_reported(tmp_path):
    ckpt.save_safetensors(tmp_path / "x.safetensors", {"weight": np.ones((4, 4), dtype=np.float32)})
    data = (tmp_path / "x.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + size].replace(b"[4,4]", b"[4,5]")
    (tmp_path / "x.safetensors").write_bytes(data[:8] + header + data[8 + size:])
    with pytest.raises(ckpt.CheckpointError, match=r"'weight' declares shape \(4, 5\).*80 bytes.*64 bytes"):
        ckpt.load_safetensors(tmp_path / "x.safetensors")


def test_tampered_checkpoint_file_fails_the_hash_check(tmp_path):
    model, optimizer, _ = trained()
    ckpt.save_checkpoint(tmp_path, model, optimizer)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors: SHA-256 differs"):
        ckpt.load_checkpoint(tmp_path, GPT(GPTConfig(**CONFIG)))


def test_mismatched_config_or_shapes_are_named(tmp_path):
    model, optimizer, _ = trained()
    ckpt.save_checkpoint(tmp_path, model, optimizer)
    with pytest.raises(ckpt.CheckpointError, match=r"n_embd: checkpoint 8 vs model 16"):
        ckpt.load_checkpoint(tmp_path, GPT(GPTConfig(**{**CONFIG, "n_embd": 16})))
    # a model without a config reaches the per-key shape check
    other = GPT(GPTConfig(**{**CONFIG, "vocab_size": 14}))
    other.config = None
    with pytest.raises(ckpt.CheckpointError, match=r"'wte.weight' has shape \(13, 8\).*expects \(14, 8\)"):
        ckpt.load_checkpoint(tmp_path, other)
    wrong_dtype = GPT(GPTConfig(**{**CONFIG, "dtype": "float64"}))
    wrong_dtype.config = None
    with pytest.raises(ckpt.CheckpointError, match="dtype float32 in the checkpoint, the model uses float64"):
        ckpt.load_checkpoint(tmp_path, wrong_dtype)


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, optimizer, ids = trained()
    ckpt.save_checkpoint(tmp_path, model, optimizer, train_state={"step": 2})
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    continue_training(model, optimizer, ids, steps=1)
    calls = {"n": 0}
    real_write = ckpt._write_all

    def crash_midway(handle, data):
        calls["n"] += 1
        if calls["n"] == 2:  # the second file: write half of it, then fail
            handle.write(data[: len(data) // 2])
            raise OSError("disk full (simulated)")
        real_write(handle, data)

    monkeypatch.setattr(ckpt, "_write_all", crash_midway)
    with pytest.raises(OSError, match="simulated"):
        ckpt.save_checkpoint(tmp_path, model, optimizer, train_state={"step": 3})
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert after == before  # same files, same bytes, no temporary files left behind
    monkeypatch.setattr(ckpt, "_write_all", real_write)
    fresh = GPT(GPTConfig(**CONFIG))
    assert ckpt.load_checkpoint(tmp_path, fresh, AdamW(fresh.parameters(), lr=1e-2)) == {"step": 2}


def test_non_finite_weights_are_not_saved(tmp_path):
    model, optimizer, _ = trained()
    model.norm_f.weight.data[0] = np.nan
    with pytest.raises(FloatingPointError, match="'norm_f.weight'"):
        ckpt.save_checkpoint(tmp_path, model, optimizer)
    assert not (tmp_path / "model.safetensors").exists()


def test_atomic_json_and_missing_checkpoint(tmp_path):
    ckpt.atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    with pytest.raises(ValueError, match="NaN"):
        ckpt.atomic_write_json(tmp_path / "b.json", {"x": float("nan")})
    with pytest.raises(FileNotFoundError, match="train_state.json is missing"):
        ckpt.load_checkpoint(tmp_path / "none", GPT(GPTConfig(**CONFIG)))


def test_optimizer_without_saved_state_is_an_error(tmp_path):
    model, _, _ = trained()
    ckpt.save_checkpoint(tmp_path, model)
    with pytest.raises(ckpt.CheckpointError, match="no optimizer state"):
        ckpt.load_checkpoint(tmp_path, model, AdamW(model.parameters()))


def test_nothing_is_unpickled():
    source = open(ckpt.__file__).read()
    assert "pickle" not in source.replace("unpickled", "") and "np.load(" not in source
