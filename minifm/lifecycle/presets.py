"""The lifecycle's presets, every stage's settings in one table of one shape.

    PRESETS[preset name][stage name] -> {setting: value}

"tiny" is CI's smoke test (well under two minutes on 2 cores); "default" is the full run (about
five minutes on 2 cores; measured figures in docs/). A stage's settings are the fields of the
configs it builds (minifm.train.config.TrainConfig and its subclasses, PretrainConfig,
PeftStageConfig) plus a few of the stage's own (how many prompts, samples, pairs). The
post_training stage nests one table per trainer (sft, reward, ppo, dpo).

A `--config FILE` for `minifm lifecycle` has the same shape ({stage: {setting: value}}) and
overrides single settings; `settings_for` checks every key against this table and every value's
type and range by building the stage's configs (`check_settings`) before any stage runs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from minifm.config import ConfigBase, ConfigError
from minifm.lifecycle.peft_comparison import PeftStageConfig
from minifm.train.config import TrainConfig
from minifm.train.dpo import DPOConfig
from minifm.train.ppo import PPOConfig
from minifm.train.pretrain import PretrainConfig
from minifm.train.reward import RewardConfig
from minifm.train.sft import SFTConfig

# "tiny" and "default" repeat one shape on purpose: each stage's table has the same keys in both presets.
PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {
        "curate": {"corpus_bytes": 120_000, "seed": 0},
        "tokenizer": {"vocab_size": 384},
        "pretrain": {"block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 64, "eval_batches": 4,
                     "max_steps": 60, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 10,
                     "eval_steps": 30, "seed": 0},
        "sampling": {"n_prompts": 3, "samples_per_prompt": 2, "max_new_tokens": 24, "seed": 0},
        "post_training": {
            "n_train_instructions": 256, "n_eval": 24, "n_train_pairs": 256, "n_eval_pairs": 32,
            "sft": {"max_steps": 30, "per_device_train_batch_size": 16, "learning_rate": 2e-3},
            "reward": {"max_steps": 20, "per_device_train_batch_size": 16, "learning_rate": 1e-3},
            "ppo": {"max_steps": 3, "per_device_train_batch_size": 16, "response_length": 16, "num_ppo_epochs": 2,
                    "learning_rate": 3e-5, "kl_coef": 0.3, "ptx_coef": 0.1},
            "dpo": {"max_steps": 10, "per_device_train_batch_size": 16, "learning_rate": 1e-4},
            "best_of_n": 4, "max_new_tokens": 16, "eval_samples": 1,
        },
        "peft": {"max_steps": 6, "per_device_train_batch_size": 8, "n_train": 64, "n_test": 12,
                 "max_new_tokens": 8, "warmup_steps": 1},
    },
    "default": {
        "curate": {"corpus_bytes": 600_000, "seed": 0},
        "tokenizer": {"vocab_size": 1024},
        "pretrain": {"block_size": 96, "n_layer": 4, "n_head": 4, "n_embd": 128, "eval_batches": 8,
                     "max_steps": 450, "per_device_train_batch_size": 16, "learning_rate": 2e-3, "warmup_steps": 40,
                     "eval_steps": 75, "seed": 0},
        "sampling": {"n_prompts": 6, "samples_per_prompt": 4, "max_new_tokens": 48, "seed": 0},
        "post_training": {  # measured figures in docs/post-training.md
            "n_train_instructions": None, "n_eval": None, "n_train_pairs": 2500, "n_eval_pairs": 200,
            "sft": {"max_steps": 150, "per_device_train_batch_size": 32, "learning_rate": 1e-3},
            "reward": {"max_steps": 160, "per_device_train_batch_size": 16, "learning_rate": 3e-4, "max_length": 64},
            "ppo": {"max_steps": 30, "per_device_train_batch_size": 32, "response_length": 24, "num_ppo_epochs": 2,
                    "num_mini_batches": 2, "learning_rate": 6e-5, "kl_coef": 0.3, "temperature": 0.7,
                    "ptx_coef": 1.0},  # PPO-ptx: without it PPO learns style but loses accuracy
            "dpo": {"max_steps": 60, "per_device_train_batch_size": 16, "learning_rate": 3e-5, "beta": 0.25,
                    "rpo_alpha": 1.0, "max_length": 64},
            "best_of_n": 8, "max_new_tokens": 24, "eval_samples": 4,
        },
        "peft": {},  # PeftStageConfig's defaults (minifm/lifecycle/peft_comparison.py)
    },
}

# settings a --config file may give a stage although the preset leaves them at their defaults
OPTIONAL_KEYS = {"peft": tuple(PeftStageConfig.field_names())}


@dataclass
class CurateSettings(ConfigBase):
    corpus_bytes: int = 600_000   # size of the generated tinyworld corpus
    seed: int = 0

    def validate(self) -> None:
        self.check_range("corpus_bytes", low=1)


@dataclass
class TokenizerSettings(ConfigBase):
    vocab_size: int = 1024

    def validate(self) -> None:
        self.check_range("vocab_size", low=300)


@dataclass
class SamplingSettings(ConfigBase):
    n_prompts: int = 6            # prompts: the opening words of unseen tinyworld documents
    samples_per_prompt: int = 4   # samples per prompt for the sampled settings (greedy: one)
    max_new_tokens: int = 48
    seed: int = 0

    def validate(self) -> None:
        for name in ("n_prompts", "samples_per_prompt", "max_new_tokens"):
            self.check_range(name, low=1)


@dataclass
class PostTrainingSettings(ConfigBase):
    """The post_training stage's own settings (its trainers' tables are SFTConfig, RewardConfig, ...)."""

    n_train_instructions: int | None = None   # tinyworld train instructions (None: all)
    n_eval: int | None = None                 # held-out prompts (None: all)
    n_train_pairs: int = 2500                 # preference pairs for the reward model and DPO
    n_eval_pairs: int = 200
    best_of_n: int = 8                        # N of the best-of-N policy
    max_new_tokens: int = 24                  # answer length when evaluating
    eval_samples: int = 4                     # sampled answers per held-out prompt

    def validate(self) -> None:
        for name in ("n_train_instructions", "n_eval", "n_train_pairs", "n_eval_pairs", "max_new_tokens",
                     "eval_samples"):
            self.check_range(name, low=1)
        self.check_range("best_of_n", low=2)


TRAINER_CONFIGS = {"sft": SFTConfig, "reward": RewardConfig, "ppo": PPOConfig, "dpo": DPOConfig}


def stage_configs(stage: str, values: dict) -> list[ConfigBase]:
    """The typed configs that a stage's settings stand for (building them checks every type and range)."""
    if stage == "curate":
        return [CurateSettings(**values)]
    if stage == "tokenizer":
        return [TokenizerSettings(**values)]
    if stage == "sampling":
        return [SamplingSettings(**values)]
    if stage == "peft":
        return [PeftStageConfig(**values)]
    if stage == "pretrain":
        model_keys = PretrainConfig.field_names()
        return [PretrainConfig(**{key: value for key, value in values.items() if key in model_keys}),
                TrainConfig(**{key: value for key, value in values.items() if key not in model_keys})]
    if stage == "post_training":
        own = {key: value for key, value in values.items() if key not in TRAINER_CONFIGS}
        return [PostTrainingSettings(**own)] + [config_class(**values[name])
                                                for name, config_class in TRAINER_CONFIGS.items()]
    raise ValueError(f"unknown lifecycle stage {stage!r}")


