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
                           version and the SHA-256 of every file above. It is the manifest: a
                           checkpoint is complete when every file it lists has the recorded hash.

How a save stays crash-safe as a whole (a kill at any instant leaves a loadable checkpoint):
  1. every file, manifest included, is written to a temporary `.<name>.<pid>-<random>.tmp` in the
     same directory, flushed and fsync'ed. A failure here removes the temporaries and changes nothing.
  2. keep the previous checkpoint: hard-link each file the current manifest lists to `<name>.prev`
     (no copy: the .prev name keeps the old bytes alive when step 3 renames a new file over the
     name), then `train_state.json.prev` last, so its presence means "the .prev set is whole".
  3. rename (os.replace, atomic) each temporary over its name, train_state.json last; the directory
     is fsync'ed before the manifest's rename, so the manifest never becomes durable before its files.
  4. remove the .prev files, train_state.json.prev last.
  Loading checks the files against the manifest. When they do not match, or the manifest is missing
  or corrupt, and a .prev set exists that does match, the .prev set is loaded with a warning
  (CheckpointRecoveredWarning) naming the directory and the step recovered; otherwise the error is
  raised as before. A save that finds train_state.json.prev left by an interrupted save keeps that
  .prev set when the current files do not match their manifest (the .prev set is then the newest
  complete checkpoint), and drops it before step 2 when they do. After a save that returns, the
  directory holds exactly the names above: no .prev file, no temporary.

Stale temporaries: a killed save leaves its temporaries. Every save_checkpoint and atomic write
first removes, in its directory, the temporaries of minifm's own naming whose writing process is
gone (the pid in the name is not a running process; names without a pid, from earlier versions of
this module, always count as gone). A concurrent minifm process's temporaries are left alone.

File modes: temporaries are chmod'ed to 0o666 & ~umask, the mode open() would give, so written
files follow the user's umask rather than mkstemp's 0600.

Deterministic bytes: safetensors files are written by safetensors_bytes below (the format is 8
bytes of little-endian header length, a JSON header, the raw arrays), with sorted keys, fixed
separators and a fixed tensor order, so identical arrays and metadata give identical bytes in any
process; the `safetensors` library reads them as its own.

Other safety:
  * loading checks the header of each safetensors file (offsets, sizes, dtypes; a truncated file is
    named as such), that the saved config equals the model's (except seed, init_std and dropout,
    which do not change what the weights mean), and every name, shape and dtype against the model,
    with errors naming the key and both shapes;
  * non-finite weights are refused at save time (a NaN run must not overwrite a good checkpoint);
  * nothing is ever unpickled: safetensors and JSON only.

Simplifications, named:
  * one writer per directory at a time: two processes saving checkpoints into one directory at once
    are not coordinated;
  * a .prev file is a second name of the old file (a hard link), so a tool that rewrites a checkpoint
    file in place, instead of replacing it, while a .prev set exists changes both; on file systems
    without hard links step 2 copies the files instead (slower, same protocol);
  * durability against power loss is as good as fsync of the files and of the directory make it;
  * pids are taken as local: a temporary written by a process on another machine sharing the
    directory counts as stale when no process here has its pid; on non-POSIX systems only pid-less
    temporaries are removed;
  * without /proc/self/status the umask is read with os.umask, which sets it process-wide for an
    instant (to 0o022, a common default) before it is restored.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import safetensors.numpy

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.json"
PREVIOUS_SUFFIX = ".prev"  # <name>.prev: the previous checkpoint's file while a save is under way
# config fields that do not change the weights' meaning: a model built with another seed, init scale
# or dropout rate may load the checkpoint (e.g. fine-tuning with dropout on)
CONFIG_KEYS_NOT_COMPARED = ("seed", "init_std", "dropout")

