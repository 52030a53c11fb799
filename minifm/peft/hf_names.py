"""Hugging Face names for a minifm GPT's modules and parameters, and PEFT's rules for picking modules.

A PEFT adapter file names every layer by its path in the transformers model, which is not minifm's:

    minifm                  LlamaForCausalLM                     GPT2LMHeadModel
    wte                     model.embed_tokens                   transformer.wte
    blocks.0.attn.q_proj    model.layers.0.self_attn.q_proj      transformer.h.0.attn.c_attn  (part 0 of 3)
    blocks.0.attn.o_proj    model.layers.0.self_attn.o_proj      transformer.h.0.attn.c_proj
    blocks.0.mlp.fc_out     -                                    transformer.h.0.mlp.c_proj
    blocks.0.norm1          model.layers.0.input_layernorm       transformer.h.0.ln_1

No second table is written for this. `HFNames` reads the Rule rows that GPT.from_pretrained and
GPT.save_pretrained use (minifm/pretrained/llama.py, gpt2.py; minifm/pretrained/name_maps.py): a row
pairs a minifm parameter with a Hugging Face tensor, and a row for "<module>.weight" pairs the two
module paths (".weight" stripped), keeping GPT-2's fused c_attn as parts 0, 1, 2 of 3 and its Conv1D
transpose. Only the rows whose minifm parameter the model has are kept (no lm_head when the head is
tied, no biases in a Llama).

PEFT's name rules, applied to the Hugging Face paths:
  target_modules, exclude_modules   a list: the path equals an entry or ends with "." + entry;
                                    a string: a regular expression that matches the whole path;
                                    "all-linear": every Linear layer except the output head
  modules_to_save                   the path ends with an entry (a plain string suffix)
  rank_pattern, alpha_pattern       the first key k for which re.match("(.*\\.)?(k)$", path) holds
`shortest_names` and `shortest_pattern` go the other way: from a set of modules to the shortest names
that select exactly that set (["q_proj", "v_proj"] rather than four full paths), so the configs written
read like hand-written ones, and every choice is checked against the rule that will read it.

Which models: a minifm GPT whose configuration one of the Hugging Face architectures that minifm exports
can hold (Llama, Qwen2, GPT-2); `HFNames.for_model` gives None for any other model (BERT, T5, a GPT
with RoPE and LayerNorm, ...), whose adapters keep minifm's own file layout (minifm/peft/io.py).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType

from minifm.models.gpt import GPT
from minifm.nn import Module
from minifm.nn.quantized import QuantizedEmbedding, QuantizedLinear
from minifm.peft.config import pattern_key
from minifm.peft.layer import TunerLayer
from minifm.peft.targeting import LINEAR_TYPES, is_output_head, name_matches
from minifm.pretrained.architectures import FAMILIES
from minifm.pretrained.name_maps import Rule

# parts of a parameter name that belong to an adapter, not to the base model
ADAPTER_NAME_PARTS = ("lora_A", "lora_B", "ia3_l", "adapters", "trainable_tokens_delta", "prompt_encoder")


def plain_parameter_names(model: Module) -> dict[str, str]:
    """{plain name: actual name} of the base model's parameters. A wrapped layer's parameter
    "blocks.0.attn.q_proj.base_layer.weight" is plainly "blocks.0.attn.q_proj.weight"; adapter
    parameters are left out. A quantized layer's packed weight (a buffer, minifm/nn/quantized.py)
    counts as the parameter it stands for, so a quantized base has the same names as its float32 model."""
    names = {}
    quantized_weights = [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
                         if isinstance(module, (QuantizedLinear, QuantizedEmbedding))]
    for name in [name for name, _ in model.named_parameters()] + quantized_weights:
        parts = name.split(".")
        if any(part in ADAPTER_NAME_PARTS for part in parts):
            continue
        names[".".join(part for part in parts if part != "base_layer")] = name
    return names


def module_rule(rule: Rule) -> Rule:
    """The row for "<module>.weight" as a row between module paths."""
    return Rule(rule.minifm[:-len(".weight")], rule.hf[:-len(".weight")], rule.transpose, rule.part, rule.parts)


def parent_path(name: str) -> str:
    """"model.layers.0.input_layernorm.weight" -> "model.layers.0.input_layernorm"."""
    return name.rsplit(".", 1)[0]


def peft_target_matches(path: str, targets) -> bool:
    """PEFT's target_modules / exclude_modules rule (see the module docstring; "all-linear" is handled
    by the caller)."""
    return name_matches(path, targets)


def peft_suffix_matches(path: str, names) -> bool:
    """PEFT's modules_to_save rule: the path ends with one of the names (a plain string suffix)."""
    return any(path.endswith(name) for name in names)


