"""PretrainedCheckpoint: what every checkpoint reader gives, whatever the file format.

    checkpoint.config                 the Hugging Face config.json dict (with architectures, model_type)
    checkpoint.names()                tensor names, Hugging Face spelling, in file order
    checkpoint.shape(name)            logical shape, torch layout (a Linear weight is (out, in))
    checkpoint.stored_type(name)      how the file stores it: "F32", "F16", "BF16", "Q8_0", "Q4_1", ...
    checkpoint.tensor(name)           float32 np.ndarray, read (and dequantized) now, a new array
    checkpoint.tensor(name, dequantize=False)   the stored form: a quants.QuantizedTensor
    checkpoint.tensors                a read-only Mapping name -> float32 array, read on each access
    checkpoint.items()                (name, float32 array) one tensor at a time, in file order

Nothing is read until asked for, and nothing read is cached, so a loader that takes one tensor at a
time holds at most one float32 copy of the weights. names(), shape() and stored_type() come from the
file's header and read no tensor data. Use it as a context manager (or call close()) to release the
file handles early.

Checks every reader shares: a name the checkpoint lacks is a KeyError naming it and listing similar
names; a float tensor with a NaN or an infinity is a ValueError naming the tensor, the count and the
first position (nothing non-finite reaches a model silently). Integer tensors (say, a position_ids
buffer some checkpoints hold) keep their integer dtype.

The readers: gguf.GGUFCheckpoint (a .gguf file) and hf_files.HFCheckpoint (a Hugging Face directory
of safetensors files); checkpoint_files.read_checkpoint picks one for a path.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from minifm.pretrained.quants import QuantizedTensor


class PretrainedCheckpoint:
    """Base class of the readers; see the module docstring. Subclasses give the names and fill in the four _methods."""

    format = "?"  # "gguf" or "safetensors"

    def __init__(self, path: str | os.PathLike, config: dict, names: list[str]):
        self.path = Path(path)
        self.config = config
        self._names = list(names)  # file order
        self._name_set = frozenset(self._names)
        self.closed = False
        self.tensors: Mapping[str, np.ndarray] = LazyTensors(self)

    # ------------------------------------------------------------------ what a subclass provides
    def _shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def _stored_type(self, name: str) -> str:
        raise NotImplementedError

    def _read_stored(self, name: str) -> QuantizedTensor:
        raise NotImplementedError

    def _read_float32(self, name: str) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ the common interface
    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._name_set

    def shape(self, name: str) -> tuple[int, ...]:
        self._require(name)
        return tuple(self._shape(name))

    def stored_type(self, name: str) -> str:
        self._require(name)
        return self._stored_type(name)

    def tensor(self, name: str, dequantize: bool = True):
        """The float32 array of `name` (dequantize=True), or its stored form, a QuantizedTensor."""
        self._require(name)
        if self.closed:
            raise ValueError(f"{self.path}: the checkpoint is closed; open it again to read {name!r}")
        if not dequantize:
            return self._read_stored(name)
        array = self._read_float32(name)
        check_finite(array, f"tensor {name!r} of {self.path}")
        return array

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, float32 array) for every tensor in file order, each read when reached."""
        for name in self._names:
            yield name, self.tensor(name)

    def close(self) -> None:
        """Release open files (a subclass extends this); names and shapes stay, tensors cannot be read."""
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        architecture = (self.config.get("architectures") or ["?"])[0]
        return f"<{type(self).__name__} {str(self.path)!r}: {architecture}, {len(self._names)} tensors>"

    def _require(self, name: str) -> None:
        if name not in self._name_set:
            raise KeyError(missing_tensor_message(name, self._names, str(self.path)))


class LazyTensors(Mapping):
    """checkpoint.tensors: name -> float32 array, read from the file on each access (never cached)."""

    def __init__(self, checkpoint: PretrainedCheckpoint):
        self._checkpoint = checkpoint

    def __getitem__(self, name: str) -> np.ndarray:
        return self._checkpoint.tensor(name)

    def __contains__(self, name: object) -> bool:
        return name in self._checkpoint

    def __iter__(self) -> Iterator[str]:
        return iter(self._checkpoint.names())

    def __len__(self) -> int:
        return len(self._checkpoint.names())

    def __repr__(self) -> str:
        return f"<lazy tensors of {self._checkpoint!r}>"


def missing_tensor_message(name: str, names: list[str], where: str) -> str:
    """'no tensor X in WHERE' with the closest names the file does have."""
    similar = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f"similar names: {similar}" if similar else f"it has {len(names)} tensors, e.g. {names[:3]}"
    return f"no tensor {name!r} in {where}; {hint}"


def check_finite(array: np.ndarray, what: str) -> None:
    """ValueError naming `what`, the count and the first position when a float array has NaN or inf."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = int(array.size - np.count_nonzero(finite))
    first = np.unravel_index(int(np.argmin(finite)), array.shape)
    raise ValueError(f"{what} has {bad} non-finite value(s) (NaN or inf), the first at index "
                     f"{tuple(int(i) for i in first)}: {array[first]!r}; the file is damaged")
