"""read_checkpoint(path): open any checkpoint minifm reads as a PretrainedCheckpoint.

    a directory              -> hf_files.HFCheckpoint   (config.json + safetensors, single or sharded)
    a .gguf file             -> gguf.GGUFCheckpoint     (also any file that starts with the GGUF magic)
    a known short name       -> the installed model's path first (registry.py: smollm2-135m-instruct, ...)

Either way the result has .config (a Hugging Face config.json dict) and the tensors under Hugging Face
names, read one at a time (pretrained_checkpoint.py describes the interface). A lone .safetensors file
is refused: without its config.json nothing says what the tensors are; pass the directory holding both.
Pickle files (.bin, .pt, ...) are refused too: nothing is ever unpickled.
"""
from __future__ import annotations

import os
from pathlib import Path

from minifm.pretrained.gguf import GGUFCheckpoint
from minifm.pretrained.hf_files import PICKLE_SUFFIXES, HFCheckpoint
from minifm.pretrained.pretrained_checkpoint import PretrainedCheckpoint
from minifm.pretrained.registry import resolve_model_path

GGUF_MAGIC = b"GGUF"


def is_gguf_file(path: Path) -> bool:
    """Whether `path` is a GGUF file: named *.gguf, or starting with the 4 bytes b'GGUF'."""
    if path.suffix.lower() == ".gguf":
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def read_checkpoint(path: str | os.PathLike) -> PretrainedCheckpoint:
    """The checkpoint at `path` (a directory, a .gguf file or a known short name); see the module docstring."""
    path = resolve_model_path(path)
    if path.is_dir():
        return HFCheckpoint(path)
    if is_gguf_file(path):
        return GGUFCheckpoint(path)
    if path.suffix == ".safetensors":
        has_config = (path.parent / "config.json").is_file()
        hint = (f"pass its directory {str(path.parent)!r}, which has config.json" if has_config
                else "put it in a directory with its config.json and pass the directory")
        raise ValueError(f"{str(path)!r} is a lone safetensors file: without config.json nothing says which "
                         f"model its tensors make; {hint}")
    if path.suffix in PICKLE_SUFFIXES:
        raise ValueError(f"{str(path)!r} looks like a pickle ({path.suffix}); minifm reads only safetensors and "
                         f"GGUF and never unpickles a file (loading a pickle can run code)")
    raise ValueError(f"{str(path)!r} is neither a Hugging Face model directory (config.json + safetensors) "
                     f"nor a GGUF file")
