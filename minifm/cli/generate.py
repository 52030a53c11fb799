"""`minifm generate`: continue text with a trained run or a real model, with transformers' generation names.

    minifm generate --run runs/lifecycle/pretrain [--prompt TEXT] [--temperature 0.8 --top-p 0.9]
    minifm generate --model smollm2-135m-instruct --prompt "The capital of France is"
    minifm generate --model PATH --no-do-sample --num-beams 4     (a run, an HF directory or a .gguf)
    minifm generate --run DIR                      (no --prompt: an interactive prompt)
    minifm generate --model M --prompt "Answer: " --regex "(yes|no)"       (structured output)
    minifm generate --model M --prompt "{" --json-schema person.json       (JSON valid against the schema)
    minifm generate --model smollm2-135m-instruct --dtype float32 --prompt "Hi"   (weights dequantized)

--model and --run are the same option (--run is the older name); the prompt is continued as it is,
without a chat template (`minifm chat` applies the model's template). --regex and --json-schema
(one of them) constrain the generated text (minifm.sampling.constraints): the pattern or the schema
file is checked before the model loads, a bad one is a one-line error. --dtype (also in `minifm chat`)
picks the weights' storage: by default the model runs as stored (a GGUF's own quantized formats, e.g.
SmolLM2's Q4_1; a run as saved); float32 dequantizes, q8_0 | q4_0 | q4_1 quantize on load.
--int8-activations rounds the inputs of the quantized products to int8 per block of 32, as llama.cpp
does (faster decoding; SmolLM2's held-out perplexity +0.4%; GPT.use_int8_activations).
"""
from __future__ import annotations

try:
    import readline  # noqa: F401  (importing it gives input() line editing and history)
except ImportError:  # not on every platform; the prompt then works without editing
    readline = None

import warnings
from dataclasses import dataclass
from pathlib import Path

from minifm.cli.common import Command, add_dataclass_arguments, config_values, field_names, settings_from
from minifm.config import ConfigBase
from minifm.models import BERT, GPT, T5
from minifm.models.pretrained import QUANTIZED_DTYPES
from minifm.peft import PeftModel
from minifm.checkpoint import read_json_file
from minifm.runs import load_any
from minifm.sampling.constraints import TokenConstraint
from minifm.sampling.generate import generate
from minifm.sampling.json_schema import schema_to_regex
from minifm.sampling.regex_automaton import compile_regex


@dataclass
class GenerateSettings(ConfigBase):
    """Decoding settings (transformers' generate() names; top_k 50 as its default, 0 = off)."""

    max_new_tokens: int = 64                # tokens to generate after the prompt
    do_sample: bool = True                  # sample (default) or --no-do-sample for greedy / beam search
    temperature: float = 1.0                # divide the logits by this before sampling (lower: more conservative)
    top_k: int = 50                         # keep the k most likely tokens (0 = off)
    top_p: float = 1.0                      # nucleus sampling: keep the smallest set with this much probability (1.0 = off)
    min_p: float | None = None              # keep tokens with at least min_p times the top probability (off when unset)
    typical_p: float = 1.0                  # locally typical sampling mass (1.0 = off)
    repetition_penalty: float = 1.0         # divide positive (multiply negative) logits of seen tokens by this (1.0 = off)
    num_beams: int = 1                      # beam search width with --no-do-sample (1 = greedy)
    length_penalty: float = 1.0             # beam search: score / length**length_penalty
    num_return_sequences: int = 1           # samples (or beams) returned per prompt
    seed: int | None = None                 # seed of the sampler (unset: a fresh random seed)

    def validate(self) -> None:
        for name in ("max_new_tokens", "num_beams", "num_return_sequences"):
            self.check_range(name, low=1)
        self.check_range("temperature", low=0)
        self.check_range("top_k", low=0)
        for name in ("top_p", "typical_p"):
            self.check_range(name, 0, 1, low_open=True)
        self.check_range("min_p", 0, 1)
        self.check_range("repetition_penalty", low=0, low_open=True)


