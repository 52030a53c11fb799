"""Run directories: what a trained model leaves on disk, and how every command finds it again.

A run directory is a checkpoint (minifm.checkpoint: model.safetensors, train_state.json with the
checkpoint record, config.json, maybe optimizer.safetensors) plus the tokenizer it was trained
with. Every writer in minifm (pre-training, the post-training stages, the lifecycle, the CLI)
produces one, and every reader uses the rules here:

  the model      is rebuilt from the checkpoint record (model_class + model_config in
                 train_state.json), whichever stage wrote it: GPT, BERT, T5, or a RewardModel /
                 ValueModel on a GPT backbone; then its weights are loaded and checked
  the tokenizer  is `tokenizer.json` in the run directory, else in its parent (a lifecycle stage
                 directory such as runs/lifecycle/sft shares runs/lifecycle/tokenizer.json)
  an adapter     that could not be merged (prompt, prefix or bottleneck adapters) is recorded in
                 peft.json ({"method", "merged"}) beside its adapter files and put back on the
                 base model, frozen, when the run is loaded

`save_run(model, tokenizer, directory)` writes a finished model so that `load_run(directory)`
gives it back (a quantized GPT keeps its Q8_0 / Q4_0 / Q4_1 blocks: model.safetensors holds them as
uint8 arrays under the weights' usual names, config.json names the formats, see minifm/nn/quantized.py); a PEFT-wrapped model also writes its adapter alone (adapter_config.json +
adapter_model.safetensors, the small file to share); LoRA and IA3 are merged first.

The tokenizer file is minifm's own BPE format (a trained run) or a Hugging Face tokenizer.json (a
run converted from a real model); `load_tokenizer` tells them apart by the file's `format` key.

`load_any(name_or_path, dtype="float32")` is what the commands that use a model (generate, chat, embed,
convert, quantize, the training stages) call: a run directory, a Hugging Face directory, a .gguf
file, or a known short name (minifm/pretrained/registry.py), each with its tokenizer. The default
float32 is what training and export need; generate and chat pass None (their --dtype default), which
keeps the model as stored: a GGUF's own quantized formats, a run as saved. "q8_0" | "q4_0" | "q4_1"
quantize a GPT (GPT.from_pretrained for real checkpoints, GPT.convert_weights for runs). A QLoRA run
(an adapter kept apart from quantized blocks) loads in float32 with the adapter merged, so a second
stage can start from it (`run_model_in_dtype`).
"""
from __future__ import annotations

import json
from pathlib import Path

from minifm.checkpoint import (
    TRAIN_STATE_FILE, atomic_write_json, checkpoint_record, has_checkpoint, load_checkpoint, read_json_file,
    save_checkpoint,
)
from minifm.models import BERT, GPT, T5, BERTConfig, GPTConfig, RewardModel, T5Config, ValueModel
from minifm.nn import init
from minifm.peft import PeftModel, from_pretrained, save_adapter
from minifm.pretrained.registry import resolve_model_path
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained
from minifm.tokenizer.bpe import FILE_FORMAT as MINIFM_TOKENIZER_FORMAT

TOKENIZER_FILE = "tokenizer.json"
PEFT_MARKER_FILE = "peft.json"
BACKBONES = {"GPT": (GPT, GPTConfig), "BERT": (BERT, BERTConfig), "T5": (T5, T5Config)}
HEADS = {"RewardModel": RewardModel, "ValueModel": ValueModel}  # scalar heads on a GPT backbone


def model_from_record(record: dict, where: str = "checkpoint"):
    """An untrained model of the class and config a checkpoint record names (see the module docstring)."""
    class_name, config = record.get("model_class"), record.get("model_config")
    if config is None:
        raise ValueError(f"{where}: the checkpoint record has no model_config")
    if class_name in BACKBONES:
        model_class, config_class = BACKBONES[class_name]
        if config.get("weight_dtype") or config.get("embedding_dtype"):  # quantized: the checkpoint fills every
            with init.skipped_initialisation():                          # block, so nothing is drawn or quantized
                return model_class(config_class.from_dict(config))
        return model_class(config_class.from_dict(config))
    if class_name in HEADS:
        return HEADS[class_name](GPT(GPTConfig.from_dict(config)))
    raise ValueError(f"{where} holds a {class_name!r}; minifm can load {sorted(BACKBONES) + sorted(HEADS)}")


