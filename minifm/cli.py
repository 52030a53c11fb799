"""The `minifm` command: one subcommand per lifecycle step, plus `info`.

    minifm lifecycle [--preset tiny|default]   every stage on tinyworld, report.md + report.json
    minifm curate    --input tinyworld          quality rules + dedup, the per-rule table
    minifm tokenize  --input tinyworld          train a BPE tokenizer, fertility / bytes per token
    minifm pretrain  [--arch gpt|bert|t5]       pre-train on tinyworld / python-stdlib / your files
    minifm generate  --run runs/NAME            sample from a run (interactive without --prompt)
    minifm info                                 version, kernel backend, a tiny forward/backward

Configuration: every setting is a flag (`--max-steps 500`), and `--config FILE` (TOML or JSON, a
flat table of the same names, dashes or underscores) supplies them too; flags win over the file,
the file over the defaults. An unknown key is an error that lists the valid keys.
Output goes to <out>/<run-name>/ (default runs/<name>/).

Extension point for other stages: EXTENSION_REGISTRARS lists "module:function" names; each
function receives the argparse subparsers object and adds its subcommands, each with
`set_defaults(func=handler)` where handler(args) -> exit code (the helpers below may be used:
add_run_arguments, add_dataclass_arguments, build_dataclasses). The post-training commands
(`sft`, `reward`, `ppo`, `dpo`) come in this way from minifm/lifecycle_post.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
import typing
from pathlib import Path

EXTENSION_REGISTRARS = [  # "module:function(subparsers)" adding more subcommands
    "minifm.lifecycle_post:add_post_training_commands",  # sft, reward, ppo, dpo
]


# ---------------------------------------------------------------------------------------- config helpers
def read_config_file(path) -> dict:
    """A flat dict from a .toml or .json file (keys with dashes become underscores)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--config: {path} does not exist")
    if path.suffix.lower() == ".toml":
        import tomllib

        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    elif path.suffix.lower() == ".json":
        values = json.loads(path.read_text(encoding="utf-8"))
    else:
        raise ValueError(f"--config must be a .toml or .json file, got {path.name}")
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} must hold a table/object at the top level")
    return {key.replace("-", "_"): value for key, value in values.items()}


def _field_type(cls, field):
    hints = typing.get_type_hints(cls)
    annotation = hints[field.name]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def add_dataclass_arguments(parser, cls, title: str | None = None, skip=()) -> None:
    """One `--field-name` flag per dataclass field (default None: "not given", so files/defaults apply)."""
    group = parser.add_argument_group(title or cls.__name__)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = _field_type(cls, field)
        default = field.default if field.default is not dataclasses.MISSING else None
        if kind is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"(default {default})")
        else:
            group.add_argument(flag, dest=field.name, type=kind, default=None, metavar=field.name.upper(),
                               help=f"(default {default})")


def build_dataclasses(args, classes, file_values: dict | None = None) -> list:
    """Instantiate each dataclass from defaults < --config file values < flags.

    Keys of the file must belong to one of the classes; an unknown key raises ValueError listing
    the valid ones."""
    file_values = dict(file_values or {})
    valid = [f.name for cls in classes for f in dataclasses.fields(cls)]
    unknown = sorted(set(file_values) - set(valid))
    if unknown:
        raise ValueError(f"unknown configuration keys {unknown}; valid keys: {sorted(valid)}")
    built = []
    for cls in classes:
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in file_values:
                values[field.name] = file_values[field.name]
            flag_value = getattr(args, field.name, None)
            if flag_value is not None:
                values[field.name] = flag_value
        built.append(cls(**values))
    return built


def add_run_arguments(parser, default_name: str) -> None:
    """--run-name, --out and --config, shared by the commands that write a run directory."""
    parser.add_argument("--run-name", default=default_name, help=f"run directory name (default {default_name})")
    parser.add_argument("--out", default="runs", help="parent directory of runs (default runs)")
    parser.add_argument("--config", default=None, help="TOML or JSON file of settings (flags override it)")


def run_directory(args) -> Path:
    return Path(args.out) / args.run_name


# ---------------------------------------------------------------------------------------- lifecycle
def add_lifecycle_arguments(parser) -> None:
    from minifm.lifecycle import PRESETS, STAGES

    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="tiny: a 2-minute smoke run; default: the full run (under 10 minutes of "
                             "pre-training + sampling on 2 cores)")
    add_run_arguments(parser, "lifecycle")
    parser.add_argument("--stages", default=None,
                        help="comma-separated subset of stages to run, in order: " + ",".join(s.name for s in STAGES))


def lifecycle_main(args) -> int:
    from minifm.lifecycle import run_lifecycle

    overrides = read_config_file(args.config) if args.config else None
    stages = None if args.stages is None else [s.strip() for s in args.stages.split(",") if s.strip()]
    run_lifecycle(preset=args.preset, run_name=args.run_name, out=args.out, stages=stages, overrides=overrides)
    return 0


