"""How one checkpoint tensor becomes one minifm parameter, and back: the rows of the per-architecture tables.

Each architecture file (llama.py, gpt2.py, bert.py) lists its weights as `Rule` rows:

    Rule(minifm="blocks.{i}.attn.q_proj.weight", hf="transformer.h.{i}.attn.c_attn.weight",
         transpose=True, part=0, parts=3)

meaning: minifm's parameter is the Hugging Face tensor, transposed (GPT-2 stores its Conv1D weights as
(in, out), torch's Linear as (out, in)), then cut into `parts` equal pieces along the output axis, of
which it takes piece `part` (GPT-2 fuses q, k and v into one c_attn projection). `{i}` stands for the
layer index; `expand_rules` writes one row per layer.

Loading applies the rows forward (`load_tensor`); export (`export_tensors`) applies them backward,
gathering the parts of one fused tensor in order and undoing the transpose, so one table serves both
directions and the two cannot drift apart. A row with optional=True may be absent from a checkpoint
(a BertModel checkpoint has no masked-LM head): the parameter then keeps its initial value.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rule:
    minifm: str  # parameter name in minifm's state dict ("{i}" = layer index)
    hf: str  # tensor name in the Hugging Face checkpoint ("{i}" = layer index)
    transpose: bool = False  # the checkpoint stores (in, out): GPT-2's Conv1D
    part: int = 0  # which of `parts` equal pieces along the output axis (fused q/k/v)
    parts: int = 1
    optional: bool = False  # may be missing from a checkpoint (the parameter keeps its initial value)

    def for_layer(self, index: int) -> "Rule":
        return Rule(self.minifm.format(i=index), self.hf.format(i=index), self.transpose, self.part, self.parts,
                    self.optional)


def expand_rules(model_rules: Iterable[Rule], layer_rules: Iterable[Rule], n_layer: int) -> list[Rule]:
    """The model-level rows, then every layer's rows with {i} filled in."""
    rules = list(model_rules)
    layer_rules = list(layer_rules)
    for index in range(n_layer):
        rules.extend(rule.for_layer(index) for rule in layer_rules)
    return rules


def load_tensor(rule: Rule, tensor: np.ndarray) -> np.ndarray:
    """The minifm parameter that `rule` makes of the checkpoint tensor (a view where possible)."""
    if rule.transpose and tensor.ndim == 2:
        tensor = tensor.T  # (in, out) -> (out, in)
    if rule.parts > 1:
        rows = tensor.shape[0]
        if rows % rule.parts:
            raise ValueError(f"tensor {rule.hf!r} has {rows} output rows, not divisible into {rule.parts} parts")
        size = rows // rule.parts
        tensor = tensor[rule.part * size:(rule.part + 1) * size]  # (out / parts, ...)
    return np.ascontiguousarray(tensor)


def export_tensors(rules: Iterable[Rule], state: Mapping[str, np.ndarray],
                   skip: Callable[[Rule], bool] = lambda rule: False) -> dict[str, np.ndarray]:
    """Hugging Face name -> tensor for every rule (the inverse of load_tensor), fused parts concatenated."""
    pieces: dict[str, list[tuple[int, Rule]]] = {}
    for rule in rules:
        if rule.minifm not in state or skip(rule):
            continue
        pieces.setdefault(rule.hf, []).append((rule.part, rule))
    tensors = {}
    for hf_name, parts in pieces.items():
        parts.sort(key=lambda item: item[0])
        expected = parts[0][1].parts
        if [part for part, _ in parts] != list(range(expected)):
            raise ValueError(f"cannot export {hf_name!r}: its {expected} parts are not all in the model")
        tensor = np.concatenate([np.asarray(state[rule.minifm]) for _, rule in parts], axis=0)  # (out, ...)
        if parts[0][1].transpose and tensor.ndim == 2:
            tensor = tensor.T  # (out, in) -> (in, out)
        tensors[hf_name] = np.ascontiguousarray(tensor)
    return tensors


_MISSING = object()


def config_value(hf_config: Mapping, key: str, default=_MISSING):
    """hf_config[key], its default when absent, or a KeyError naming the key and the architecture."""
    if key in hf_config and hf_config[key] is not None:
        return hf_config[key]
    if default is _MISSING:
        architecture = (hf_config.get("architectures") or ["?"])[0]
        raise KeyError(f"config.json of this {architecture} checkpoint has no {key!r}")
    return default


def check_supported(hf_config: Mapping, key: str, supported: Iterable, what: str) -> None:
    """A ValueError naming `key` and the value seen when hf_config[key] is not one minifm implements."""
    value = hf_config.get(key)
    supported = list(supported)
    if value not in supported:
        raise ValueError(f"config.json: {key}={value!r} is not supported by minifm ({what}; supported: {supported})")
