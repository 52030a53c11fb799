"""Configuration dataclasses of the parameter-efficient fine-tuning methods.

Names and defaults follow Hugging Face PEFT where PEFT has the method:
  LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=None, bias="none", use_rslora=False,
             modules_to_save=None, trainable_token_indices=None, rank_pattern={}, alpha_pattern={})
  PromptTuningConfig(num_virtual_tokens, prompt_tuning_init="RANDOM"|"TEXT", prompt_tuning_init_text)
  PrefixTuningConfig(num_virtual_tokens, prefix_projection=False, encoder_hidden_size)
  IA3Config(target_modules, feedforward_modules)
PEFT has no Houlsby bottleneck adapter; `AdapterConfig` takes its names (reduction_factor, mh_adapter,
output_adapter, non_linearity) from the `adapters` library's bottleneck config.

Deviations, documented in docs/peft.md:
  * target_modules=None means the architecture's defaults (q_proj and v_proj for LoRA, like PEFT's
    default for most decoders; k_proj, v_proj and the FFN output projection for IA3);
  * "all-linear" matches every Linear except the output head (lm_head / any Linear whose output size
    equals the vocabulary and that is called "lm_head" or "head"), as PEFT does;
  * every config validates its fields at construction and names the argument in the error.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np

from minifm.config import ConfigBase, ConfigError

PEFT_TYPES = ("lora", "adapter", "prompt", "prefix", "ia3")


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_token_indices(value):
    """None, a list of ids (the input embedding) or {embedding name: list of ids}; ranges are checked
    against the model in get_peft_model (minifm/peft/trainable_tokens.py)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        value = list(value)
    lists = value.values() if isinstance(value, dict) else [value]
    if isinstance(value, dict) and (not value or not all(isinstance(key, str) for key in value)):
        raise ValueError(f"trainable_token_indices as a dict needs module-name keys, got {value!r}")
    for ids in lists:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)) or not ids:
            raise ValueError(f"trainable_token_indices must be a non-empty list of token ids or a dict of them, "
                             f"got {value!r}")
        for token in ids:
            if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or token < 0:
                raise ValueError(f"trainable_token_indices must hold non-negative integer token ids, got {token!r}")
    if isinstance(value, dict):
        return {key: [int(token) for token in ids] for key, ids in value.items()}
    return [int(token) for token in value]  # plain ints: JSON-serialisable in adapter_config.json


def _check_pattern(name: str, value: dict, kind) -> dict:
    """rank_pattern / alpha_pattern: {module-name regex: positive value} (PEFT's per-module overrides)."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of module-name pattern -> value, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"{name} keys must be module-name patterns (strings), got {key!r}")
        try:
            re.compile(key)
        except re.error as error:
            raise ValueError(f"{name} key {key!r} is not a valid regular expression ({error})") from None
        valid = (isinstance(item, int) if kind is int else isinstance(item, (int, float)))
        if isinstance(item, bool) or not valid or item <= 0:
            raise ValueError(f"{name}[{key!r}] must be a positive {kind.__name__}, got {item!r}")
    return dict(value)


def pattern_key(pattern: dict, module_name: str) -> str | None:
    """The first key of `pattern` that matches `module_name`, or None: PEFT's rule, a key is a regular
    expression that must match the end of the name at a "." boundary (re.match of "(.*\\.)?(key)$"), so
    "v_proj" matches "blocks.0.attn.v_proj" and "blocks.1.attn.q_proj" only that one module."""
    for key in pattern:
        if re.match(rf"(.*\.)?({key})$", module_name):
            return key
    return None


def _check_targets(name: str, value) -> None:
    if value is None or isinstance(value, str):
        if isinstance(value, str) and value != "all-linear":
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"{name} is not a valid regular expression: {value!r} ({error})") from None
        return
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(item, str) for item in value):
        if len(value) == 0:
            raise ValueError(f"{name} must not be an empty list")
        return
    raise TypeError(f"{name} must be None, 'all-linear', a regex string or a list of names, got {value!r}")


@dataclass
class PeftConfig(ConfigBase):
    """Fields shared by every method (PEFT's `peft_type`, `task_type`, `base_model_name_or_path`).

    A minifm ConfigBase whose from_dict also dispatches on "peft_type" (PeftConfig.from_dict of an
    adapter_config.json gives the method's own class, as PEFT's files are read) and whose to_dict
    writes sets as sorted lists; each method checks its fields in __post_init__ with PEFT's messages."""

    peft_type: str = field(default="", init=False)
    modules_to_save: list[str] | None = None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, (set, frozenset, tuple)):
                data[key] = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PeftConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__}")
        data = dict(data)
        peft_type = data.pop("peft_type", None)
        target_class = CONFIG_CLASSES.get(peft_type, cls) if cls is PeftConfig else cls
        if peft_type is not None and target_class.peft_type_name != peft_type:
            raise ValueError(f"config peft_type {peft_type!r} does not match {target_class.__name__}")
        valid = {f.name for f in dataclasses.fields(target_class) if f.init}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown {target_class.__name__} keys {unknown}; valid keys are {sorted(valid)}",
                              unknown[0])
        return target_class(**data)


