"""`minifm convert SRC DST`: between real checkpoints and minifm run directories.

    minifm convert smollm2-135m-instruct runs/smollm2            GGUF -> a minifm run (model + tokenizer)
    minifm convert path/to/hf-model runs/imported                 Hugging Face directory -> a minifm run
    minifm convert runs/lifecycle/sft exported/ --to hf           a minifm run -> a Hugging Face directory
    minifm convert model.gguf hf-dir/ --to hf                     GGUF -> a Hugging Face directory

--to defaults to the other side: a minifm run for a real checkpoint, a Hugging Face directory for a
minifm run. A Hugging Face directory holds config.json, model.safetensors (float32, Hugging Face
names), tokenizer.json and tokenizer_config.json (with the chat template): transformers and
`tokenizers` load it. A minifm run holds the checkpoint and tokenizer that every minifm command reads
(sft, dpo, generate, chat, ...). DST must not hold a model already unless --overwrite is given.
"""
from __future__ import annotations

from pathlib import Path

from minifm.checkpoint import has_checkpoint
from minifm.cli.common import Command, add_overwrite_argument, check_output_directory, config_values
from minifm.peft import PeftModel
from minifm.pretrained.registry import resolve_model_path
from minifm.runs import load_any, save_run

TARGETS = ("minifm", "hf")


def add_convert_arguments(parser) -> None:
    parser.add_argument("source", metavar="SRC", help="a .gguf file, a Hugging Face directory, a minifm run "
                                                      "directory or a short name (smollm2-135m-instruct, ...)")
    parser.add_argument("destination", metavar="DST", help="the directory to write")
    parser.add_argument("--to", choices=TARGETS, default=None,
                        help="minifm (a run directory) or hf (a Hugging Face directory); default: the other side")
    add_overwrite_argument(parser)


def default_target(source: Path) -> str:
    return "hf" if source.is_dir() and has_checkpoint(source) else "minifm"


def run_convert(args) -> int:
    config_values(args, [])
    source = resolve_model_path(args.source)
    destination = check_output_directory(args.destination, "DST")
    target = args.to or default_target(source)
    holds_model = has_checkpoint(destination) or (destination / "config.json").exists()
    if holds_model and not args.overwrite:
        raise ValueError(f"DST {destination} already holds a model; pass --overwrite to replace it")
    if destination.resolve() == source.resolve():
        raise ValueError(f"DST {destination} is the source itself")
    model, tokenizer = load_any(source)
    if target == "minifm":
        save_run(model, tokenizer, destination)
    else:
        if isinstance(model, PeftModel):
            raise ValueError(f"SRC {args.source} holds a {model.peft_type} adapter that cannot be merged into the "
                             f"weights; Hugging Face directories hold plain models (share the adapter files instead)")
        model.save_pretrained(destination)
        tokenizer.save_pretrained(destination)
    size = sum(file.stat().st_size for file in destination.iterdir() if file.is_file())
    print(f"wrote {destination} ({'minifm run' if target == 'minifm' else 'Hugging Face directory'}, "
          f"{type(model).__name__} with {model.num_parameters():,} parameters, {size / 1e6:.1f} MB)")
    return 0


COMMANDS = [Command("convert", "convert GGUF / Hugging Face checkpoints to minifm runs and back",
                    add_convert_arguments, run_convert)]