def add_model_argument(parser) -> None:
    """--model PATH_OR_NAME (also spelled --run): a run directory, a Hugging Face directory, a .gguf or a short name."""
    parser.add_argument("--model", "--run", dest="model", required=True, metavar="PATH_OR_NAME",
                        help="a run directory (e.g. runs/lifecycle/pretrain), a Hugging Face directory, a .gguf "
                             "file, or a short name: smollm2-135m-instruct, all-minilm-l6-v2")


def add_dtype_argument(parser) -> None:
    """--dtype float32|q8_0|q4_0|q4_1 (default: the model as stored)."""
    parser.add_argument("--dtype", choices=("float32",) + QUANTIZED_DTYPES, default=None,
                        help="store the weights as this type (default: as the model is stored: a GGUF's own "
                             "quantized format, e.g. q4_1 for smollm2-135m-instruct; float32 for a Hugging Face "
                             "directory; a run as saved)")
    parser.add_argument("--int8-activations", action="store_true",
                        help="round the inputs of quantized products to int8 per block of 32, as llama.cpp does: "
                             "faster decoding, a small rounding error (needs quantized weights)")


def load_for_generation(args):
    """(model, tokenizer) of --model in --dtype, with --int8-activations applied."""
    if args.int8_activations and args.dtype == "float32":  # known before a slow load
        raise ValueError("--int8-activations rounds the inputs of quantized products: it needs quantized weights, "
                         "got --dtype float32 (use q8_0, q4_0 or q4_1, or leave --dtype out for a GGUF's own)")
    model, tokenizer = load_any(args.model, dtype=args.dtype)
    if args.int8_activations:
        if not getattr(getattr(model, "config", None), "quantized", False):
            raise ValueError(f"--int8-activations rounds the inputs of quantized products: {args.model} in dtype "
                             f"{args.dtype or 'as stored'} has no quantized weights (use --dtype q8_0, q4_0 or q4_1)")
        model.use_int8_activations(True)
    return model, tokenizer


def end_token_id(tokenizer) -> int | None:
    """The id that ends a reply: the tokenizer's eos token (a real model's), else minifm's <|endoftext|>."""
    eos = getattr(tokenizer, "eos_token_id", None)
    return eos if eos is not None else tokenizer.special_tokens.get("<|endoftext|>")


def add_generate_arguments(parser) -> None:
    add_model_argument(parser)
    add_dtype_argument(parser)
    parser.add_argument("--prompt", action="append", default=None,
                        help="a prompt (repeat for a batch); without it, an interactive prompt loop")
    parser.add_argument("--stop", action="append", default=None, help="a stop string (repeatable)")
    add_structured_output_arguments(parser)
    add_dataclass_arguments(parser, GenerateSettings, "decoding")


def add_structured_output_arguments(parser) -> None:
    """--regex PATTERN | --json-schema FILE (one of them): the generated text must match."""
    group = parser.add_argument_group("structured output").add_mutually_exclusive_group()
    group.add_argument("--regex", default=None, metavar="PATTERN",
                       help="generate only text that fully matches this regular expression (Python syntax subset)")
    group.add_argument("--json-schema", dest="json_schema", default=None, metavar="FILE",
                       help="generate only JSON valid against the JSON Schema in this file (a subset: object, "
                            "array, string, integer, number, boolean, null, enum)")


def structured_output(args):
    """From --regex / --json-schema: a function (tokenizer, eos id) -> generate's logits_processor list
    (None without either flag). The pattern or schema is compiled here, before any model loads."""
    if getattr(args, "regex", None) is not None:
        flag, pattern = "--regex", args.regex
    elif getattr(args, "json_schema", None) is not None:
        flag = f"--json-schema {args.json_schema}"
        if Path(args.json_schema).is_dir():
            raise ValueError(f"{flag}: is a directory; give the JSON file of a schema")
        try:
            pattern = schema_to_regex(read_json_file(args.json_schema))
        except (ValueError, OSError) as error:
            raise ValueError(f"{flag}: {error}") from None
    else:
        return None
    try:
        dfa = compile_regex(pattern)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None

    def make(tokenizer, eos_token_id):
        try:
            return [TokenConstraint(dfa, tokenizer, eos_token_id=eos_token_id)]
        except (ValueError, TypeError) as error:
            raise ValueError(f"{flag}: {error}") from None
    return make


