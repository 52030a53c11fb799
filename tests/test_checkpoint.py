"""Checkpoints: exact round trip, clear errors for corrupt or mismatched files, crash-safe saving."""
import contextlib
import json
import os
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors import safe_open

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


# ---------------------------------------------------------------------------- deterministic bytes
def checkpoint_bytes(directory):
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_identical_weights_give_identical_bytes_and_the_safetensors_library_reads_them(tmp_path):
    model, optimizer, _ = trained()
    ckpt.save_checkpoint(tmp_path / "a", model, optimizer, train_state={"step": 2})
    ckpt.save_checkpoint(tmp_path / "b", model, optimizer, train_state={"step": 2})
    copy, copy_optimizer, _ = trained()  # the same run made again, separately
    ckpt.save_checkpoint(tmp_path / "c", copy, copy_optimizer, train_state={"step": 2})
    assert checkpoint_bytes(tmp_path / "a") == checkpoint_bytes(tmp_path / "b") == checkpoint_bytes(tmp_path / "c")
    ckpt.save_checkpoint(tmp_path / "a", model, optimizer, train_state={"step": 2})  # saved again over itself
    assert checkpoint_bytes(tmp_path / "a") == checkpoint_bytes(tmp_path / "b")

    loaded = safetensors.numpy.load_file(tmp_path / "a" / "model.safetensors")
    assert loaded.keys() == model.state_dict().keys()
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
        assert loaded[name].dtype == array.dtype
    with safe_open(tmp_path / "a" / "model.safetensors", "np") as handle:
        assert handle.metadata() == {"format": "minifm", "kind": "model"}
    moments = safetensors.numpy.load_file(tmp_path / "a" / "optimizer.safetensors")
    first = next(iter(model.parameters()))
    np.testing.assert_array_equal(moments["state.0.exp_avg"], optimizer.state[first]["exp_avg"])


def test_bytes_are_the_same_in_another_process(tmp_path):
    """The header order must not depend on the process (hash seeds, dict order of the metadata)."""
    script = (
        "import sys, numpy as np; import minifm.checkpoint as c\n"
        "c.save_safetensors(sys.argv[1], {'b': np.arange(6, dtype=np.float32).reshape(2, 3), 'a': np.ones(2, np.int64),"
        " 'c': np.zeros(3, np.float16)}, metadata={'zeta': '1', 'alpha': '2', 'kind': 'model'})\n"
    )
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{seed}.safetensors")], check=True, timeout=120,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    ckpt.save_safetensors(tmp_path / "here.safetensors", {"c": np.zeros(3, np.float16), "a": np.ones(2, np.int64),
                          "b": np.arange(6, dtype=np.float32).reshape(2, 3)},
                          metadata={"kind": "model", "alpha": "2", "zeta": "1"})
    data = [(tmp_path / name).read_bytes() for name in ("1.safetensors", "2.safetensors", "here.safetensors")]
    assert data[0] == data[1] == data[2]
    (size,) = struct.unpack("<Q", data[0][:8])
    header = data[0][8:8 + size].rstrip(b" ")
    assert header == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":")).encode()
    assert (8 + size) % 8 == 0  # the data starts 8-byte aligned


safetensors_dtypes = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                                      np.uint8, np.uint16, np.uint32, np.uint64, np.bool_])


@given(arrays=st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda name: name != "__metadata__"),
    safetensors_dtypes.flatmap(lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                                                max_side=3))),
    max_size=5),
    metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    order=st.randoms())
def test_safetensors_bytes_are_the_librarys_format_whatever_the_insertion_order(arrays, metadata, order):
    data = ckpt.safetensors_bytes(arrays, metadata)
    loaded = safetensors.numpy.load(data)
    assert loaded.keys() == arrays.keys()
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
    assert ckpt._parse("drawn", data)[1] == metadata
    names, keys = list(arrays), list(metadata)
    order.shuffle(names)
    order.shuffle(keys)
    assert ckpt.safetensors_bytes({n: arrays[n] for n in names}, {k: metadata[k] for k in keys}) == data
    big_endian = {name: array.astype(array.dtype.newbyteorder(">")) for name, array in arrays.items()}
    assert ckpt.safetensors_bytes(big_endian, metadata) == data