def check_settings(settings: dict[str, dict]) -> None:
    """Build every stage's configs, so a wrong type or range stops the run before any stage starts
    (a ConfigError naming the stage, the config class and the field)."""
    for stage, values in settings.items():
        try:
            stage_configs(stage, values)
        except ConfigError as error:
            raise ConfigError(f"stage {stage!r}: {error}", error.field) from None


def _apply(settings: dict, overrides: dict, where: str, optional=()) -> None:
    """Replace settings[key] by overrides[key] (recursing into nested tables); unknown keys are errors."""
    if not isinstance(overrides, dict):
        raise ValueError(f"{where} must be a table of settings, got {overrides!r}")
    valid = sorted(set(settings) | set(optional))
    for key, value in overrides.items():
        if key not in valid:
            raise ValueError(f"unknown setting {key!r} for {where}; valid: {valid}")
        if isinstance(settings.get(key), dict):
            _apply(settings[key], value, f"{where}.{key}")
        else:
            settings[key] = value


def settings_for(preset: str, overrides: dict | None = None) -> dict[str, dict]:
    """A deep copy of PRESETS[preset] with `overrides` ({stage: {setting: value}}) checked and applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    settings = copy.deepcopy(PRESETS[preset])
    for stage, values in (overrides or {}).items():
        if stage not in settings:
            raise ValueError(f"unknown lifecycle stage {stage!r} in the configuration; stages: {list(settings)}")
        _apply(settings[stage], values, f"stage {stage!r}", OPTIONAL_KEYS.get(stage, ()))
    check_settings(settings)
    return settings


__all__ = ["PRESETS", "check_settings", "settings_for", "stage_configs"]