_DTYPE_NAMES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
    "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_,
}
_DTYPE_CODES = {np.dtype(dtype): code for code, dtype in _DTYPE_NAMES.items()}
# `.<target>.<pid>-<8 random chars>.tmp` (tempfile.mkstemp's random part); earlier versions wrote
# `.<target>.<8 random chars>.tmp`, without the pid
_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+?)\.(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model/optimizer it is loaded into."""


class CheckpointRecoveredWarning(UserWarning):
    """The newest save in a directory was incomplete; the previous complete checkpoint was loaded."""


# ---------------------------------------------------------------------------- atomic writes
def _write_all(handle, data: bytes) -> None:
    handle.write(data)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one
    (and remove the stale temporaries of killed writes in the same directory first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    temporary = _write_temporary(path, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def read_json_file(path, expected: type = dict):
    """A JSON file whose top level must be an `expected` (an object by default, or a list): the parsed
    value, FileNotFoundError, or a ValueError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, expected):
        raise ValueError(f"{path}: expected a JSON {'object' if expected is dict else expected.__name__}, "
                         f"got {type(data).__name__}")
    return data


def atomic_write_json(path, obj) -> None:
    """Atomically write `obj` as indented JSON (NaN/inf refused: they are not JSON)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"cannot write {path}: {error} (NaN/inf are not valid JSON)") from error
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    """The process's umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # the only portable way to read it sets it: restore at once
    os.umask(mask)
    return mask


