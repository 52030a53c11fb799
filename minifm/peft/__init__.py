"""Parameter-efficient fine-tuning, with Hugging Face PEFT's names and defaults.

    config.py          LoraConfig, AdapterConfig, PromptTuningConfig, PrefixTuningConfig, IA3Config
    model.py           get_peft_model(model, config) -> PeftModel (freezes the base, injects the method)
    lora.py            LoRA: W x + (alpha / r) B A x, merge / unmerge
    trainable_tokens.py  LoraConfig(trainable_token_indices=...): train a few embedding rows (tied head too)
    adapters.py        Houlsby bottleneck adapters after attention and/or the MLP
    prompt_tuning.py   a learned soft prompt fed through inputs_embeds
    prefix_tuning.py   learned per-layer key/value prefixes through the attention's extra_kv hook
    ia3.py             learned rescaling of keys, values and the FFN activation
    io.py              save_adapter / load_adapter (adapter_model.safetensors + adapter_config.json), in
                       PEFT's layout or minifm's; PeftModel.save_pretrained / PeftModel.from_pretrained call them
    hf_peft.py         PEFT's layout both ways: config fields and tensor keys (fused c_attn, prefix RoPE shift)
    hf_names.py        minifm <-> transformers module names from the pretrained Rule rows; PEFT's name rules
"""
from minifm.peft.config import (
    AdapterConfig, IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptTuningConfig,
)
from minifm.peft.io import load_adapter, save_adapter
from minifm.peft.model import PeftModel, get_peft_model

from_pretrained = PeftModel.from_pretrained  # also a plain function: minifm.peft.from_pretrained(model, dir)

__all__ = [
    "AdapterConfig", "IA3Config", "LoraConfig", "PeftConfig", "PeftModel", "PrefixTuningConfig",
    "PromptTuningConfig", "from_pretrained", "get_peft_model",
    "load_adapter", "save_adapter",
]