# ---------------------------------------------------------------------------------------- curate
def add_curate_arguments(parser) -> None:
    parser.add_argument("--input", default="tinyworld",
                        help="tinyworld (default), python-stdlib, a .txt/.md file, a folder or a .jsonl of {text}")
    parser.add_argument("--corpus-bytes", type=int, default=300_000, help="size of a generated corpus")
    parser.add_argument("--rules", choices=["web", "code"], default=None,
                        help="rule preset (default: code for python-stdlib, web otherwise)")
    parser.add_argument("--show", type=int, default=3, help="print this many dropped documents per rule")
    parser.add_argument("--output", default=None, help="write the kept documents to this .jsonl ({\"text\": ...})")


def curate_main(args) -> int:
    from minifm.data.quality import QualityPipeline
    from minifm.data.sources import load_corpus

    texts = load_corpus(args.input, max_bytes=args.corpus_bytes) if args.input in ("tinyworld", "python-stdlib") \
        else load_corpus(args.input)
    rules = args.rules or ("code" if args.input == "python-stdlib" else "web")
    result = QualityPipeline(preset=rules).run(texts)
    print(result.table())
    for rule, dropped in result.dropped_by_rule().items():
        for document in dropped[:args.show]:
            print(f"\n[{rule}] {document.reason}\n    {document.text[:200]!r}")
    if args.output:
        from minifm.checkpoint import atomic_write_bytes

        lines = "".join(json.dumps({"text": t}) + "\n" for t in result.kept)
        atomic_write_bytes(args.output, lines.encode("utf-8"))
        print(f"\nwrote {len(result.kept)} documents to {args.output}")
    return 0


# ---------------------------------------------------------------------------------------- tokenize
def add_tokenize_arguments(parser) -> None:
    parser.add_argument("--input", default="tinyworld", help="tinyworld (default), python-stdlib or a path")
    parser.add_argument("--corpus-bytes", type=int, default=300_000, help="size of a generated corpus")
    parser.add_argument("--vocab-size", type=int, default=1024, help="ids in the vocabulary (default 1024)")
    parser.add_argument("--pattern", choices=["gpt4", "gpt2"], default="gpt4", help="pre-tokenization regex")
    add_run_arguments(parser, "tokenizer")


def tokenize_main(args) -> int:
    from minifm.data.sources import load_corpus
    from minifm.tokenizer import BPETokenizer
    from minifm.tokenizer.fertility import fertility, format_table
    from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

    if args.input == "tinyworld":
        from minifm.data import tinyworld

        documents = tinyworld.generate_documents(size_bytes=args.corpus_bytes)
        by_language: dict[str, list[str]] = {}
        for document in documents:
            by_language.setdefault(document.language, []).append(document.text)
        texts = [d.text for d in documents]
    else:
        texts = load_corpus(args.input, max_bytes=args.corpus_bytes) if args.input == "python-stdlib" \
            else load_corpus(args.input)
        by_language = {"all": texts}
    started = time.perf_counter()
    tokenizer = BPETokenizer.train(texts, args.vocab_size, pattern=args.pattern, special_tokens=DEFAULT_SPECIAL_TOKENS)
    print(f"trained {tokenizer.vocab_size} ids in {time.perf_counter() - started:.1f} s")
    print(format_table(fertility(tokenizer, by_language)))
    run_dir = run_directory(args)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / "tokenizer.json")
    print(f"saved {run_dir / 'tokenizer.json'}")
    return 0


# ---------------------------------------------------------------------------------------- pretrain
def add_pretrain_arguments(parser) -> None:
    from minifm.train.loop import TrainConfig
    from minifm.train.pretrain import PretrainConfig

    add_run_arguments(parser, "pretrain")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out/--run-name bit-for-bit")
    parser.add_argument("--tokenizer", default=None, help="use this tokenizer.json instead of training one")
    add_dataclass_arguments(parser, PretrainConfig, "data and model")
    add_dataclass_arguments(parser, TrainConfig, "optimisation")


def pretrain_main(args) -> int:
    from minifm.train.loop import TrainConfig
    from minifm.train.pretrain import PretrainConfig, run_pretraining

    file_values = read_config_file(args.config) if args.config else {}
    config, train_config = build_dataclasses(args, [PretrainConfig, TrainConfig], file_values)
    tokenizer = None
    if args.tokenizer:
        from minifm.tokenizer import BPETokenizer

        tokenizer = BPETokenizer.load(args.tokenizer)
    run_pretraining(run_directory(args), config, train_config, tokenizer=tokenizer, resume=args.resume)
    print(f"run saved in {run_directory(args)}")
    return 0


