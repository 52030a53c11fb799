"""GGUF files (llama.cpp's single-file model format): metadata, tensors, dequantization.

A GGUF file is a header of typed key/value metadata (architecture, sizes, the tokenizer's vocabulary,
merges and chat template) followed by named tensors, each stored as F32, F16 or in one of the
quantized block formats. The container is parsed with the `gguf` package (gguf.GGUFReader).

read_metadata(path) -> {key: value} with plain Python values (strings, numbers, lists).
"""
from __future__ import annotations

import os
from pathlib import Path

import gguf


def open_reader(path: str | os.PathLike) -> gguf.GGUFReader:
    """A gguf.GGUFReader over `path` (memory-mapped, read-only); a clear error for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist")
    try:
        return gguf.GGUFReader(path, "r")
    except (ValueError, OSError, IndexError) as error:
        raise ValueError(f"{str(path)!r} is not a readable GGUF file: {error}") from error


def read_metadata(path_or_reader) -> dict:
    """Every metadata key of a GGUF file with its value as plain Python (str, int, float, bool, list)."""
    reader = path_or_reader if isinstance(path_or_reader, gguf.GGUFReader) else open_reader(path_or_reader)
    return {key: field.contents() for key, field in reader.fields.items()}
