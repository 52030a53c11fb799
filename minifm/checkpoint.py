"""Checkpoints: weights and optimizer state as safetensors, config and training state as JSON.

A checkpoint directory holds
    model.safetensors      name -> array, exactly model.state_dict()
    <name>.safetensors     the same for each further model passed as extra_models={name: model}
                           (PPO's value model beside its policy)
    optimizer.safetensors  "state.<param index>.<name>" -> moment arrays; the param groups and scalar
                           state (step counts) as JSON in the safetensors header metadata
    config.json            the config passed in, else model.config.to_dict()
    train_state.json       the caller's training state (step, schedule, data position, ...) plus a
                           "_checkpoint" record: model class and config, model.rng state, format
                           version and the SHA-256 of every file above.

Safety:
  * every file is written to a temporary file in the same directory, flushed and fsync'ed, then
    renamed over the old one (os.replace is atomic). All temporary files are written before the
    first rename, and train_state.json (the manifest) is renamed last, so an exception or crash
    while writing leaves the previous checkpoint untouched; a crash between the renames is caught at
    load time because the hashes no longer match the manifest;
  * loading checks the hashes, the header of each safetensors file (offsets, sizes, dtypes; a
    truncated file is named as such), that the saved config equals the model's (except seed,
    init_std and dropout, which do not change what the weights mean), and every name,
    shape and dtype against the model, with errors naming the key and both shapes;
  * non-finite weights are refused at save time (a NaN run must not overwrite a good checkpoint);
  * nothing is ever unpickled: safetensors and JSON only.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import safetensors.numpy

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.json"
# config fields that do not change the weights' meaning: a model built with another seed, init scale
# or dropout rate may load the checkpoint (e.g. fine-tuning with dropout on)
CONFIG_KEYS_NOT_COMPARED = ("seed", "init_std", "dropout")

_DTYPE_NAMES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
    "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_,
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model/optimizer it is loaded into."""