def find_tokenizer(directory) -> Path:
    """`directory`/tokenizer.json, else the parent's (a lifecycle stage directory), else FileNotFoundError."""
    directory = Path(directory)
    for candidate in (directory / TOKENIZER_FILE, directory.parent / TOKENIZER_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {TOKENIZER_FILE} in {directory} or in its parent {directory.parent}")


def load_model(directory):
    """The model saved in `directory`, weights checked and loaded (a non-merged adapter put back on)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    model = model_from_record(checkpoint_record(directory), str(directory))
    load_checkpoint(directory, model)
    marker = directory / PEFT_MARKER_FILE
    if marker.is_file() and not json.loads(marker.read_text(encoding="utf-8"))["merged"]:
        model = from_pretrained(model, directory, tokenizer=load_tokenizer(find_tokenizer(directory)))
    return model


def load_tokenizer(path):
    """The tokenizer in a tokenizer.json: minifm's BPE format or a Hugging Face file (see the module docstring)."""
    path = Path(path)
    if read_json_file(path).get("format") == MINIFM_TOKENIZER_FORMAT:
        return BPETokenizer.load(path)
    return tokenizer_from_pretrained(path.parent)


def load_run(directory):
    """(model, tokenizer) of a run directory."""
    model = load_model(directory)
    return model, load_tokenizer(find_tokenizer(directory))


def run_model_in_dtype(model, dtype: str, name_or_path):
    """A loaded run's model with its weights in `dtype` ("float32" | "q8_0" | "q4_0" | "q4_1").

    A run trained with an adapter over quantized blocks (QLoRA: `minifm sft --dtype q4_1 --peft lora`)
    holds the blocks and the adapter apart, because merging into blocks would round. Here its base is
    dequantized under the adapter and a LoRA or IA3 adapter is then merged exactly into the float32
    weights: the fine-tuned model, which a next stage trains like any other run's. A quantized dtype
    then rounds that merged model (GPT.convert_weights). Adapters that cannot be merged (prompt, prefix,
    bottleneck) stay on, over a base converted to `dtype`."""
    adapted = isinstance(model, PeftModel)
    plain = model.base_model if adapted else model
    if dtype == "float32" and not getattr(getattr(plain, "config", None), "quantized", False):
        return model  # nothing to convert
    if type(plain) is not GPT:
        holds = f"an adapter on a {type(plain).__name__}" if adapted else f"a {type(plain).__name__}"
        raise ValueError(f"dtype={dtype!r}: converting weights applies to GPT models; {name_or_path} holds {holds}")
    if adapted:
        model.convert_weights("float32")  # the base's blocks dequantized under the adapter
        if not model.mergeable:
            return model.convert_weights(dtype)
        model = model.merge_and_unload()  # exact: into float32 weights
        if dtype == "float32":
            return model
    return model.convert_weights(dtype)


def load_any(name_or_path, dtype: str | None = "float32"):
    """(model, tokenizer) from a run directory, a Hugging Face directory, a .gguf file or a known short name.

    dtype "float32" (the default: what training and export need) dequantizes quantized weights; None
    keeps the model as stored (a GGUF's own formats, a run as saved); "q8_0" | "q4_0" | "q4_1" quantizes
    a GPT's Linear weights and token embedding (GPT.from_pretrained, GPT.convert_weights)."""
    path = resolve_model_path(name_or_path)
    if path.is_dir() and has_checkpoint(path):
        model, tokenizer = load_run(path)
        return (model if dtype is None else run_model_in_dtype(model, dtype, name_or_path)), tokenizer
    if path.is_file() and path.suffix == ".gguf":
        return GPT.from_pretrained(path, dtype=dtype), tokenizer_from_pretrained(path)
    if path.is_dir() and (path / "config.json").is_file():
        architectures = read_json_file(path / "config.json").get("architectures") or []
        model_class = BERT if any(name.startswith("Bert") for name in architectures) else GPT
        return model_class.from_pretrained(path, dtype=dtype), tokenizer_from_pretrained(path)
    raise ValueError(f"{name_or_path} is not a run directory (no {TRAIN_STATE_FILE}), a Hugging Face directory "
                     f"(no config.json) or a .gguf file")


def save_run(model, tokenizer, directory) -> Path:
    """Write a finished model and its tokenizer so that `load_run(directory)` gives them back.

    A PeftModel also writes its adapter alone. LoRA and IA3 are then merged, so model.safetensors is
    the fine-tuned model that later stages load like any other; the other methods cannot be merged,
    so model.safetensors is their base model and peft.json says to put the adapter back on."""
    directory = Path(directory)
    if isinstance(model, PeftModel):
        save_adapter(model, directory)
        merged = model.mergeable
        atomic_write_json(directory / PEFT_MARKER_FILE, {"method": model.peft_type, "merged": merged})
        model = model.merge_and_unload() if merged else model.unload()  # the wrapper is spent afterwards
    save_checkpoint(directory, model)
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(directory / TOKENIZER_FILE)
    else:
        tokenizer.save_pretrained(directory)  # a real model's tokenizer: Hugging Face's tokenizer.json
    return directory


__all__ = ["find_tokenizer", "load_any", "load_model", "load_run", "load_tokenizer", "model_from_record", "save_run"]
