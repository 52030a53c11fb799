"""Choosing which submodules a PEFT method wraps, and swapping them in place.

PEFT's matching rules:
  * a list of names matches a module whose dotted name equals an entry or ends with "." + entry
    (["q_proj", "v_proj"] matches "blocks.0.attn.q_proj");
  * a string is a regular expression that must match the whole dotted name (re.fullmatch);
  * "all-linear" matches every Linear layer except the output head.
Only Linear layers can be wrapped (a frozen QuantizedLinear counts: its adapters train in float32 on
top of the packed blocks, QLoRA-style); a match that is not one is an error that names it.
"""
from __future__ import annotations

import re

from minifm.nn import Linear, Module
from minifm.nn.quantized import QuantizedLinear
from minifm.peft.layer import TunerLayer

LINEAR_TYPES = (Linear, QuantizedLinear)  # what a LoRA / IA3 / adapter wrapper can hold
OUTPUT_HEAD_NAMES = ("lm_head", "head", "output", "classifier", "mlm_head", "cls_head")


def name_matches(name: str, targets) -> bool:
    """True when the dotted module `name` is selected by `targets` (list of names or regex)."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == target or name.endswith("." + target) for target in targets)


def is_output_head(name: str) -> bool:
    return name.split(".")[-1] in OUTPUT_HEAD_NAMES


def find_linear_targets(model: Module, targets, argument: str = "target_modules") -> list[str]:
    """Dotted names of the Linear layers of `model` that `targets` selects, in module order.

    Raises ValueError (naming `argument`) when nothing matches or when a match is not a Linear.
    Modules that are already PEFT wrappers are looked through: their `base_layer` is not counted twice.
    """
    selected = []
    for name, module in model.named_modules():
        if not name or ".base_layer" in name or name.endswith("base_layer"):
            continue
        if _is_peft_inner(name):
            continue
        if targets == "all-linear":
            if isinstance(module, (*LINEAR_TYPES, TunerLayer)) and not is_output_head(name):
                selected.append(name)
            continue
        if name_matches(name, targets):
            if not isinstance(module, (*LINEAR_TYPES, TunerLayer)):
                raise ValueError(
                    f"{argument} selected {name!r}, a {type(module).__name__}; only Linear layers can be wrapped"
                )
            selected.append(name)
    if not selected:
        linear_names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES)})
        raise ValueError(
            f"{argument}={targets!r} matched no Linear layer of {type(model).__name__}; "
            f"its Linear layers are named {linear_names}"
        )
    return selected


def _is_peft_inner(name: str) -> bool:
    """Names inside a PEFT wrapper (lora_A, lora_B, adapter down/up projections) are never targets."""
    parts = name.split(".")
    return any(part in ("lora_A", "lora_B", "adapters", "ia3_l") for part in parts)