# ---------------------------------------------------------------------------- atomic writes
def _write_all(handle, data: bytes) -> None:
    handle.write(data)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _write_temporary(path, data)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def atomic_write_json(path, obj) -> None:
    """Atomically write `obj` as indented JSON (NaN/inf refused: they are not JSON)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"cannot write {path}: {error} (NaN/inf are not valid JSON)") from error
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_temporary(path: Path, data: bytes) -> Path:
    """Write data to a fresh temporary file next to `path`; remove it again if anything fails."""
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            _write_all(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------- safetensors
def _serialize(arrays: dict, metadata: dict | None = None) -> bytes:
    clean = {}
    for name, array in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"safetensors keys must be strings, got {name!r}")
        array = np.asarray(getattr(array, "data", array))
        if array.dtype == object:
            raise TypeError(f"{name!r}: object arrays cannot be saved")
        clean[name] = np.ascontiguousarray(array)
    return safetensors.numpy.save(clean, metadata=metadata)


def save_safetensors(path, arrays: dict, metadata: dict | None = None) -> None:
    """Atomically write a dict of arrays (and optional str -> str metadata) as a safetensors file."""
    atomic_write_bytes(path, _serialize(arrays, metadata))


def _parse(path: Path, data: bytes) -> tuple[dict, dict]:
    """Validate the safetensors layout of `data`; return (arrays, metadata) with clear errors."""
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated safetensors file ({len(data)} bytes, the header size alone is 8)")
    (header_size,) = struct.unpack("<Q", data[:8])
    if 8 + header_size > len(data):
        raise CheckpointError(
            f"{path}: truncated safetensors file: header declares {header_size} bytes but the file has {len(data)}"
        )
    try:
        header = json.loads(data[8:8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: corrupt safetensors header ({error})") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    payload = len(data) - 8 - header_size
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPE_NAMES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: corrupt header entry for {name!r}: {info!r}") from error
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end > payload:
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} (shape {shape}, {dtype}) ends at byte {end} of the data "
                f"section, which has only {payload} bytes"
            )
        if end - begin != expected:
            raise CheckpointError(
                f"{path}: tensor {name!r} declares shape {shape} {dtype} ({expected} bytes) but its data range "
                f"holds {end - begin} bytes"
            )
    try:
        arrays = safetensors.numpy.load(data)
    except Exception as error:  # the library's own checks (overlaps, alignment, ...)
        raise CheckpointError(f"{path}: invalid safetensors file: {error}") from error
    return arrays, metadata


def load_safetensors(path) -> dict:
    """Read a safetensors file into a dict name -> np.ndarray (validated, never unpickled)."""
    path = Path(path)
    return _parse(path, _read(path))[0]


def load_safetensors_with_metadata(path) -> tuple[dict, dict]:
    path = Path(path)
    return _parse(path, _read(path))


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    return path.read_bytes()


# ---------------------------------------------------------------------------- optimizer state
def _optimizer_payload(optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    arrays, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, np.ndarray):
                arrays[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    info = {"class": type(optimizer).__name__, "param_groups": state["param_groups"], "scalars": scalars}
    return arrays, {"minifm.optimizer": json.dumps(info)}


def _restore_optimizer(optimizer, arrays: dict, metadata: dict, path: Path) -> None:
    if "minifm.optimizer" not in metadata:
        raise CheckpointError(f"{path}: no optimizer description in the header metadata")
    info = json.loads(metadata["minifm.optimizer"])
    if info["class"] != type(optimizer).__name__:
        raise CheckpointError(f"{path}: saved by {info['class']}, loading into {type(optimizer).__name__}")
    state: dict = {}
    for key, array in arrays.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = array
    for index, values in info["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = info["param_groups"]
    for saved, current in zip(groups, optimizer.param_groups):
        for key, value in saved.items():
            if isinstance(current.get(key), tuple) and isinstance(value, list):
                saved[key] = tuple(value)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error


# ---------------------------------------------------------------------------- checkpoints
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _config_dict(config) -> dict | None:
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, dict):
        return config
    raise TypeError(f"config must be a dict or have to_dict(), got {type(config).__name__}")


def _weights_file(model, kind: str) -> bytes:
    weights = model.state_dict()
    for name, array in weights.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise FloatingPointError(f"refusing to save a checkpoint: {kind} weight {name!r} contains NaN or inf")
    return _serialize(weights, {"format": "minifm", "kind": kind})


def save_checkpoint(directory, model, optimizer=None, train_state: dict | None = None, config=None,
                    extra_models: dict | None = None) -> Path:
    """Write model (+ extra models, optimizer) state, config and training state to `directory`
    (see the module docstring)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_config = _config_dict(getattr(model, "config", None))
    files = {MODEL_FILE: _weights_file(model, "model")}
    for name, extra in (extra_models or {}).items():
        files[f"{name}.safetensors"] = _weights_file(extra, name)
    if optimizer is not None:
        arrays, metadata = _optimizer_payload(optimizer)
        files[OPTIMIZER_FILE] = _serialize(arrays, metadata)
    config_dict = _config_dict(config) if config is not None else model_config
    if config_dict is not None:
        files[CONFIG_FILE] = json.dumps(config_dict, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")
    record = {
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__,
        "model_config": model_config,
        "rng_state": model.rng.bit_generator.state if isinstance(getattr(model, "rng", None), np.random.Generator) else None,
        "files": {name: _sha256(data) for name, data in files.items()},
    }
    user_state = dict(train_state or {})
    if "_checkpoint" in user_state:
        raise ValueError("train_state must not contain the reserved key '_checkpoint'")
    user_state["_checkpoint"] = record
    try:
        manifest = json.dumps(user_state, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ValueError(f"train_state must be JSON-serialisable without NaN/inf: {error}") from error
    temporaries = []
    try:
        for name, data in files.items():
            temporaries.append((_write_temporary(directory / name, data), directory / name))
        temporaries.append((_write_temporary(directory / TRAIN_STATE_FILE, manifest), directory / TRAIN_STATE_FILE))
    except BaseException:
        for temporary, _ in temporaries:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, final in temporaries:  # the manifest is last
        os.replace(temporary, final)
    _fsync_directory(directory)
    return directory


def _read_manifest(directory: Path) -> tuple[dict, dict]:
    """(the user's training state, the checkpoint record) from `directory`/train_state.json."""
    manifest_path = directory / TRAIN_STATE_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {directory}: {TRAIN_STATE_FILE} is missing")
    try:
        train_state = json.loads(manifest_path.read_text("utf-8"))
        record = train_state.pop("_checkpoint")
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{manifest_path}: corrupt training state ({error!r})") from error
    return train_state, record


def checkpoint_record(directory) -> dict:
    """What a checkpoint says of its model without loading it: format_version, model_class,
    model_config, rng_state and the files' SHA-256 digests."""
    return _read_manifest(Path(directory))[1]


def read_train_state(directory) -> dict:
    """The training state saved in `directory` (what save_checkpoint's train_state held), loading nothing:
    a caller can check it (stage, settings) before it loads weights."""
    return _read_manifest(Path(directory))[0]


def load_checkpoint(directory, model, optimizer=None, extra_models: dict | None = None) -> dict:
    """Restore `model` (and `extra_models`, `optimizer`) from `directory`; return the saved training state."""
    directory = Path(directory)
    train_state, record = _read_manifest(directory)
    contents = {}
    for name, digest in record["files"].items():
        data = _read(directory / name)
        if _sha256(data) != digest:
            raise CheckpointError(
                f"{directory / name}: SHA-256 differs from the one recorded in {TRAIN_STATE_FILE} "
                f"(file modified, truncated, or a save was interrupted between renames)"
            )
        contents[name] = data
    _check_config(record, model, directory)
    arrays, _ = _parse(directory / MODEL_FILE, contents[MODEL_FILE])
    _check_weights(arrays, model.state_dict(), directory / MODEL_FILE)
    model.load_state_dict(arrays, strict=True)
    for name, extra in (extra_models or {}).items():
        file = f"{name}.safetensors"
        if file not in contents:
            raise CheckpointError(f"{directory}: the checkpoint has no {file}")
        extra_arrays, _ = _parse(directory / file, contents[file])
        _check_weights(extra_arrays, extra.state_dict(), directory / file)
        extra.load_state_dict(extra_arrays, strict=True)
    if optimizer is not None:
        if OPTIMIZER_FILE not in contents:
            raise CheckpointError(f"{directory}: the checkpoint has no optimizer state, but an optimizer was given")
        optimizer_arrays, metadata = _parse(directory / OPTIMIZER_FILE, contents[OPTIMIZER_FILE])
        _restore_optimizer(optimizer, optimizer_arrays, metadata, directory / OPTIMIZER_FILE)
    if record.get("rng_state") is not None and isinstance(getattr(model, "rng", None), np.random.Generator):
        model.rng.bit_generator.state = record["rng_state"]
    return train_state


def _check_config(record: dict, model, directory: Path) -> None:
    if record.get("model_class") != type(model).__name__:
        raise CheckpointError(f"{directory}: checkpoint holds a {record.get('model_class')}, model is {type(model).__name__}")
    saved, current = record.get("model_config"), _config_dict(getattr(model, "config", None))
    if saved is None or current is None:
        return
    differences = [
        f"{key}: checkpoint {saved.get(key, '<absent>')!r} vs model {current.get(key, '<absent>')!r}"
        for key in sorted(set(saved) | set(current))
        if key not in CONFIG_KEYS_NOT_COMPARED and saved.get(key) != current.get(key)
    ]
    if differences:
        raise CheckpointError(f"{directory}: model config does not match the checkpoint: " + "; ".join(differences))


def _check_weights(arrays: dict, expected: dict, path: Path) -> None:
    missing = [key for key in expected if key not in arrays]
    unexpected = [key for key in arrays if key not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing keys {missing}, unexpected keys {unexpected}")
    for key, target in expected.items():
        array = arrays[key]
        if array.shape != target.shape:
            raise CheckpointError(f"{path}: {key!r} has shape {array.shape} in the checkpoint, the model expects {target.shape}")
        if array.dtype != target.dtype:
            raise CheckpointError(f"{path}: {key!r} has dtype {array.dtype} in the checkpoint, the model uses {target.dtype}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise CheckpointError(f"{path}: {key!r} contains NaN or inf")