@dataclass
class LoraConfig(PeftConfig):
    """LoRA: W x + (alpha / r) * B A x with A (r, in) Kaiming-uniform and B (out, r) zero.

    trainable_token_indices (PEFT >= 0.15): token ids whose embedding rows also train (a list for the
    input embedding, or {embedding name: ids}); see minifm/peft/trainable_tokens.py.
    rank_pattern / alpha_pattern (PEFT's names): {module-name pattern: r or lora_alpha} overriding r and
    lora_alpha for the modules a pattern matches (`pattern_key`); `for_module(name)` resolves them."""

    peft_type_name = "lora"
    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    bias: str = "none"
    use_rslora: bool = False
    modules_to_save: list[str] | None = None
    init_lora_weights: bool = True
    trainable_token_indices: list[int] | dict[str, list[int]] | None = None  # rows of the embedding to train
    rank_pattern: dict[str, int] = field(default_factory=dict)  # module-name pattern -> r
    alpha_pattern: dict[str, float] = field(default_factory=dict)  # module-name pattern -> lora_alpha

    def __post_init__(self):
        self.peft_type = "lora"
        self.rank_pattern = _check_pattern("rank_pattern", self.rank_pattern, int)
        self.alpha_pattern = _check_pattern("alpha_pattern", self.alpha_pattern, float)
        self.trainable_token_indices = _check_token_indices(self.trainable_token_indices)
        _check_positive_int("r", self.r)
        if not isinstance(self.lora_alpha, (int, float)) or self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be a positive number, got {self.lora_alpha!r}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {self.bias!r}")
        _check_targets("target_modules", self.target_modules)

    @property
    def scaling(self) -> float:
        """alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski, 2023)."""
        if self.use_rslora:
            return float(self.lora_alpha) / float(self.r) ** 0.5
        return float(self.lora_alpha) / float(self.r)

    def for_module(self, module_name: str) -> "LoraConfig":
        """This config with r and lora_alpha as rank_pattern / alpha_pattern set them for `module_name`."""
        rank_key = pattern_key(self.rank_pattern, module_name)
        alpha_key = pattern_key(self.alpha_pattern, module_name)
        if rank_key is None and alpha_key is None:
            return self
        rank = self.r if rank_key is None else self.rank_pattern[rank_key]
        alpha = self.lora_alpha if alpha_key is None else self.alpha_pattern[alpha_key]
        return dataclasses.replace(self, r=rank, lora_alpha=alpha, rank_pattern={}, alpha_pattern={})


@dataclass
class AdapterConfig(PeftConfig):
    """Houlsby bottleneck adapters: h + up(act(down(h))) after attention and/or the MLP."""

    peft_type_name = "adapter"
    reduction_factor: int = 16
    mh_adapter: bool = True
    output_adapter: bool = True
    non_linearity: str = "swish"
    modules_to_save: list[str] | None = None

    def __post_init__(self):
        self.peft_type = "adapter"
        _check_positive_int("reduction_factor", self.reduction_factor)
        if not (self.mh_adapter or self.output_adapter):
            raise ValueError("at least one of mh_adapter (after attention) and output_adapter (after MLP) must be True")
        if self.non_linearity not in ("relu", "gelu", "silu", "swish", "tanh"):
            raise ValueError(f"non_linearity must be relu, gelu, silu/swish or tanh, got {self.non_linearity!r}")


@dataclass
class PromptTuningConfig(PeftConfig):
    """Prompt tuning: num_virtual_tokens learned input embeddings prepended to every sequence."""

    peft_type_name = "prompt"
    num_virtual_tokens: int = 20
    prompt_tuning_init: str = "RANDOM"
    prompt_tuning_init_text: str | None = None
    modules_to_save: list[str] | None = None

    def __post_init__(self):
        self.peft_type = "prompt"
        _check_positive_int("num_virtual_tokens", self.num_virtual_tokens)
        if self.prompt_tuning_init not in ("RANDOM", "TEXT"):
            raise ValueError(f"prompt_tuning_init must be 'RANDOM' or 'TEXT', got {self.prompt_tuning_init!r}")
        if self.prompt_tuning_init == "TEXT" and not self.prompt_tuning_init_text:
            raise ValueError("prompt_tuning_init='TEXT' needs a non-empty prompt_tuning_init_text")


@dataclass
class PrefixTuningConfig(PeftConfig):
    """Prefix tuning: learned keys and values prepended in every attention layer."""

    peft_type_name = "prefix"
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    modules_to_save: list[str] | None = None

    def __post_init__(self):
        self.peft_type = "prefix"
        _check_positive_int("num_virtual_tokens", self.num_virtual_tokens)
        if self.encoder_hidden_size is not None:
            _check_positive_int("encoder_hidden_size", self.encoder_hidden_size)


@dataclass
class IA3Config(PeftConfig):
    """IA3: learned vectors rescale keys, values and the feed-forward activation."""

    peft_type_name = "ia3"
    target_modules: list[str] | str | None = None
    feedforward_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None

    def __post_init__(self):
        self.peft_type = "ia3"
        _check_targets("target_modules", self.target_modules)
        _check_targets("feedforward_modules", self.feedforward_modules)


CONFIG_CLASSES = {
    "lora": LoraConfig,
    "adapter": AdapterConfig,
    "prompt": PromptTuningConfig,
    "prefix": PrefixTuningConfig,
    "ia3": IA3Config,
}
