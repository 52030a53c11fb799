"""Hugging Face model directories read as a PretrainedCheckpoint: config.json and safetensors files.

Two layouts, as transformers writes them:
    config.json + model.safetensors
    config.json + model.safetensors.index.json + the shards it names
        (the index's "weight_map" says which shard holds each tensor: {"model.norm.weight":
        "model-00002-of-00002.safetensors", ...})
Only safetensors files are read. pytorch_model.bin, *.pt and the like are Python pickles, which can run
arbitrary code when loaded: minifm never unpickles, and says so, naming the file it found.

A safetensors file is 8 bytes of little-endian header length N, N bytes of JSON header
({name: {"dtype": "F32", "shape": [out, in], "data_offsets": [begin, end]}, "__metadata__": {...}}),
then the tensor bytes, offsets counted from the end of the header. Opening the directory reads only
the headers (read_header): names, shapes and dtypes, and whether each file holds every byte its header
promises. A truncated file is an error naming the file and the first tensor it cuts off. Tensors are
then read one at a time with safetensors.safe_open(..., framework="numpy").

dtypes: F32 as stored; F16 and F64 become float32 (F64 rounded to the nearest float32); BF16 has no
NumPy type and the numpy framework of safetensors refuses it (TypeError: data type 'bfloat16' not
understood), so its 16-bit words are read from a memory map of the file and shifted into the top half
of float32 bits (quants.py, BF16), which is exact. Integer and bool tensors keep their dtype.
tensor(name, dequantize=False) gives the stored bytes of an F32, F16 or BF16 tensor as a
quants.QuantizedTensor.

Simplifications: the names are those of the files (no renaming; tied or missing tensors are the
architecture table's business); when a directory has both model.safetensors and an index, the single
file is read (transformers' order); safetensors dtypes other than F64/F32/F16/BF16, integers and bool
(float8, say) are refused when the file is opened.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open

from minifm.checkpoint import read_json_file
from minifm.pretrained.pretrained_checkpoint import PretrainedCheckpoint
from minifm.pretrained.quants import FORMATS, QuantizedTensor, dequantize

CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# safetensors dtype -> bytes per value
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2,
               "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


class SafetensorsError(ValueError):
    """A safetensors file that is truncated, corrupt or not what its index says."""


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str  # safetensors dtype: "F32", "BF16", ...
    shape: tuple[int, ...]
    begin: int  # byte offsets in the data section, which starts at data_start
    end: int
    data_start: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """name -> TensorInfo for every tensor of a safetensors file, in data order; checks sizes and truncation."""
    size = path.stat().st_size
    if size < 8:
        raise SafetensorsError(f"{path}: truncated safetensors file ({size} bytes; the header length alone is 8)")
    with open(path, "rb") as handle:
        (header_bytes,) = struct.unpack("<Q", handle.read(8))
        if 8 + header_bytes > size:
            raise SafetensorsError(f"{path}: truncated safetensors file: its header is {header_bytes} bytes "
                                   f"but the file has {size}")
        try:
            header = json.loads(handle.read(header_bytes))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SafetensorsError(f"{path}: corrupt safetensors header ({error})") from error
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    data_start = 8 + header_bytes
    data_size = size - data_start
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = tuple(int(length) for length in entry["shape"])
            begin, end = (int(offset) for offset in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise SafetensorsError(f"{path}: corrupt header entry for tensor {name!r}: {entry!r}") from error
        if dtype not in DTYPE_BYTES:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {dtype}, which minifm does not read "
                                   f"(it reads {', '.join(DTYPE_BYTES)})")
        expected = int(np.prod(shape, dtype=np.int64)) * DTYPE_BYTES[dtype]
        if end - begin != expected:
            raise SafetensorsError(f"{path}: tensor {name!r} of shape {shape} {dtype} needs {expected} bytes, "
                                   f"its header gives it {end - begin}")
        tensors[name] = TensorInfo(path, dtype, shape, begin, end, data_start)
    in_order = sorted(tensors.values(), key=lambda info: info.begin)
    cut_off = [name for name, info in tensors.items() if info.end > data_size]
    if cut_off:
        first = min(cut_off, key=lambda name: tensors[name].begin)
        info = tensors[first]
        raise SafetensorsError(
            f"{path}: truncated: {len(cut_off)} tensor(s) lie past the end of the file, the first {first!r} "
            f"(shape {info.shape} {info.dtype}, bytes {info.begin}..{info.end} of a data section that has "
            f"only {data_size}); the file is {in_order[-1].end - data_size} bytes short")
    return {name: tensors[name] for name in sorted(tensors, key=lambda name: tensors[name].begin)}


def read_config(directory: Path) -> dict:
    """config.json of `directory` as a dict, or an error naming what is missing or broken."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        ggufs = sorted(p.name for p in directory.glob("*.gguf"))
        hint = f"; it holds {ggufs}: pass that .gguf file instead" if ggufs else ""
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}: a Hugging Face model directory needs it "
                                f"beside its safetensors files{hint}")
    return read_json_file(path)