def _write_temporary(path: Path, data: bytes) -> Path:
    """Write data to a fresh temporary file next to `path` with the mode open() would give it;
    remove it again if anything fails."""
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            mode = 0o666 & ~_umask()
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), mode)
            else:
                os.chmod(name, mode)
            _write_all(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _process_gone(pid: int | None) -> bool:
    """Whether the process that named a temporary has ended (None: an old pid-less name, always gone)."""
    if pid is None or pid <= 0:
        return True
    if pid == os.getpid():
        return False
    if os.name != "posix":
        return False  # no harmless existence check (os.kill would terminate it): keep the file
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    except OverflowError:  # too large to be a pid
        return True
    return False


def remove_stale_temporaries(directory) -> list[Path]:
    """Remove the temporaries of minifm's own naming in `directory` whose writing process has ended
    (a killed save's leftovers); return the paths removed."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # absent or unreadable: nothing of ours to remove
        return removed
    for entry in entries:
        match = _TEMPORARY_NAME.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if _process_gone(int(match["pid"]) if match["pid"] is not None else None):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


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
def safetensors_bytes(arrays: dict, metadata: dict | None = None) -> bytes:
    """The safetensors file holding `arrays` (name -> array) and `metadata` (str -> str), byte-for-byte
    the same for the same arrays and metadata: header keys sorted, separators fixed, tensors stored
    by decreasing item size then name (each tensor aligned to its item size, as the library does)."""
    clean = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"safetensors keys must be strings other than '__metadata__', got {name!r}")
        array = np.asarray(getattr(array, "data", array))
        if array.dtype == object:
            raise TypeError(f"{name!r}: object arrays cannot be saved")
        if array.dtype.newbyteorder("=") not in _DTYPE_CODES:
            supported = ", ".join(sorted(str(dtype) for dtype in _DTYPE_CODES))
            raise TypeError(f"{name!r}: dtype {array.dtype} cannot be saved as safetensors (supported: {supported})")
        clean[name] = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError(f"safetensors metadata must map str to str, got {metadata!r}")
        header["__metadata__"] = dict(metadata)
    chunks, offset = [], 0
    for name in sorted(clean, key=lambda key: (-clean[key].dtype.itemsize, key)):
        array = clean[name]
        header[name] = {"dtype": _DTYPE_CODES[array.dtype.newbyteorder("=")], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        chunks.append(array.tobytes())
        offset += array.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)  # pad the header so the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save_safetensors(path, arrays: dict, metadata: dict | None = None) -> None:
    """Atomically write a dict of arrays (and optional str -> str metadata) as a safetensors file."""
    atomic_write_bytes(path, safetensors_bytes(arrays, metadata))


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
    return arrays, {"minifm.optimizer": json.dumps(info, sort_keys=True, separators=(",", ":"))}


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
    return safetensors_bytes(weights, {"format": "minifm", "kind": kind})


def _previous(directory: Path, name: str) -> Path:
    return directory / (name + PREVIOUS_SUFFIX)


def save_checkpoint(directory, model, optimizer=None, train_state: dict | None = None, config=None,
                    extra_models: dict | None = None) -> Path:
    """Write model (+ extra models, optimizer) state, config and training state to `directory`
    (see the module docstring for the files and the crash-safe protocol)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_config = _config_dict(getattr(model, "config", None))
    files = {MODEL_FILE: _weights_file(model, "model")}
    for name, extra in (extra_models or {}).items():
        files[f"{name}.safetensors"] = _weights_file(extra, name)
    if optimizer is not None:
        arrays, metadata = _optimizer_payload(optimizer)
        files[OPTIMIZER_FILE] = safetensors_bytes(arrays, metadata)
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
    files[TRAIN_STATE_FILE] = manifest  # the manifest is last, in every step below

    remove_stale_temporaries(directory)
    temporaries: dict[str, Path] = {}
    try:
        for name, data in files.items():  # step 1
            temporaries[name] = _write_temporary(directory / name, data)
        kept = _keep_previous(directory)  # step 2
        for name, temporary in temporaries.items():  # step 3
            if name == TRAIN_STATE_FILE:
                _fsync_directory(directory)  # the files' renames are durable before the manifest's
            os.replace(temporary, directory / name)
        _fsync_directory(directory)
    except BaseException:
        for temporary in temporaries.values():  # those not renamed yet
            temporary.unlink(missing_ok=True)
        raise
    _drop_previous(directory, kept | set(files))  # step 4
    _fsync_directory(directory)
    return directory


def _keep_previous(directory: Path) -> set[str]:
    """Step 2 of a save: make sure the newest complete checkpoint in `directory` survives the renames
    under `<name>.prev`; return the names whose .prev files step 4 removes."""
    if _previous(directory, TRAIN_STATE_FILE).is_file():  # an earlier save was interrupted after its step 2
        previous_names = _listed_names(directory, PREVIOUS_SUFFIX)
        try:
            _read_checkpoint(directory)
        except (OSError, CheckpointError):  # current files are a mix: the .prev set is the newest whole one
            return previous_names
        _drop_previous(directory, previous_names)  # the current files are whole and newer: keep those instead
    names = _listed_names(directory)
    if not names or not all((directory / name).is_file() for name in names):
        return set()  # no complete checkpoint here to keep
    for name in sorted(names - {TRAIN_STATE_FILE}) + [TRAIN_STATE_FILE]:  # the .prev manifest last
        _link(directory / name, _previous(directory, name))
    _fsync_directory(directory)
    return names


def _listed_names(directory: Path, suffix: str = "") -> set[str]:
    """The file names a manifest lists, itself included (empty if it is missing or unreadable)."""
    try:
        _, record = _read_manifest(directory, suffix)
    except (OSError, CheckpointError):
        return set()
    return set(record["files"]) | {TRAIN_STATE_FILE}


def _link(source: Path, target: Path) -> None:
    """Make `target` another name of `source`'s bytes: a hard link, or a copy where links are unsupported."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        temporary = _write_temporary(target, source.read_bytes())
        os.replace(temporary, target)


def _drop_previous(directory: Path, names: set[str]) -> None:
    """Remove the .prev files of `names`, the .prev manifest last (its presence marks a whole .prev set)."""
    for name in sorted(set(names) - {TRAIN_STATE_FILE}) + [TRAIN_STATE_FILE]:
        _previous(directory, name).unlink(missing_ok=True)


def _read_manifest(directory: Path, suffix: str = "") -> tuple[dict, dict]:
    """(the user's training state, the checkpoint record) from `directory`/train_state.json<suffix>."""
    manifest_path = directory / (TRAIN_STATE_FILE + suffix)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {directory}: {TRAIN_STATE_FILE} is missing")
    try:
        train_state = json.loads(manifest_path.read_text("utf-8"))
        record = train_state.pop("_checkpoint")
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError, AttributeError, TypeError) as error:
        raise CheckpointError(f"{manifest_path}: corrupt training state ({error!r})") from error
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise CheckpointError(f"{manifest_path}: corrupt training state (no file list in its '_checkpoint' record)")
    return train_state, record


def _read_checkpoint(directory: Path, suffix: str = "") -> tuple[dict, dict, dict]:
    """(training state, record, file name -> bytes) of the checkpoint whose files carry `suffix`,
    every file checked against the manifest's SHA-256."""
    train_state, record = _read_manifest(directory, suffix)
    contents = {}
    for name, digest in record["files"].items():
        path = directory / (name + suffix)
        data = _read(path)
        if _sha256(data) != digest:
            raise CheckpointError(
                f"{path}: SHA-256 differs from the one recorded in {TRAIN_STATE_FILE + suffix} "
                f"(file modified, truncated, or a save was interrupted between renames)"
            )
        contents[name] = data
    return train_state, record, contents


def _complete_checkpoint(directory: Path) -> tuple[dict, dict, dict, str]:
    """The newest complete checkpoint in `directory`: the current files, else the .prev set left by an
    interrupted save; (training state, record, contents, suffix of the files read)."""
    try:
        return (*_read_checkpoint(directory), "")
    except (FileNotFoundError, CheckpointError) as error:
        if not _previous(directory, TRAIN_STATE_FILE).is_file():
            raise
        try:
            return (*_read_checkpoint(directory, PREVIOUS_SUFFIX), PREVIOUS_SUFFIX)
        except (FileNotFoundError, CheckpointError):
            raise error from None


def _complete_manifest(directory: Path) -> tuple[dict, dict]:
    """The manifest of the newest complete checkpoint. Without a .prev manifest no save was interrupted
    half-way, so the manifest is read alone; with one, the files are checked to choose."""
    if not _previous(directory, TRAIN_STATE_FILE).is_file():
        return _read_manifest(directory)
    train_state, record, _, _ = _complete_checkpoint(directory)
    return train_state, record


def has_checkpoint(directory) -> bool:
    """Whether `directory` holds a checkpoint to load: its manifest (every save writes it last), or the
    previous one that an interrupted save kept."""
    directory = Path(directory)
    return (directory / TRAIN_STATE_FILE).is_file() or _previous(directory, TRAIN_STATE_FILE).is_file()


def checkpoint_record(directory) -> dict:
    """What a checkpoint says of its model without loading it: format_version, model_class,
    model_config, rng_state and the files' SHA-256 digests (of the checkpoint load_checkpoint loads)."""
    return _complete_manifest(Path(directory))[1]


def read_train_state(directory) -> dict:
    """The training state saved in `directory` (what save_checkpoint's train_state held), loading nothing:
    a caller can check it (stage, settings) before it loads weights. After an interrupted save it is
    the state of the checkpoint load_checkpoint recovers."""
    return _complete_manifest(Path(directory))[0]


def load_checkpoint(directory, model, optimizer=None, extra_models: dict | None = None) -> dict:
    """Restore `model` (and `extra_models`, `optimizer`) from `directory`; return the saved training state.
    If the newest save there was interrupted, the previous complete checkpoint is loaded and a
    CheckpointRecoveredWarning says so."""
    directory = Path(directory)
    train_state, record, contents, suffix = _complete_checkpoint(directory)
    _check_config(record, model, directory)
    targets = {MODEL_FILE: model, **{f"{name}.safetensors": extra for name, extra in (extra_models or {}).items()}}
    weights = {}
    for file, target in targets.items():  # check everything before changing anything
        if file not in contents:
            raise CheckpointError(f"{directory}: the checkpoint has no {file}")
        path = directory / (file + suffix)
        weights[file], _ = _parse(path, contents[file])
        _check_weights(weights[file], target.state_dict(), path)
    if optimizer is not None:
        if OPTIMIZER_FILE not in contents:
            raise CheckpointError(f"{directory}: the checkpoint has no optimizer state, but an optimizer was given")
        optimizer_arrays, metadata = _parse(directory / (OPTIMIZER_FILE + suffix), contents[OPTIMIZER_FILE])
    if suffix:
        step = f"step {train_state['step']}" if "step" in train_state else "it records no step"
        warnings.warn(f"{directory}: the last save there did not complete, so the previous complete checkpoint "
                      f"({step}) was loaded instead", CheckpointRecoveredWarning, stacklevel=2)
    for file, target in targets.items():
        target.load_state_dict(weights[file], strict=True)
    if optimizer is not None:
        _restore_optimizer(optimizer, optimizer_arrays, metadata, directory / (OPTIMIZER_FILE + suffix))
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
