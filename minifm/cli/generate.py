"""`minifm generate`: sample from a trained run, with transformers' generation names.

    minifm generate --run runs/lifecycle/pretrain [--prompt TEXT] [--temperature 0.8 --top-p 0.9]
    minifm generate --run DIR --no-do-sample --num-beams 4
    minifm generate --run DIR                      (no --prompt: an interactive prompt)
"""
from __future__ import annotations

from dataclasses import dataclass

from minifm.cli.common import Command, add_dataclass_arguments, config_values, field_names, settings_from
from minifm.config import ConfigBase
from minifm.models import BERT, GPT, T5
from minifm.peft import PeftModel
from minifm.runs import load_run
from minifm.sampling.generate import generate


@dataclass
class GenerateSettings(ConfigBase):
    """Decoding settings (transformers' generate() names; top_k 50 as its default, 0 = off)."""

    max_new_tokens: int = 64
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float | None = None
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    num_return_sequences: int = 1
    seed: int | None = None

    def validate(self) -> None:
        for name in ("max_new_tokens", "num_beams", "num_return_sequences"):
            self.check_range(name, low=1)
        self.check_range("temperature", low=0)
        self.check_range("top_k", low=0)
        for name in ("top_p", "typical_p"):
            self.check_range(name, 0, 1, low_open=True)
        self.check_range("min_p", 0, 1)
        self.check_range("repetition_penalty", low=0, low_open=True)


def add_generate_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="a run directory (e.g. runs/lifecycle/pretrain, an sft/dpo "
                                                    "--out directory)")
    parser.add_argument("--prompt", action="append", default=None,
                        help="a prompt (repeat for a batch); without it, an interactive prompt loop")
    parser.add_argument("--stop", action="append", default=None, help="a stop string (repeatable)")
    add_dataclass_arguments(parser, GenerateSettings, "decoding")


def check_generates(model, run: str) -> None:
    """Refuse models that do not continue text: an encoder (BERT) or a scalar head (reward/value model)."""
    base = model.base_model if isinstance(model, PeftModel) else model
    if isinstance(base, BERT):
        raise ValueError(f"--run {run} holds a BERT, an encoder-only model: it fills masks, it does not generate")
    if not isinstance(base, (GPT, T5)):
        raise ValueError(f"--run {run} holds a {type(base).__name__}, which scores text and does not generate")


def run_generate(args) -> int:
    settings = settings_from(args, GenerateSettings, file_values=config_values(args, field_names(GenerateSettings)))
    model, tokenizer = load_run(args.run)
    check_generates(model, args.run)
    eos = tokenizer.special_tokens.get("<|endoftext|>")
    options = dict(do_sample=settings.do_sample and settings.num_beams == 1, temperature=settings.temperature,
                   top_k=settings.top_k, top_p=settings.top_p, min_p=settings.min_p, typical_p=settings.typical_p,
                   repetition_penalty=settings.repetition_penalty, num_beams=settings.num_beams,
                   length_penalty=settings.length_penalty, num_return_sequences=settings.num_return_sequences,
                   stop=args.stop, tokenizer=tokenizer if args.stop else None, eos_token_id=eos, seed=settings.seed)
    limit = getattr(model.config, "block_size", None)

    def complete(prompts: list[str]) -> list[str]:
        ids = [tokenizer.encode(p) or ([eos] if eos is not None else [0]) for p in prompts]
        max_new = settings.max_new_tokens
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
        copies = settings.num_return_sequences
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


COMMANDS = [Command("generate", "generate text from a trained run (interactive without --prompt)",
                    add_generate_arguments, run_generate)]
