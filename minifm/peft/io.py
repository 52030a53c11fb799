"""Saving and loading one adapter alone: `adapter_model.safetensors` + `adapter_config.json`, two layouts.

These are PEFT's file names, and the files hold only the adapter (LoRA A/B, LoRA's trainable token rows
— k rows (k, d), never the whole table — IA3 vectors, bottleneck adapters, the soft prompt or prefix
table, plus any trainable biases or modules_to_save): a few KB to MB instead of the whole model.
Loading needs the same base model: `load_adapter` adds the adapter from the config and copies the saved
arrays in, checking names and shapes. `PeftModel.save_pretrained` and `PeftModel.from_pretrained`
(minifm/peft/model.py) are PEFT's names for these two. Writes are atomic (temporary file + rename), and
nothing is unpickled.

The two layouts, and which one is written (`save_adapter(..., layout="auto")`):
  * PEFT's layout (minifm/peft/hf_peft.py): the files Hugging Face PEFT writes for the same adapter on
    the transformers model that `GPT.save_pretrained` exports, so `peft.PeftModel.from_pretrained(
    transformers_model, directory)` loads them: PEFT's config fields, upper-case peft_type ("LORA", "IA3",
    "PROMPT_TUNING", "PREFIX_TUNING"), task_type "CAUSAL_LM", tensor keys such as
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight". "auto" writes it when the base
    model is a GPT that a Hugging Face architecture holds (Llama, Qwen2, GPT-2 layouts; what
    GPT.save_pretrained can write) and the adapter has an exact PEFT form: LoRA (incl. rsLoRA,
    rank/alpha patterns, trainable tokens, biases, modules_to_save), IA3, prompt tuning, and prefix
    tuning on RoPE models.
  * minifm's own layout, the only one before: minifm's parameter names without the adapter name
    ("base_model.blocks.0.attn.q_proj.lora_A.weight") and minifm's lower-case peft_type ("lora",
    "adapter", "prompt", "prefix", "ia3"). "auto" writes it for every other case: bottleneck adapters
    (PEFT has no Houlsby adapter), prefix tuning with learned positions (GPT-2: PEFT shifts the real
    tokens' positions by P), BERT, T5 and GPTs no Hugging Face architecture holds.
`layout="peft"` insists (a ValueError says why an adapter has no exact PEFT form); `layout="minifm"`
writes minifm's layout for any model. Reading tells the layouts apart by the spelling of peft_type, so
the adapter directories of earlier runs (minifm's layout) load as before; a PEFT file needs the base
model to translate its names (`load_adapter_config(directory, model)`). BF16/F16 adapter tensors (PEFT
adapters of bf16 models) are read as float32.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from minifm.checkpoint import atomic_write_bytes, read_json_file, safetensors_bytes
from minifm.peft.config import CONFIG_CLASSES, PeftConfig
from minifm.peft.hf_peft import PEFT_TYPES, NotExpressible, config_from_peft, peft_key, state_from_peft, to_peft
from minifm.pretrained.hf_files import read_header
from minifm.pretrained.quants import dequantize

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
PICKLED_WEIGHTS_NAME = "adapter_model.bin"  # older PEFT files: torch pickles, refused
LAYOUTS = ("auto", "peft", "minifm")


def save_adapter(peft_model, directory, adapter_name: str | None = None, layout: str = "auto") -> Path:
    """Write one adapter (default: the active one) of `peft_model` to `directory`; returns the directory.

    layout: "auto" (PEFT's layout where it is exact, else minifm's), "peft" or "minifm" (module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    directory = Path(directory)
    adapter_name = peft_model.active_adapter if adapter_name is None else adapter_name
    if adapter_name not in peft_model.peft_config:
        raise ValueError(f"unknown adapter {adapter_name!r}; adapters: {list(peft_model.peft_config)}")
    if any(layer.merged for layer in peft_model.tuner_layers()):
        raise RuntimeError("unmerge_adapter() before saving: merged weights hide the adapter's own parameters")
    config, state = None, None
    if layout != "minifm":
        try:
            config, state = to_peft(peft_model, adapter_name)
        except NotExpressible as reason:
            if layout == "peft":
                raise ValueError(f"layout='peft': this adapter has no exact form in PEFT's layout: {reason}") from None
    if state is None:
        config = peft_model.peft_config[adapter_name].to_dict()
        state = peft_model.adapter_state_dict(adapter_name)
    state = {name: np.ascontiguousarray(array) for name, array in state.items()}
    for name, array in state.items():
        if not np.all(np.isfinite(array)):
            raise FloatingPointError(f"adapter parameter {name!r} holds NaN or inf; refusing to save it")
    atomic_write_bytes(directory / ADAPTER_WEIGHTS_NAME, safetensors_bytes(state))
    atomic_write_bytes(directory / ADAPTER_CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return directory


def read_adapter_config(directory) -> tuple[dict, str]:
    """(adapter_config.json as a dict, its layout "peft" or "minifm"); ValueError naming an unknown peft_type."""
    path = Path(directory) / ADAPTER_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {ADAPTER_CONFIG_NAME} in {directory}")
    data = read_json_file(path)
    peft_type = data.get("peft_type")
    if peft_type in PEFT_TYPES:
        return data, "peft"
    if peft_type in CONFIG_CLASSES:
        return data, "minifm"
    raise ValueError(f"{path}: peft_type={peft_type!r} is not a method minifm reads (PEFT's layout: "
                     f"{sorted(PEFT_TYPES)}; minifm's layout: {sorted(CONFIG_CLASSES)})")


def load_adapter_config(directory, model=None) -> PeftConfig:
    """The minifm config saved in `directory`. A file in PEFT's layout names modules as transformers does,
    so it needs the base `model` (the minifm GPT) to translate them."""
    data, layout = read_adapter_config(directory)
    if layout == "minifm":
        return PeftConfig.from_dict(data)
    if model is None:
        raise ValueError(f"{Path(directory) / ADAPTER_CONFIG_NAME} is in PEFT's layout (peft_type "
                         f"{data['peft_type']!r}): pass the base model to translate its module names")
    return config_from_peft(data, getattr(model, "base_model", model))


def read_adapter_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an adapter file; BF16 tensors (which safetensors' NumPy reader refuses) as float32."""
    tensors = {}
    infos = read_header(path)
    with safe_open(str(path), framework="numpy") as handle:
        for name, info in infos.items():
            if info.dtype == "BF16":
                with open(path, "rb") as raw:
                    raw.seek(info.data_start + info.begin)
                    stored = np.frombuffer(raw.read(info.end - info.begin), dtype=np.uint8)
                tensors[name] = dequantize(stored, "BF16", name).reshape(info.shape)
            else:
                tensors[name] = handle.get_tensor(name)
    return tensors


def load_adapter(peft_model, directory, adapter_name: str = "default", is_trainable: bool = False) -> None:
    """Add the adapter saved in `directory` (either layout) to `peft_model` under `adapter_name` and make it
    active.

    With is_trainable=False (PEFT's default for loading) the loaded adapter is frozen, ready for inference.
    Errors name the key of the file: a key no module of the model has, a missing one, a shape mismatch."""
    data, layout = read_adapter_config(directory)
    config = load_adapter_config(directory, peft_model.base_model)
    weights_path = Path(directory) / ADAPTER_WEIGHTS_NAME
    if not weights_path.is_file():
        pickled = Path(directory) / PICKLED_WEIGHTS_NAME
        hint = (f" ({PICKLED_WEIGHTS_NAME} is there: a pickle, which minifm never loads; save the adapter with "
                f"PEFT's save_pretrained(safe_serialization=True))" if pickled.is_file() else "")
        raise FileNotFoundError(f"no {ADAPTER_WEIGHTS_NAME} in {directory}{hint}")
    saved = read_adapter_tensors(weights_path)
    if adapter_name not in peft_model.peft_config:
        peft_model.add_adapter(adapter_name, config)
    if layout == "peft":
        found = state_from_peft(saved, peft_model, adapter_name)  # minifm key -> (array, key in the file)
    else:
        found = {name: (array, name) for name, array in saved.items()}
    expected = peft_model.adapter_state_dict(adapter_name)
    missing = sorted(name for name in expected if name not in found)
    if missing:
        file_keys = sorted({peft_key(name, peft_model) for name in missing}) if layout == "peft" else missing
        raise KeyError(f"adapter file {weights_path} lacks {file_keys} (its config asks for them)")
    unexpected = sorted({file_key for name, (_, file_key) in found.items() if name not in expected})
    if unexpected:
        raise KeyError(f"adapter file {weights_path} has {unexpected}, which this model and adapter_config.json "
                       f"do not have")
    for name, target in expected.items():
        array, file_key = found[name]
        if array.shape != target.shape:
            where = f"adapter key {file_key!r}" if file_key == name else f"adapter key {file_key!r} (minifm's {name!r})"
            raise ValueError(f"{where}: file has shape {array.shape}, model has {target.shape}")
        np.copyto(target, array, casting="same_kind")
    peft_model.set_adapter(adapter_name)
    if not is_trainable:
        loaded_arrays = {id(array) for array in expected.values()}
        for param in peft_model.parameters():
            if id(param.data) in loaded_arrays:
                param.requires_grad = False
