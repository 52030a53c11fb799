"""Which architecture a checkpoint is, and the two directions: checkpoint -> minifm weights, minifm -> checkpoint.

Every supported Hugging Face architecture has one module here with the same parts: ARCHITECTURES
(the `architectures` names of config.json it reads), config_from_hf / config_to_hf (config.json <->
minifm config fields), rules(config) (the name table, minifm/pretrained/name_maps.py), matches(config)
(whether a minifm config can be written as this architecture), NAME_ALIASES and IGNORED_SUFFIXES.

    family "gpt"  (minifm GPT):   llama.py (Llama, Mistral, Qwen2), gpt2.py (GPT-2)
    family "bert" (minifm BERT):  bert.py

Reading (`pretrained_weights`) walks the table row by row and reads one checkpoint tensor at a time,
so at most one float32 copy of the weights is alive at once. It is strict where silence would hurt:
a tensor the model needs that the checkpoint lacks, a shape that disagrees, or a checkpoint tensor no
row reads (a sign that the table and the checkpoint disagree) is an error naming the tensor.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import ModuleType

import numpy as np

from minifm.pretrained import bert, gpt2, llama
from minifm.pretrained.name_maps import export_tensors, load_tensor

FAMILIES: dict[str, tuple[ModuleType, ...]] = {"gpt": (llama, gpt2), "bert": (bert,)}


def architecture_module(hf_config: Mapping, family: str) -> ModuleType:
    """The module that reads this config.json's architecture, or a ValueError listing the supported ones."""
    names = hf_config.get("architectures") or []
    for module in FAMILIES[family]:
        if any(name in module.ARCHITECTURES for name in names):
            return module
    supported = [name for module in FAMILIES[family] for name in module.ARCHITECTURES]
    raise ValueError(f"config.json: architectures={names!r} cannot be read as a minifm "
                     f"{family.upper()} (supported: {supported})")


def checkpoint_name(module: ModuleType, name: str, tensors: Mapping) -> str | None:
    """The name under which `tensors` holds the row's tensor `name`, trying the architecture's aliases."""
    if name in tensors:
        return name
    for prefix, alias in module.NAME_ALIASES:
        if name.startswith(prefix):
            candidate = alias + name[len(prefix):]
            if candidate in tensors:
                return candidate
    return None


def pretrained_weights(module: ModuleType, config: Mapping, tensors: Mapping,
                       expected_shapes: Mapping[str, tuple]) -> Iterator[tuple[str, np.ndarray]]:
    """(minifm name, array) for every parameter in expected_shapes, read from `tensors` by the table.

    tensors: checkpoint name -> array (read on access). expected_shapes: the model's parameter shapes.
    Raises KeyError for a required tensor the checkpoint lacks and ValueError for a shape mismatch or a
    checkpoint tensor that no row reads.
    """
    used: set[str] = set()
    for rule in module.rules(config):
        if rule.minifm not in expected_shapes:
            if rule.minifm == "lm_head.weight" and checkpoint_name(module, rule.hf, tensors):
                used.add(checkpoint_name(module, rule.hf, tensors))  # a tied head saved anyway: the embedding
            continue  # lm_head with tied weights, biases of a bias-free model
        name = checkpoint_name(module, rule.hf, tensors)
        if name is None:
            if rule.optional:
                continue
            raise KeyError(f"the checkpoint has no tensor {rule.hf!r} (needed for minifm's {rule.minifm!r})")
        array = load_tensor(rule, tensors[name])
        if array.shape != tuple(expected_shapes[rule.minifm]):
            raise ValueError(f"tensor {name!r} gives shape {array.shape} for minifm's {rule.minifm!r}, "
                             f"which has shape {tuple(expected_shapes[rule.minifm])}")
        used.add(name)
        yield rule.minifm, array
    unused = [name for name in tensors if name not in used and not name.endswith(module.IGNORED_SUFFIXES)]
    if unused:
        shown = ", ".join(repr(name) for name in unused[:5])
        raise ValueError(f"{len(unused)} checkpoint tensor(s) are not read by minifm's {module.__name__} table, "
                         f"e.g. {shown}: the checkpoint does not match its config.json")


def hf_export(family: str, config: Mapping, state: Mapping[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json dict, Hugging Face name -> tensor) for a minifm model's config fields and state dict.

    config must carry the resolved FFN width as mlp_hidden. A ValueError when no supported architecture
    can hold this configuration (say, RoPE with LayerNorm): Hugging Face has no class for it.
    """
    for module in FAMILIES[family]:
        if module.matches(config):
            hf_config = module.config_to_hf(config)
            skip_tied = (lambda rule: rule.minifm == "lm_head.weight") if config.get("tie_weights") else None
            tensors = export_tensors(module.rules(config), state, skip=skip_tied or (lambda rule: False))
            return hf_config, tensors
    layout = {key: config.get(key) for key in ("pos", "norm", "mlp", "bias", "norm_position") if key in config}
    raise ValueError(f"no Hugging Face architecture that minifm writes has this {family.upper()} layout {layout}; "
                     f"supported: Llama (pos='rope', norm='rmsnorm', mlp='swiglu'), GPT-2 (pos='learned', "
                     f"norm='layernorm', mlp='gelu'/'gelu_tanh', bias=True), BERT (norm_position='post', "
                     f"embedding_norm=True, type_vocab_size > 0)")
