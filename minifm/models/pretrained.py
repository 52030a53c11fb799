"""Real checkpoints in and out of minifm's model classes: GPT/BERT.from_pretrained and .save_pretrained.

    from_pretrained(path):  read_checkpoint(path)          config.json + tensors under Hugging Face names
                                                            (a Hugging Face directory or a .gguf file)
                            architectures.architecture_module   which table reads it (llama, gpt2, bert)
                            module.config_from_hf          -> the minifm config
                            build the model without random initialisation, then put each tensor in place
                            (one tensor read at a time: no second float32 copy of the weights)
    save_pretrained(dir):   architectures.hf_export        -> config.json + model.safetensors under HF names

The model keeps where it came from in `model.pretrained_source` and the parameters the checkpoint did
not hold (BertModel has no masked-LM head) in `model.newly_initialized`, as transformers reports them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_bytes, save_safetensors
from minifm.nn import init
from minifm.pretrained.architectures import architecture_module, hf_export, pretrained_weights
from minifm.pretrained.checkpoint_files import read_checkpoint

LOADABLE_DTYPES = ("float32", "float64")


def load_pretrained(model_class, config_class, family: str, path: str | os.PathLike, dtype: str | None = None):
    """A `model_class` holding the checkpoint at `path` (see the module docstring); dtype float32 (default) or float64."""
    dtype = "float32" if dtype is None else str(dtype)
    if dtype not in LOADABLE_DTYPES:
        raise ValueError(f"dtype must be one of {list(LOADABLE_DTYPES)}, got {dtype!r}")
    with read_checkpoint(path) as checkpoint:  # closed afterwards: a GGUF reader holds ~100 MB of vocabulary
        module = architecture_module(checkpoint.config, family)
        config = config_class.from_dict(dict(module.config_from_hf(checkpoint.config), dtype=dtype))
        with init.skipped_initialisation():
            model = model_class(config)
        parameters = dict(model.named_parameters())
        shapes = {name: param.shape for name, param in parameters.items()}
        loaded = set()
        for name, array in pretrained_weights(module, config.to_dict(), checkpoint.tensors, shapes):
            parameters[name].data = np.asarray(array, dtype=np.dtype(dtype))
            loaded.add(name)
    model.newly_initialized = [name for name in parameters if name not in loaded]
    if model.newly_initialized:
        _initialise_missing(model, config, set(model.newly_initialized))
    model.pretrained_source = str(path)
    model.eval()
    return model


def _initialise_missing(model, config, names: set[str]) -> None:
    """Give the parameters the checkpoint lacked a proper value (their np.empty memory is undefined)."""
    fresh = type(model)(config)  # seeded GPT-2 initialisation: the same values a new model would get
    parameters = dict(model.named_parameters())
    for name, param in fresh.named_parameters():
        if name in names:
            parameters[name].data = param.data


def save_pretrained(model, family: str, directory: str | os.PathLike) -> Path:
    """Write `model` as a Hugging Face directory: config.json and model.safetensors (float32, HF names)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(model.config.to_dict(), mlp_hidden=model.config.ffn_hidden)
    state = {name: np.asarray(array, dtype=np.float32) for name, array in model.state_dict().items()}
    hf_config, tensors = hf_export(family, config, state)
    save_safetensors(directory / "model.safetensors", tensors, metadata={"format": "pt"})
    atomic_write_bytes(directory / "config.json", (json.dumps(hf_config, indent=2, sort_keys=True) + "\n").encode())
    return directory
