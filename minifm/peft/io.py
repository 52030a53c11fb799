"""Saving and loading one adapter alone: `adapter_model.safetensors` + `adapter_config.json`.

These are PEFT's file names. The safetensors file holds only the adapter's parameters, keyed by
their dotted name with the adapter name removed: LoRA A/B, LoRA's trainable token rows (only the
k selected rows (k, d), key `<embedding>.trainable_tokens_delta`, never the whole table), IA3
vectors, bottleneck adapters, the soft prompt or prefix encoder, plus any trainable biases or
modules_to_save; a few KB to MB instead of the whole model. Loading needs the same base model:
`load_adapter` adds the adapter from the config and copies the saved arrays in, checking names and
shapes. `PeftModel.save_pretrained` and `PeftModel.from_pretrained` (minifm/peft/model.py) are
PEFT's names for these two. Writes are atomic (temporary file + rename), and nothing is unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from minifm.checkpoint import atomic_write_bytes, safetensors_bytes
from minifm.peft.config import PeftConfig

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"


def save_adapter(peft_model, directory, adapter_name: str | None = None) -> Path:
    """Write one adapter (default: the active one) of `peft_model` to `directory`; returns the directory."""
    directory = Path(directory)
    adapter_name = peft_model.active_adapter if adapter_name is None else adapter_name
    if adapter_name not in peft_model.peft_config:
        raise ValueError(f"unknown adapter {adapter_name!r}; adapters: {list(peft_model.peft_config)}")
    if any(layer.merged for layer in peft_model.tuner_layers()):
        raise RuntimeError("unmerge_adapter() before saving: merged weights hide the adapter's own parameters")
    state = {name: np.ascontiguousarray(array) for name, array in peft_model.adapter_state_dict(adapter_name).items()}
    for name, array in state.items():
        if not np.all(np.isfinite(array)):
            raise FloatingPointError(f"adapter parameter {name!r} holds NaN or inf; refusing to save it")
    atomic_write_bytes(directory / ADAPTER_WEIGHTS_NAME, safetensors_bytes(state))
    config = peft_model.peft_config[adapter_name].to_dict()
    atomic_write_bytes(directory / ADAPTER_CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return directory


def load_adapter_config(directory) -> PeftConfig:
    path = Path(directory) / ADAPTER_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {ADAPTER_CONFIG_NAME} in {directory}")
    return PeftConfig.from_dict(json.loads(path.read_text()))


def load_adapter(peft_model, directory, adapter_name: str = "default", is_trainable: bool = False) -> None:
    """Add the adapter saved in `directory` to `peft_model` under `adapter_name` and make it active.

    With is_trainable=False (PEFT's default for loading) the loaded adapter is frozen, ready for inference.
    """
    config = load_adapter_config(directory)
    weights_path = Path(directory) / ADAPTER_WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"no {ADAPTER_WEIGHTS_NAME} in {directory}")
    saved = load_file(str(weights_path))
    if adapter_name not in peft_model.peft_config:
        peft_model.add_adapter(adapter_name, config)
    expected = peft_model.adapter_state_dict(adapter_name)
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise KeyError(f"adapter file {weights_path} does not fit this model: missing {missing}, unexpected {unexpected}")
    for name, target in expected.items():
        if saved[name].shape != target.shape:
            raise ValueError(f"adapter parameter {name!r}: file has shape {saved[name].shape}, model has {target.shape}")
        np.copyto(target, saved[name], casting="same_kind")
    peft_model.set_adapter(adapter_name)
    if not is_trainable:
        loaded_arrays = {id(array) for array in expected.values()}
        for param in peft_model.parameters():
            if id(param.data) in loaded_arrays:
                param.requires_grad = False