# ---------------------------------------------------------------------------- file modes (umask)
@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    model, optimizer, _ = trained()
    with umask(mask):
        ckpt.save_checkpoint(tmp_path / "run", model, optimizer, train_state={"step": 2})
        ckpt.save_checkpoint(tmp_path / "run", model, optimizer, train_state={"step": 2})  # over an existing one
        ckpt.atomic_write_bytes(tmp_path / "a.bin", b"x")
        ckpt.atomic_write_json(tmp_path / "a.json", {"x": 1})
        ckpt.save_safetensors(tmp_path / "a.safetensors", {"x": np.ones(2)})
        assert ckpt._umask() == mask  # reading it did not change it
    paths = list((tmp_path / "run").iterdir()) + [tmp_path / n for n in ("a.bin", "a.json", "a.safetensors")]
    assert len(paths) == 7
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name


def test_the_umask_fallback_reads_it_without_changing_it(monkeypatch):
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path) == "/proc/self/status":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    with umask(0o027):
        assert ckpt._umask() == 0o027
        assert ckpt._umask() == 0o027


# ---------------------------------------------------------------------------- stale temporaries
def dead_pid():
    """The pid of a process that has ended (and been reaped)."""
    result = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                            check=True, timeout=60)
    return int(result.stdout)


def test_stale_temporaries_of_our_naming_are_removed_by_the_next_save(tmp_path):
    gone = dead_pid()
    stale = [f".model.safetensors.{gone}-abcd_123.tmp", ".optimizer.safetensors.x1y2z3_9.tmp",  # dead pid, no pid
             f".value.safetensors.{gone}-00000000.tmp", ".report.md.abcdefgh.tmp"]
    kept = [f".model.safetensors.{os.getpid()}-abcdefgh.tmp",   # this process: may be mid-write in another thread
            f".model.safetensors.{os.getppid()}-abcdefgh.tmp",  # a running process
            ".model.safetensors.tmp", "notes.tmp", "model.safetensors.abcdefgh.tmp",  # not our naming
            ".model.safetensors.ABCDEFGH.tmp", ".model.safetensors.abcdefg.tmp", ".x.abcdefgh.tmp.bak"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()  # a directory is never ours
    model, optimizer, _ = trained()
    ckpt.save_checkpoint(tmp_path, model, optimizer)
    names = {path.name for path in tmp_path.iterdir()}
    assert names == set(kept) | {".dir.abcdefgh.tmp", "model.safetensors", "optimizer.safetensors", "config.json",
                                 "train_state.json"}


def test_an_atomic_write_removes_stale_temporaries_in_its_directory(tmp_path):
    (tmp_path / ".tokenizer.json.abcdefgh.tmp").write_bytes(b"x" * 1000)
    (tmp_path / f".data.txt.{dead_pid()}-abcdefgh.tmp").write_bytes(b"x" * 1000)
    ckpt.atomic_write_bytes(tmp_path / "report.md", b"# report\n")
    assert [path.name for path in tmp_path.iterdir()] == ["report.md"]
    assert ckpt.remove_stale_temporaries(tmp_path / "absent") == []


def test_temporaries_are_named_with_the_pid_and_match_the_stale_pattern(tmp_path):
    temporary = ckpt._write_temporary(tmp_path / "model.safetensors", b"data")
    match = ckpt._TEMPORARY_NAME.fullmatch(temporary.name)
    assert match and match["target"] == "model.safetensors" and int(match["pid"]) == os.getpid()
    assert not ckpt._process_gone(os.getpid()) and ckpt._process_gone(dead_pid()) and ckpt._process_gone(None)
