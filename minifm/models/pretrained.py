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

dtype (GPT only for the quantized ones):
    None        the file's own: a GGUF's quantized Linear weights and token embedding stay in the format
                the file stores them in (SmolLM2-135M-Instruct.Q4_1.gguf: Q4_1 Linear weights, a Q8_0
                embedding that is also its tied output head); float32 for float files and HF directories
    "float32"   every weight dequantized to float32 (as before quantized loading existed); "float64" too
    "q8_0" | "q4_0" | "q4_1"   every Linear weight in that format, and the token embedding (also the
                output head of a tied model) in Q8_0 (EMBEDDING_DTYPE), as llama.cpp's 4-bit files keep it
                (SmolLM2's Q4_1 file too): on SmolLM2 a Q4_0 table and head made held-out perplexity +39%
                over float32, a Q8_0 one +20% (tests/models/test_quantized_gpt.py). A weight the file
                holds in that very format keeps its stored blocks; any other is quantized on load from
                its float32 values (a Hugging Face directory, or a GGUF's dequantized values)
A GGUF whose Linear weights mix quantized formats loads with dtype=None in the most common one (the
others requantized from their values). Quantized weights live in frozen layers (minifm/nn/quantized.py):
their bytes are copied from the file one tensor at a time and no float32 copy of them is made; the
model's parameters (norms, biases) are frozen too (GPT: requires_grad=False), so training it needs adapters.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_bytes, save_safetensors
from minifm.memory import release_free_memory
from minifm.nn import init
from minifm.nn.layers import Linear
from minifm.nn.quantized import QuantizedEmbedding, QuantizedLinear
from minifm.pretrained.architectures import architecture_module, checkpoint_name, hf_export, pretrained_weights
from minifm.pretrained.checkpoint_files import read_checkpoint
from minifm.pretrained.name_maps import load_tensor
from minifm.pretrained.quants import QUANTIZED_TYPES, check_finite_scales, quantize

FLOAT_DTYPES = ("float32", "float64")
QUANTIZED_DTYPES = ("q8_0", "q4_0", "q4_1")  # quants.QUANTIZED_TYPES in lower case
LOADABLE_DTYPES = FLOAT_DTYPES + QUANTIZED_DTYPES  # float32, float64, q8_0, q4_0, q4_1
EMBEDDING_DTYPE = "q8_0"  # the token embedding (and tied head) of a model loaded in any quantized dtype


def load_pretrained(model_class, config_class, family: str, path: str | os.PathLike, dtype: str | None = None):
    """A `model_class` holding the checkpoint at `path`, its weights in `dtype` (see the module docstring)."""
    if dtype is not None and str(dtype) not in LOADABLE_DTYPES:
        raise ValueError(f"dtype must be one of {list(LOADABLE_DTYPES)} or None (the file's own), got {dtype!r}")
    if family != "gpt" and dtype in QUANTIZED_DTYPES:
        raise ValueError(f"dtype={dtype!r}: quantized weights are for GPT models; {model_class.__name__} loads "
                         f"in {list(FLOAT_DTYPES)}")
    with read_checkpoint(path) as checkpoint:  # closed afterwards: a GGUF reader holds ~100 MB of vocabulary
        module = architecture_module(checkpoint.config, family)
        fields = dict(module.config_from_hf(checkpoint.config), dtype="float64" if dtype == "float64" else "float32")
        if family == "gpt":
            fields.update(_weight_storage(model_class, config_class, fields, module, checkpoint, dtype))
        config = config_class.from_dict(fields)
        with init.skipped_initialisation():
            model = model_class(config)
        loaded, used = set(), set()  # minifm names filled, checkpoint names read
        quantized_layers = _quantized_layers(model)  # minifm name -> the layer keeping that weight quantized
        for name, hf_name in _load_quantized(module, config.to_dict(), checkpoint, quantized_layers):
            loaded.add(name)
            used.add(hf_name)
        parameters = dict(model.named_parameters())
        shapes = {name: param.shape for name, param in parameters.items()}
        remaining = _Without(checkpoint.tensors, used)  # the tensors already in quantized layers are done
        for name, array in pretrained_weights(module, config.to_dict(), remaining, shapes):
            parameters[name].data = np.asarray(array, dtype=np.dtype(config.dtype))
            loaded.add(name)
    release_free_memory()  # the reader's metadata objects are garbage now: give their heap pages back
    model.newly_initialized = [name for name in parameters if name not in loaded]
    if model.newly_initialized:
        _initialise_missing(model, config, set(model.newly_initialized))
    model.pretrained_source = str(path)
    model.eval()
    return model


def _weight_storage(model_class, config_class, fields: dict, module, checkpoint, dtype) -> dict:
    """{"weight_dtype": ..., "embedding_dtype": ...} for a GPT loaded in `dtype` (the module docstring)."""
    if dtype in QUANTIZED_DTYPES:
        return {"weight_dtype": dtype, "embedding_dtype": EMBEDDING_DTYPE}
    if dtype in FLOAT_DTYPES or checkpoint.format != "gguf":
        return {}
    with init.skipped_initialisation():  # the float layout, to see which weights are Linear weights
        probe = model_class(config_class.from_dict(fields))
    linear_names = {f"{name}.weight" for name, layer in probe.named_modules() if type(layer) is Linear}
    stored = {}
    for rule in module.rules(probe.config.to_dict()):
        hf_name = checkpoint_name(module, rule.hf, checkpoint)
        if hf_name is not None:
            stored[rule.minifm] = checkpoint.stored_type(hf_name)
    linear_types = Counter(stored[name] for name in linear_names if stored.get(name) in QUANTIZED_TYPES)
    embedding_type = stored.get("wte.weight")
    return {
        "weight_dtype": linear_types.most_common(1)[0][0].lower() if linear_types else None,
        "embedding_dtype": embedding_type.lower() if embedding_type in QUANTIZED_TYPES else None,
    }


def _quantized_layers(model) -> dict:
    """{"blocks.0.attn.q_proj.weight": its QuantizedLinear, "wte.weight": a QuantizedEmbedding, ...}."""
    return {f"{name}.weight": layer for name, layer in model.named_modules()
            if isinstance(layer, (QuantizedLinear, QuantizedEmbedding))}


def _load_quantized(module, config: dict, checkpoint, layers: dict) -> Iterator[tuple[str, str]]:
    """Fill each quantized layer from the checkpoint; yields (minifm name, checkpoint name) per weight.

    The stored blocks are copied as they are when the file holds the layer's format and the row maps the
    tensor unchanged; otherwise the float32 values (dequantized by the reader, transposed or split by the
    row as for a float model) are quantized to the layer's format. One tensor at a time.
    """
    for rule in module.rules(config):
        layer = layers.get(rule.minifm)
        if layer is None:
            continue
        hf_name = checkpoint_name(module, rule.hf, checkpoint)
        if hf_name is None:
            raise KeyError(f"the checkpoint has no tensor {rule.hf!r} (needed for minifm's {rule.minifm!r})")
        plain = not rule.transpose and rule.parts == 1
        if plain and checkpoint.stored_type(hf_name) == layer.weight_type:
            blocks = checkpoint.tensor(hf_name, dequantize=False)
            check_finite_scales(blocks)  # the float path's check_finite, for blocks kept as they are
        else:
            blocks = quantize(load_tensor(rule, checkpoint.tensor(hf_name)), layer.weight_type, rule.minifm)
        layer.load_blocks(blocks, f"tensor {hf_name!r} for minifm's {rule.minifm!r}")
        yield rule.minifm, hf_name


class _Without(Mapping):
    """A checkpoint's lazy tensor mapping without the names in `hidden` (already loaded elsewhere)."""

    def __init__(self, tensors: Mapping, hidden: set):
        self._tensors, self._hidden = tensors, hidden

    def __getitem__(self, name):
        if name in self._hidden:
            raise KeyError(name)
        return self._tensors[name]

    def __contains__(self, name) -> bool:
        return name not in self._hidden and name in self._tensors

    def __iter__(self):
        return (name for name in self._tensors if name not in self._hidden)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _initialise_missing(model, config, names: set[str]) -> None:
    """Give the parameters the checkpoint lacked a proper value (their np.empty memory is undefined)."""
    fresh = type(model)(config)  # seeded GPT-2 initialisation: the same values a new model would get
    parameters = dict(model.named_parameters())
    for name, param in fresh.named_parameters():
        if name in names:
            parameters[name].data = param.data


def save_pretrained(model, family: str, directory: str | os.PathLike) -> Path:
    """Write `model` as a Hugging Face directory: config.json and model.safetensors (float32, HF names).

    A quantized model is written with its weights' float32 values (Hugging Face directories have no block
    formats; transformers itself dequantizes a GGUF on load). Keep the blocks with runs.save_run."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(model.config.to_dict(), mlp_hidden=model.config.ffn_hidden)
    quantized = _quantized_layers(model)  # a Hugging Face directory holds float32: their values, dequantized
    state = {name: quantized[name].dequantized_weight() if name in quantized else np.asarray(array, dtype=np.float32)
             for name, array in model.state_dict().items()}
    hf_config, tensors = hf_export(family, config, state)
    save_safetensors(directory / "model.safetensors", tensors, metadata={"format": "pt"})
    atomic_write_bytes(directory / "config.json", (json.dumps(hf_config, indent=2, sort_keys=True) + "\n").encode())
    return directory
