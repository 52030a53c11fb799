"""`minifm curate` and `minifm tokenize`: the data steps of the lifecycle on any corpus.

    minifm curate   --input tinyworld|python-stdlib|PATH [--output kept.jsonl]   the per-rule table
    minifm tokenize --input tinyworld|python-stdlib|PATH --vocab-size 1024       BPE + fertility table
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from minifm.checkpoint import atomic_write_bytes
from minifm.cli.common import (
    Command, add_dataclass_arguments, add_overwrite_argument, add_run_arguments, check_not_overwriting,
    check_output_directory, check_output_file, config_values, field_names, run_directory, settings_from,
)
from minifm.config import ConfigBase
from minifm.data import tinyworld
from minifm.data.quality import PRESET_NAMES, QualityPipeline, preset_for
from minifm.data.sources import load_corpus
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.fertility import fertility, format_table
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

GENERATED_CORPORA = ("tinyworld", "python-stdlib")


@dataclass
class CurateSettings(ConfigBase):
    input: str = "tinyworld"      # tinyworld, python-stdlib, a .txt/.md file, a folder or a .jsonl of {"text"}
    corpus_bytes: int = 300_000   # size of a generated corpus
    rules: str | None = None      # "web" | "code" (default: code for python-stdlib, web otherwise)
    show: int = 3                 # dropped documents printed per rule
    output: str | None = None     # write the kept documents to this .jsonl ({"text": ...})

    def validate(self) -> None:
        self.check_range("corpus_bytes", low=1)
        self.check_range("show", low=0)
        if self.rules is not None:
            self.check_choice("rules", PRESET_NAMES)


@dataclass
class TokenizeSettings(ConfigBase):
    input: str = "tinyworld"      # tinyworld, python-stdlib or a path
    corpus_bytes: int = 300_000   # size of a generated corpus
    vocab_size: int = 1024        # ids in the vocabulary
    pattern: str = "gpt4"         # pre-tokenization regex: "gpt4" | "gpt2"

    def validate(self) -> None:
        self.check_range("corpus_bytes", low=1)
        self.check_range("vocab_size", low=256 + len(DEFAULT_SPECIAL_TOKENS))
        self.check_choice("pattern", ("gpt4", "gpt2"))


def read_texts(source: str, corpus_bytes: int) -> list[str]:
    """The documents of a generated corpus (capped at corpus_bytes) or of the user's path."""
    return load_corpus(source, max_bytes=corpus_bytes, log=print)  # print: how a file or folder was split


def add_curate_arguments(parser) -> None:
    add_dataclass_arguments(parser, CurateSettings, "curation")


def run_curate(args) -> int:
    settings = settings_from(args, CurateSettings, file_values=config_values(args, field_names(CurateSettings)))
    if settings.output:
        check_output_file(settings.output, "--output")
    texts = read_texts(settings.input, settings.corpus_bytes)
    result = QualityPipeline(preset=preset_for(settings.input, settings.rules)).run(texts)
    print(result.table())
    for rule, dropped in result.dropped_by_rule().items():
        for document in dropped[:settings.show]:
            print(f"\n[{rule}] {document.reason}\n    {document.text[:200]!r}")
    if settings.output:
        lines = "".join(json.dumps({"text": text}) + "\n" for text in result.kept)
        atomic_write_bytes(settings.output, lines.encode("utf-8"))
        print(f"\nwrote {len(result.kept)} documents to {settings.output}")
    return 0


def add_tokenize_arguments(parser) -> None:
    add_dataclass_arguments(parser, TokenizeSettings, "tokenizer")
    add_run_arguments(parser, "tokenizer")
    add_overwrite_argument(parser)


def run_tokenize(args) -> int:
    settings = settings_from(args, TokenizeSettings, file_values=config_values(args, field_names(TokenizeSettings)))
    run_dir = check_output_directory(run_directory(args), "--out/--run-name")
    check_not_overwriting(run_dir, args, marker="tokenizer.json", flag="--out/--run-name")
    if settings.input == "tinyworld":
        documents = tinyworld.generate_documents(size_bytes=settings.corpus_bytes)
        texts = [document.text for document in documents]
        by_language: dict[str, list[str]] = {}
        for document in documents:
            by_language.setdefault(document.language, []).append(document.text)
    else:
        texts = read_texts(settings.input, settings.corpus_bytes)
        if not any(text.split() for text in texts):
            raise ValueError(f"--input {settings.input}: the text holds no words to train a tokenizer on")
        by_language = {"all": texts}
    started = time.perf_counter()
    tokenizer = BPETokenizer.train(texts, settings.vocab_size, pattern=settings.pattern,
                                   special_tokens=DEFAULT_SPECIAL_TOKENS)
    print(f"trained {tokenizer.vocab_size} ids in {time.perf_counter() - started:.1f} s")
    print(format_table(fertility(tokenizer, by_language)))
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / "tokenizer.json")
    print(f"saved {run_dir / 'tokenizer.json'}")
    return 0


COMMANDS = [
    Command("curate", "run the quality pipeline on a corpus and print its per-rule table", add_curate_arguments,
            run_curate),
    Command("tokenize", "train a byte-level BPE tokenizer and print its fertility per language",
            add_tokenize_arguments, run_tokenize),
]