class HFNames:
    """minifm <-> Hugging Face names for one GPT, read from its architecture's Rule rows."""

    def __init__(self, model: Module, architecture: ModuleType, config: Mapping):
        self.model = model
        self.architecture = architecture
        self.hf_config = architecture.config_to_hf(config)
        self.architecture_name = self.hf_config["architectures"][0]
        self.actual_names = plain_parameter_names(model)  # plain minifm name -> name in the (wrapped) model
        self.parameter_rules: dict[str, Rule] = {}  # minifm parameter -> row
        self.hf_parameter_rules: dict[str, list[Rule]] = {}  # Hugging Face tensor -> its rows, in part order
        for rule in architecture.rules(config):
            if rule.minifm in self.actual_names:
                self.parameter_rules[rule.minifm] = rule
                self.hf_parameter_rules.setdefault(rule.hf, []).append(rule)
        self.module_rules: dict[str, Rule] = {}  # minifm module path -> row between module paths
        self.hf_module_rules: dict[str, list[Rule]] = {}  # Hugging Face module path -> rows, in part order
        for name, rule in self.parameter_rules.items():
            if name.endswith(".weight") and rule.hf.endswith(".weight"):
                row = module_rule(rule)
                self.module_rules[row.minifm] = row
                self.hf_module_rules.setdefault(row.hf, []).append(row)
        for rows in (*self.hf_parameter_rules.values(), *self.hf_module_rules.values()):
            rows.sort(key=lambda row: row.part)
        self.linear_modules = [name for name in self.module_rules if self._is_linear(name)]
        self.hf_linear_modules = sorted({self.module_rules[name].hf for name in self.linear_modules})

    @classmethod
    def for_model(cls, model: Module) -> "HFNames | None":
        """The names of `model` if it is a GPT that a Hugging Face architecture can hold, else None."""
        if not isinstance(model, GPT):
            return None
        config = dict(model.config.to_dict(), mlp_hidden=model.config.ffn_hidden)  # as save_pretrained
        for architecture in FAMILIES["gpt"]:
            if architecture.matches(config):
                return cls(model, architecture, config)
        return None

    def _is_linear(self, module_path: str) -> bool:
        module = self.model.get_submodule(module_path)
        if isinstance(module, TunerLayer):
            module = module.base_layer
        return isinstance(module, LINEAR_TYPES)  # a quantized base layer is a Linear to transformers

    @property
    def uses_rope(self) -> bool:
        return self.model.config.pos == "rope"

    # ------------------------------------------------------------------ one name
    def hf_module(self, minifm_module: str) -> Rule:
        """The row that places a minifm module (blocks.0.attn.q_proj) in the Hugging Face model."""
        if minifm_module not in self.module_rules:
            raise KeyError(f"minifm module {minifm_module!r} has no counterpart in {self.architecture_name} "
                           f"(modules with one: {sorted(self.module_rules)[:8]} ...)")
        return self.module_rules[minifm_module]

    def minifm_modules(self, hf_module: str, key: str) -> list[Rule]:
        """The rows of a Hugging Face module path (three for GPT-2's c_attn); `key` names the file entry
        in the error."""
        if hf_module not in self.hf_module_rules:
            raise KeyError(f"adapter key {key!r}: {hf_module!r} is not a module of this {self.architecture_name} "
                           f"model (its layers are named like {self.hf_linear_modules[:3]})")
        return self.hf_module_rules[hf_module]

    def hf_parameter(self, minifm_parameter: str) -> Rule:
        if minifm_parameter not in self.parameter_rules:
            raise KeyError(f"minifm parameter {minifm_parameter!r} has no counterpart in {self.architecture_name}")
        return self.parameter_rules[minifm_parameter]

    # ------------------------------------------------------------------ PEFT's selections
    def select_hf_linear(self, targets, argument: str) -> set[str]:
        """The Hugging Face Linear-layer paths that target_modules-style `targets` selects (PEFT's rule).

        ValueError naming `argument` when nothing is selected, or when a selected module is not a Linear
        layer (minifm's LoRA and IA3 wrap Linear layers only)."""
        if targets == "all-linear":
            return {self.module_rules[name].hf for name in self.linear_modules if not is_output_head(name)}
        if isinstance(targets, str):
            targets_shown = targets
        elif isinstance(targets, (list, tuple, set)) and all(isinstance(item, str) for item in targets):
            targets = sorted(targets)
            targets_shown = targets
        else:
            raise ValueError(f"adapter_config.json: {argument} must be a list of module names, a regular "
                             f"expression or 'all-linear', got {targets!r}")
        selected = {path for path in self.hf_module_rules if peft_target_matches(path, targets)}
        not_linear = sorted(path for path in selected if path not in self.hf_linear_modules)
        if not_linear:
            raise ValueError(f"adapter_config.json: {argument}={targets_shown!r} selects {not_linear[0]!r}, which is "
                             f"not a Linear layer; minifm adapts Linear layers only")
        if not selected:
            leaf_names = sorted({path.split(".")[-1] for path in self.hf_linear_modules})
            raise ValueError(f"adapter_config.json: {argument}={targets_shown!r} matches no module of this "
                             f"{self.architecture_name} model; its Linear layers are named {leaf_names}")
        return selected

    def select_hf_saved_modules(self, names, argument: str = "modules_to_save") -> set[str]:
        """The Hugging Face modules (any depth) that modules_to_save `names` selects (PEFT's suffix rule)."""
        if isinstance(names, str) or not all(isinstance(item, str) for item in names):
            raise ValueError(f"adapter_config.json: {argument} must be a list of module names, got {names!r}")
        selected = {path for path in self.all_hf_module_paths() if peft_suffix_matches(path, names)}
        if not selected:
            raise ValueError(f"adapter_config.json: {argument}={list(names)!r} matches no module of this "
                             f"{self.architecture_name} model")
        return selected

    def all_hf_module_paths(self) -> set[str]:
        """Every module path of the Hugging Face model that holds a parameter, at any depth."""
        paths = set()
        for name in self.hf_parameter_rules:
            parts = name.split(".")
            for end in range(1, len(parts)):
                paths.add(".".join(parts[:end]))
        return paths

    def all_minifm_module_paths(self) -> set[str]:
        paths = set()
        for name in self.parameter_rules:
            parts = name.split(".")
            for end in range(1, len(parts)):
                paths.add(".".join(parts[:end]))
        return paths