# ---------------------------------------------------------------------------------------- generate
def add_generate_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="a run directory with config.json, model.safetensors and "
                                                    "tokenizer.json (e.g. runs/lifecycle/pretrain)")
    parser.add_argument("--prompt", action="append", default=None,
                        help="a prompt (repeat for a batch); without it, an interactive prompt loop")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=True,
                        help="sample (default) or --no-do-sample for greedy / beam search")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50, help="(transformers' default 50; 0 = off)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--min-p", type=float, default=None)
    parser.add_argument("--typical-p", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--num-return-sequences", type=int, default=1)
    parser.add_argument("--stop", action="append", default=None, help="a stop string (repeatable)")
    parser.add_argument("--seed", type=int, default=None)


def generate_main(args) -> int:
    from minifm.sampling.generate import generate
    from minifm.train.pretrain import load_run

    model, tokenizer, _ = load_run(args.run)
    eos = tokenizer.special_tokens.get("<|endoftext|>")
    options = dict(do_sample=args.do_sample and args.num_beams == 1, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, min_p=args.min_p, typical_p=args.typical_p,
                   repetition_penalty=args.repetition_penalty, num_beams=args.num_beams,
                   length_penalty=args.length_penalty, num_return_sequences=args.num_return_sequences,
                   stop=args.stop, tokenizer=tokenizer if args.stop else None, eos_token_id=eos, seed=args.seed)
    limit = getattr(model.config, "block_size", None)

    def complete(prompts: list[str]) -> list[str]:
        ids = [tokenizer.encode(p) or ([eos] if eos is not None else [0]) for p in prompts]
        max_new = args.max_new_tokens
        if limit is not None and not hasattr(model, "encode"):
            max_new = max(1, min(max_new, limit - max(len(i) for i in ids)))
        out = generate(model, ids, max_new, return_dict_in_generate=True, **options)
        texts = []
        for row in range(out.sequences.shape[0]):
            tokens = out.new_tokens(row)
            if tokens and tokens[-1] == eos:
                tokens = tokens[:-1]
            texts.append(tokenizer.decode(tokens))
        return texts

    if args.prompt:
        copies = args.num_return_sequences
        for row, text in enumerate(complete(args.prompt)):
            print(f"{args.prompt[row // copies]}{text}")
            print("-" * 40)
        return 0
    print("minifm generate: type a prompt and press Enter (an empty line or Ctrl-D quits)")
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        for text in complete([line]):
            print(f"{line}{text}\n")
    return 0


# ---------------------------------------------------------------------------------------- info
def add_info_arguments(parser) -> None:
    parser.add_argument("--no-demo", action="store_true", help="skip the tiny forward/backward demo")


def info_main(args) -> int:
    import numpy as np

    import minifm
    from minifm.kernels import backend_info

    print(f"minifm {minifm.__version__} (numpy {np.__version__}, Python {sys.version.split()[0]})")
    for key, value in backend_info().items():
        print(f"  {key}: {value}")
    if args.no_demo:
        return 0
    import minifm.functional as F
    from minifm.models import GPT, GPTConfig

    config = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    ids = np.random.default_rng(0).integers(0, 64, size=(4, 17))
    started = time.perf_counter()
    loss = F.cross_entropy(model(ids[:, :-1]), ids[:, 1:])  # (B, T, V) logits against next tokens
    loss.backward()
    seconds = time.perf_counter() - started
    grad_norm = float(np.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in model.parameters()
                                  if p.grad is not None)))
    print(f"demo: GPT with {model.num_parameters():,} parameters, batch 4 x 16 tokens; loss {float(loss.data):.4f} "
          f"(ln 64 = {np.log(64):.4f} for a uniform guess), gradient norm {grad_norm:.4f}, "
          f"forward+backward {seconds * 1000:.1f} ms")
    return 0


# ---------------------------------------------------------------------------------------- parser
BUILTIN_COMMANDS = {  # name: (one-line help, add_arguments, main)
    "lifecycle": ("run the whole lifecycle on tinyworld and write a report", add_lifecycle_arguments, lifecycle_main),
    "curate": ("run the quality pipeline on a corpus and print its per-rule table", add_curate_arguments, curate_main),
    "tokenize": ("train a byte-level BPE tokenizer", add_tokenize_arguments, tokenize_main),
    "pretrain": ("pre-train a GPT (causal LM), BERT (masked LM) or T5 (span corruption)", add_pretrain_arguments,
                 pretrain_main),
    "generate": ("generate text from a trained run (interactive without --prompt)", add_generate_arguments,
                 generate_main),
    "info": ("version, kernel backend and a tiny forward/backward demo", add_info_arguments, info_main),
}


def _registrar(name: str):
    module_name, _, function_name = name.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def build_parser() -> argparse.ArgumentParser:
    from minifm import __version__

    parser = argparse.ArgumentParser(prog="minifm", description="A foundation model's whole life, from scratch "
                                     "in NumPy. `minifm lifecycle` runs everything on the built-in tinyworld corpus.")
    parser.add_argument("--version", action="version", version=f"minifm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, add_arguments, handler) in BUILTIN_COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        add_arguments(sub)
        sub.set_defaults(func=handler)
    for registrar in EXTENSION_REGISTRARS:
        _registrar(registrar)(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    from minifm.train.loop import NonFiniteLossError, TrainingInterrupted

    try:
        return int(handler(args) or 0)
    except TrainingInterrupted as interrupted:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except NonFiniteLossError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as error:  # bad settings or paths: a message, not a traceback
        if os.environ.get("MINIFM_DEBUG"):
            raise
        print(f"minifm {args.command}: error: {error} (set MINIFM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