def check_generates(model, where: str) -> None:
    """Refuse models that do not continue text: an encoder (BERT) or a scalar head (reward/value model)."""
    base = model.base_model if isinstance(model, PeftModel) else model
    if isinstance(base, BERT):
        raise ValueError(f"--model {where} holds a BERT, an encoder-only model: it fills masks or embeds "
                         f"(minifm embed), it does not generate")
    if not isinstance(base, (GPT, T5)):
        raise ValueError(f"--model {where} holds a {type(base).__name__}, which scores text and does not generate")


def decoding_options(settings: GenerateSettings) -> dict:
    """generate()'s keyword arguments for the decoding settings (beam search when num_beams > 1)."""
    return dict(do_sample=settings.do_sample and settings.num_beams == 1, temperature=settings.temperature,
                top_k=settings.top_k, top_p=settings.top_p, min_p=settings.min_p, typical_p=settings.typical_p,
                repetition_penalty=settings.repetition_penalty, num_beams=settings.num_beams,
                length_penalty=settings.length_penalty, num_return_sequences=settings.num_return_sequences,
                seed=settings.seed)


def run_generate(args) -> int:
    settings = settings_from(args, GenerateSettings, file_values=config_values(args, field_names(GenerateSettings)))
    make_constraint = structured_output(args)
    model, tokenizer = load_for_generation(args)
    check_generates(model, args.model)
    eos = end_token_id(tokenizer)
    options = dict(decoding_options(settings), stop=args.stop, tokenizer=tokenizer if args.stop else None,
                   eos_token_id=eos)
    if make_constraint is not None:
        options["logits_processor"] = make_constraint(tokenizer, eos)
    limit = getattr(model.config, "block_size", None)

    def complete(prompts: list[str]) -> list[str]:
        ids = [tokenizer.encode(p) or ([eos] if eos is not None else [0]) for p in prompts]
        max_new = settings.max_new_tokens
        if limit is not None and not hasattr(model, "encode"):  # a decoder: prompt + answer share the context
            longest = max(len(i) for i in ids)
            if longest >= limit:
                raise ValueError(f"the prompt has {longest} tokens; the model's context (block_size) is {limit}, "
                                 "so there is no room for an answer: shorten the prompt")
            if longest + max_new > limit:
                max_new = limit - longest
                warnings.warn(f"the prompt has {longest} tokens and the context holds {limit}: generating "
                              f"{max_new} of the {settings.max_new_tokens} requested new tokens")
        out = generate(model, ids, max_new, return_dict_in_generate=True, **options)
        texts = []
        for row in range(out.sequences.shape[0]):
            tokens = out.new_tokens(row)
            if tokens and tokens[-1] == eos:
                tokens = tokens[:-1]
            texts.append(tokenizer.decode(tokens))
        return texts

    if args.prompt:
        copies = settings.num_return_sequences
        for row, text in enumerate(complete(args.prompt)):
            print(f"{args.prompt[row // copies]}{text}")
            print("-" * 40)
        return 0
    interactive(complete)
    return 0


def interactive(complete) -> None:
    """The prompt loop: line editing and history (readline), Ctrl-C cancels the answer being written
    (or the line being typed), Ctrl-D or an empty line quits."""
    print("minifm generate: type a prompt and press Enter (an empty line or Ctrl-D quits; Ctrl-C cancels an answer)")
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return
        except KeyboardInterrupt:  # Ctrl-C while typing: a fresh prompt
            print()
            continue
        if not line.strip():
            return
        try:
            for text in complete([line]):
                print(f"{line}{text}\n")
        except KeyboardInterrupt:
            print("\n(cancelled)")


COMMANDS = [Command("generate", "continue text with a trained run or a real model (interactive without --prompt)",
                    add_generate_arguments, run_generate)]