# ---------------------------------------------------------------------- from modules back to names
def shortest_names(selected: Iterable[str], candidates: Iterable[str],
                   matches: Callable[[str, list[str]], bool], start_depth: int = 1) -> tuple[list[str], int]:
    """(names, depth): the last `depth` path components of every selected module, for the smallest
    depth >= start_depth at which those names select exactly `selected` among `candidates` under
    `matches`; the full paths when no shorter names do."""
    selected = set(selected)
    candidates = set(candidates) | selected
    longest = max(len(path.split(".")) for path in selected)
    for depth in range(start_depth, longest + 1):
        names = sorted({".".join(path.split(".")[-depth:]) for path in selected})
        chosen = {path for path in candidates if matches(path, names)}
        if chosen == selected:
            return names, depth
    return sorted(selected), longest


def shortest_pattern(values: Mapping[str, object], default) -> dict:
    """A rank_pattern / alpha_pattern dict under which every module of `values` (path -> value) resolves
    to its value and the others in `values` to `default` (PEFT's rule, `pattern_key`), with the
    shortest keys that do so; {} when every value is the default."""
    special = {path: value for path, value in values.items() if value != default}
    if not special:
        return {}
    longest = max(len(path.split(".")) for path in values)
    for depth in range(1, longest + 1):
        pattern = {}
        for path, value in sorted(special.items()):
            key = ".".join(path.split(".")[-depth:])
            if pattern.get(key, value) != value:
                break  # two modules with this name want different values: look deeper
            pattern[key] = value
        else:
            if all(_resolved(pattern, path, default) == value for path, value in values.items()):
                return pattern
    return {re.escape(path): value for path, value in sorted(special.items())}


def _resolved(pattern: dict, path: str, default):
    key = pattern_key(pattern, path)
    return default if key is None else pattern[key]
