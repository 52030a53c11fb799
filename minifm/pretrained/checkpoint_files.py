"""read_checkpoint(path): a Hugging Face directory as (config.json dict, lazily read tensors).

INTERIM (to be replaced by the full reader of GGUF files and sharded directories): reads a directory
with config.json and one model.safetensors or a model.safetensors.index.json with its shards.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open


class _LazyTensors(Mapping):
    def __init__(self, files: dict[str, Path]):
        self._files = files  # tensor name -> file

    def __getitem__(self, name):
        with safe_open(self._files[name], framework="numpy") as handle:
            return np.asarray(handle.get_tensor(name), dtype=np.float32)

    def __iter__(self):
        return iter(self._files)

    def __len__(self):
        return len(self._files)


@dataclass
class Checkpoint:
    config: dict
    tensors: Mapping


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    directory = Path(path)
    config = json.loads((directory / "config.json").read_text())
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {name: directory / shard for name, shard in weight_map.items()}
    else:
        with safe_open(directory / "model.safetensors", framework="numpy") as handle:
            files = {name: directory / "model.safetensors" for name in handle.keys()}
    return Checkpoint(config, _LazyTensors(files))
