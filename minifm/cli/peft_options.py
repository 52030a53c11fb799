"""The `--peft lora|adapter|prompt|prefix|ia3` option of `minifm sft` and `minifm dpo`.

    add_peft_arguments(parser)          adds --peft and the method's hyper-parameters to an argparse parser
    config_from_args(args)              -> a PeftConfig, or None when --peft is absent / "none"
    apply_peft_from_args(model, args)   -> get_peft_model(model, config) (prints the trainable parameters),
                                           or the model unchanged when --peft is absent / "none"

Flag names mirror the config fields (PEFT's names with dashes): --lora-r, --lora-alpha,
--lora-dropout, --target-modules, --use-rslora, --reduction-factor, --num-virtual-tokens,
--prefix-projection, --prompt-init-text, --trainable-token-indices (LoRA: comma-separated token ids
whose embedding rows also train).

    add_base_dtype_argument(parser)     adds --dtype float32|q8_0|q4_0|q4_1: how the base model's weights are
                                        held while it trains (default float32)
    check_base_dtype(args)              refuses a quantized --dtype without --peft (exit 2, before any load)

A quantized --dtype keeps the base's Linear weights (and token embedding) as frozen GGUF blocks and
trains the --peft method's float32 parameters on top: QLoRA-style (Dettmers et al., 2023), with GGUF's
Q8_0 / Q4_0 / Q4_1 formats where the paper has NF4 (docs/peft.md, "QLoRA: LoRA on quantized weights").
"""
from __future__ import annotations

import argparse

from minifm.models.pretrained import QUANTIZED_DTYPES
from minifm.peft import get_peft_model
from minifm.peft.config import (
    AdapterConfig, IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptTuningConfig,
)

PEFT_CHOICES = ("none", "lora", "adapter", "prompt", "prefix", "ia3")


def add_peft_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("parameter-efficient fine-tuning")
    group.add_argument("--peft", choices=PEFT_CHOICES, default="none",
                       help="train only a PEFT method's parameters (default: none = full fine-tuning)")
    group.add_argument("--lora-r", type=int, default=8, help="LoRA rank r (default 8)")
    group.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: equal to r)")
    group.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the LoRA branch input")
    group.add_argument("--use-rslora", action="store_true", help="scale by alpha/sqrt(r) instead of alpha/r")
    group.add_argument("--target-modules", default=None,
                       help="comma-separated layer names, 'all-linear', or a regex (LoRA / IA3)")
    group.add_argument("--trainable-token-indices", default=None,
                       help="LoRA: comma-separated token ids whose embedding rows also train (e.g. the chat tokens)")
    group.add_argument("--reduction-factor", type=int, default=16, help="bottleneck adapter d / m (default 16)")
    group.add_argument("--num-virtual-tokens", type=int, default=20, help="prompt / prefix length (default 20)")
    group.add_argument("--prefix-projection", action="store_true", help="prefix tuning through an MLP")
    group.add_argument("--prompt-init-text", default=None, help="initialise the soft prompt from this text")
    return parser


def add_base_dtype_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--dtype", choices=("float32",) + QUANTIZED_DTYPES, default=None,
                        help="how the base model's weights are held while it trains (default float32): q8_0, q4_0 or "
                             "q4_1 keeps them as frozen quantized blocks and needs --peft (QLoRA-style: float32 "
                             "adapters on a quantized base)")
    return parser


def base_dtype(args: argparse.Namespace) -> str:
    """The --dtype to load the base model in: float32 unless a quantized format was asked for."""
    return getattr(args, "dtype", None) or "float32"


def check_base_dtype(args: argparse.Namespace) -> None:
    """A quantized base cannot be fully fine-tuned: --dtype q* needs --peft (a ValueError, exit 2)."""
    dtype = base_dtype(args)
    if dtype in QUANTIZED_DTYPES and (getattr(args, "peft", "none") or "none") == "none":
        raise ValueError(f"--dtype {dtype} keeps the base weights as frozen {dtype} blocks, which have no gradient: "
                         f"add --peft lora (or ia3, adapter, prompt, prefix) to train float32 adapters on top, or "
                         f"use --dtype float32 for full fine-tuning")


def _targets(value: str | None):
    if value is None or value == "all-linear":
        return value
    if "," in value or value.isidentifier():
        return [item.strip() for item in value.split(",") if item.strip()]
    return value  # a regular expression


def _token_ids(value: str | None):
    if value is None:
        return None
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--trainable-token-indices must be comma-separated integers, got {value!r}") from None


def config_from_args(args: argparse.Namespace) -> PeftConfig | None:
    method = getattr(args, "peft", "none") or "none"
    if method == "none":
        return None
    if method == "lora":
        alpha = args.lora_r if args.lora_alpha is None else args.lora_alpha
        return LoraConfig(r=args.lora_r, lora_alpha=alpha, lora_dropout=args.lora_dropout,
                          target_modules=_targets(args.target_modules), use_rslora=args.use_rslora,
                          trainable_token_indices=_token_ids(getattr(args, "trainable_token_indices", None)))
    if method == "adapter":
        return AdapterConfig(reduction_factor=args.reduction_factor)
    if method == "prompt":
        if args.prompt_init_text:
            return PromptTuningConfig(num_virtual_tokens=args.num_virtual_tokens, prompt_tuning_init="TEXT",
                                      prompt_tuning_init_text=args.prompt_init_text)
        return PromptTuningConfig(num_virtual_tokens=args.num_virtual_tokens)
    if method == "prefix":
        return PrefixTuningConfig(num_virtual_tokens=args.num_virtual_tokens, prefix_projection=args.prefix_projection)
    if method == "ia3":
        return IA3Config(target_modules=_targets(args.target_modules))
    raise ValueError(f"--peft must be one of {PEFT_CHOICES}, got {method!r}")


def apply_peft_from_args(model, args: argparse.Namespace, tokenizer=None):
    """The model wrapped per the --peft flags (or unchanged without --peft); prints the trainable share."""
    config = config_from_args(args)
    if config is None:
        return model
    peft_model = get_peft_model(model, config, tokenizer=tokenizer)
    peft_model.print_trainable_parameters()
    return peft_model
