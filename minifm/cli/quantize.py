"""`minifm quantize SRC --dtype q8_0|q4_0|q4_1 [--out DIR]`: a GPT with its weights in a GGUF block format.

    minifm quantize runs/lifecycle/sft --dtype q8_0                  -> runs/lifecycle/sft-q8_0
    minifm quantize smollm2-135m-instruct --dtype q4_0 --out runs/smollm2-q4_0
    minifm quantize path/to/hf-llama --dtype q4_1                    -> runs/hf-llama-q4_1
    minifm chat --model runs/smollm2-q4_0                            (runs quantized, as saved)

SRC is anything `minifm generate --model` takes: a minifm run directory, a Hugging Face directory, a
.gguf file or a short name. Every Linear weight and the token embedding (also the output head when
tied) are stored in the chosen format (minifm/nn/quantized.py); norms and biases stay float32. A
weight that SRC already stores in that very format keeps its blocks; anything else is quantized from
its float32 values (a GGUF's other formats are dequantized first: requantizing Q4_1 to Q4_0 adds the
second rounding to the first). The result is a minifm run directory (model.safetensors holds the
blocks as uint8 arrays) that every command loads as it is; --out defaults to SRC's name with the
format appended (beside SRC for a run directory, under runs/ otherwise). DST must not hold a model
unless --overwrite. GPT models only: a BERT or a reward / value model is a one-line error.
"""
from __future__ import annotations

from pathlib import Path

from minifm.checkpoint import has_checkpoint
from minifm.cli.common import Command, add_overwrite_argument, check_output_directory, config_values
from minifm.models.pretrained import QUANTIZED_DTYPES
from minifm.nn.quantized import packed_nbytes
from minifm.pretrained.registry import KNOWN_MODELS, resolve_model_path
from minifm.runs import load_any, save_run


def add_quantize_arguments(parser) -> None:
    parser.add_argument("source", metavar="SRC", help="a minifm run directory, a Hugging Face directory, a .gguf file "
                                                      "or a short name (smollm2-135m-instruct)")
    parser.add_argument("--dtype", required=True, choices=QUANTIZED_DTYPES,
                        help="the block format of the weights: q8_0 (8-bit), q4_0 or q4_1 (4-bit)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="the run directory to write (default: SRC's name + -DTYPE, beside a run directory, "
                             "else under runs/)")
    add_overwrite_argument(parser)


def default_output(source: str, path: Path, dtype: str) -> Path:
    """SRC-DTYPE beside a run directory; runs/NAME-DTYPE for a real model (NAME: the short name or file stem)."""
    if path.is_dir() and has_checkpoint(path):
        return path.parent / f"{path.name}-{dtype}"
    name = source.lower() if source.lower() in KNOWN_MODELS else (path.stem if path.is_file() else path.name)
    return Path("runs") / f"{name}-{dtype}"


def run_quantize(args) -> int:
    config_values(args, [])
    source = resolve_model_path(args.source)
    destination = default_output(args.source, source, args.dtype) if args.out is None else Path(args.out)
    check_output_directory(destination, "--out")
    holds_model = has_checkpoint(destination) or (destination / "config.json").exists()
    if holds_model and not args.overwrite:
        raise ValueError(f"--out {destination} already holds a model; pass --overwrite to replace it")
    if destination.resolve() == source.resolve():
        raise ValueError(f"--out {destination} is SRC itself; give another directory")
    model, tokenizer = load_any(source, dtype=args.dtype)
    save_run(model, tokenizer, destination)
    packed = packed_nbytes(model)
    floats = sum(param.data.nbytes for param in model.parameters())
    size = sum(file.stat().st_size for file in destination.iterdir() if file.is_file())
    print(f"wrote {destination} (minifm run: {type(model).__name__} with {args.dtype} weights, {packed / 1e6:.1f} MB "
          f"of blocks + {floats / 1e6:.2f} MB of float32 norms/biases; {size / 1e6:.1f} MB on disk)")
    return 0


COMMANDS = [Command("quantize", "store a GPT's weights as Q8_0 / Q4_0 / Q4_1 blocks in a new run directory",
                    add_quantize_arguments, run_quantize)]