def weight_files(directory: Path) -> dict[str, Path] | None:
    """For a sharded directory, name -> shard path from the index; None when model.safetensors is read."""
    if (directory / SINGLE_FILE).is_file():
        return None
    index = directory / INDEX_FILE
    if not index.is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(
                f"{directory} holds {pickles} but no {SINGLE_FILE}: minifm reads only safetensors and never "
                f"unpickles a file (loading a pickle can run code). Convert it once where you trust it: "
                f"transformers.AutoModel.from_pretrained(dir).save_pretrained(new_dir)")
        found = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE} (it holds {found})")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{index}: not a safetensors index with a 'weight_map' ({error!r})") from error
    files = {}
    for name, shard in weight_map.items():
        path = directory / shard
        if not path.is_file():
            raise FileNotFoundError(f"{index} puts tensor {name!r} in shard {shard!r}, which is not in {directory}")
        files[name] = path
    return files


class HFCheckpoint(PretrainedCheckpoint):
    """A Hugging Face directory of safetensors files as a PretrainedCheckpoint (see the module docstring)."""

    format = "safetensors"

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a directory (a Hugging Face checkpoint is a directory "
                                     f"with {CONFIG_NAME} and safetensors files)")
        config = read_config(directory)
        sharded = weight_files(directory)
        shard_paths = [directory / SINGLE_FILE] if sharded is None else list(dict.fromkeys(sharded.values()))
        headers = {path: read_header(path) for path in shard_paths}
        self._handles = {path: self._open(path) for path in shard_paths}
        if sharded is None:
            self._infos = dict(headers[directory / SINGLE_FILE])
        else:
            self._infos = {}
            for name, path in sharded.items():
                if name not in headers[path]:
                    raise SafetensorsError(f"{directory / INDEX_FILE} puts tensor {name!r} in {path.name}, "
                                           f"which has no such tensor")
                self._infos[name] = headers[path][name]
        order = {path: position for position, path in enumerate(shard_paths)}
        names = sorted(self._infos, key=lambda name: (order[self._infos[name].file], self._infos[name].begin))
        super().__init__(directory, config, names)

    @staticmethod
    def _open(path: Path):
        try:
            return safe_open(str(path), framework="numpy")
        except Exception as error:  # the library's own checks: overlapping or misaligned offsets, ...
            raise SafetensorsError(f"{path}: invalid safetensors file: {error}") from error

    def file_of(self, name: str) -> Path:
        """The safetensors file that holds tensor `name`."""
        self._require(name)
        return self._infos[name].file

    def _shape(self, name: str) -> tuple[int, ...]:
        return self._infos[name].shape

    def _stored_type(self, name: str) -> str:
        return self._infos[name].dtype

    def _stored_bytes(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes as a flat read-only uint8 memory map of its file."""
        if info.end == info.begin:
            return np.zeros(0, dtype=np.uint8)
        return np.memmap(info.file, dtype=np.uint8, mode="r", offset=info.data_start + info.begin,
                         shape=(info.end - info.begin,))

    def _read_stored(self, name: str) -> QuantizedTensor:
        info = self._infos[name]
        if info.dtype not in FORMATS or not info.shape:
            raise ValueError(f"tensor {name!r} of {info.file} is {info.dtype} of shape {info.shape}; only F32, "
                             f"F16 and BF16 tensors of at least one dimension have a stored (block) form")
        rows = self._stored_bytes(info).reshape(*info.shape[:-1], -1)  # (*shape[:-1], bytes per row)
        return QuantizedTensor(info.dtype, info.shape, rows, name)

    def _read_float32(self, name: str) -> np.ndarray:
        info = self._infos[name]
        if info.dtype == "BF16":
            return dequantize(self._stored_bytes(info), "BF16", name).reshape(info.shape)
        try:
            array = self._handles[info.file].get_tensor(name)
        except Exception as error:
            raise SafetensorsError(f"{info.file}: cannot read tensor {name!r}: {error}") from error
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32, copy=False)
        return array

    def close(self) -> None:
        super().close()
        self._handles = {}
