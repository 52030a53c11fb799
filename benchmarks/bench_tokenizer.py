"""Benchmark: byte-level BPE training time, encoding throughput and compression, beside Hugging Face
`tokenizers` (when installed) trained the same way.

Corpus: the .py files of the running interpreter's standard library (sorted walk), cut at ~10 MB
(`--quick`: ~1 MB). Every tenth file is held out; bytes/token is measured on the held-out files,
encoding throughput on the whole corpus, training on the other nine tenths.

    python benchmarks/bench_tokenizer.py            # 10 MB, vocab 4096 and 16384
    python benchmarks/bench_tokenizer.py --quick    # 1 MB
    python benchmarks/bench_tokenizer.py --reference   # also time the pure-Python reference path

Rows:
  minifm gpt2 / gpt4   BPETokenizer.train with that split rule (compiled kernels unless forced off)
  minifm reference     the same with MINIFM's Python reference loops (use_reference(True))
  hf bytelevel         tokenizers.Tokenizer(BPE) + ByteLevel(add_prefix_space=False) pre-tokenizer,
                       BpeTrainer(min_frequency=0, initial_alphabet=ByteLevel.alphabet()); its
                       encode_batch runs on all cores (rayon), "hf 1 thread" encodes text by text.
Times are medians of --repeats runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import sysconfig
import time
import warnings

from minifm.kernels import backend_info, use_reference
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.pretokenize import compiled_pattern


def stdlib_corpus(max_bytes: int) -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    texts, total = [], 0
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
            texts.append(text)
            total += len(text.encode("utf-8"))
            if total >= max_bytes:
                return texts
    return texts


def median_time(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_minifm(train, held_out, everything, vocab_size, pattern, repeats, reference=False):
    use_reference(reference)
    try:
        with warnings.catch_warnings():  # a small corpus may run out of pairs: the vocab column shows it
            warnings.simplefilter("ignore")
            train_s, tok = median_time(lambda: BPETokenizer.train(train, vocab_size, pattern=pattern), repeats)

        def encode_all():
            fresh = BPETokenizer(tok.merges, pattern=pattern)  # cold cache every repeat
            return fresh.encode_batch(everything)
        encode_s, _ = median_time(encode_all, repeats)
        held_tokens = sum(len(ids) for ids in tok.encode_batch(held_out))
    finally:
        use_reference(False)
    return train_s, encode_s, held_tokens, tok.vocab_size


def bench_hf(train, held_out, everything, vocab_size, repeats):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # optional yardstick (bench extra)

    def train_once():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=0, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(train, trainer=trainer)
        return tok
    train_s, tok = median_time(train_once, repeats)
    batch_s, _ = median_time(lambda: tok.encode_batch(everything), repeats)
    single_s, _ = median_time(lambda: [tok.encode(t) for t in everything], repeats)
    held_tokens = sum(len(e.ids) for e in tok.encode_batch(held_out))
    return train_s, batch_s, single_s, held_tokens, tok.get_vocab_size()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~1 MB corpus instead of ~10 MB")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (median reported)")
    parser.add_argument("--vocab", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--reference", action="store_true", help="also time the Python reference path")
    args = parser.parse_args(argv)

    texts = stdlib_corpus(1_000_000 if args.quick else 10_000_000)
    train = [t for i, t in enumerate(texts) if i % 10 != 9]
    held_out = [t for i, t in enumerate(texts) if i % 10 == 9]
    total_mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    held_bytes = sum(len(t.encode("utf-8")) for t in held_out)
    train_mb = sum(len(t.encode("utf-8")) for t in train) / 1e6
    try:
        import tokenizers  # optional yardstick (bench extra): its rows are skipped without it
        hf_version = tokenizers.__version__
    except ImportError:
        tokenizers = None
        hf_version = "not installed"
    info = backend_info()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"minifm backend {info['backend']}, tokenizers {hf_version}")
    print(f"corpus: python-stdlib, {len(texts)} files, {total_mb:.2f} MB (train {train_mb:.2f} MB on "
          f"{len(train)} files, held out {held_bytes / 1e6:.2f} MB); median of {args.repeats}")

    # warm the split-rule compilation (a one-time ~0.5 s cost per process) outside the timings
    compiled_pattern("gpt2"), compiled_pattern("gpt4")

    header = f"{'vocab':>6}  {'tokenizer':<22}{'size':>7}{'train s':>9}{'encode MB/s':>13}{'bytes/token':>13}{'vs hf train':>13}{'vs hf enc':>11}"
    print(header)
    print("-" * len(header))
    for vocab_size in args.vocab:
        rows = []
        hf_row = None
        if tokenizers is not None:
            train_s, batch_s, single_s, held_tokens, size = bench_hf(train, held_out, texts, vocab_size, args.repeats)
            hf_row = (train_s, batch_s)
            rows.append(("hf bytelevel (batch)", size, train_s, total_mb / batch_s, held_bytes / held_tokens))
            rows.append(("hf 1 thread (loop)", size, float("nan"), total_mb / single_s, held_bytes / held_tokens))
        for pattern in ("gpt2", "gpt4"):
            train_s, encode_s, held_tokens, size = bench_minifm(train, held_out, texts, vocab_size, pattern, args.repeats)
            rows.append((f"minifm {pattern}", size, train_s, total_mb / encode_s, held_bytes / held_tokens))
        if args.reference:
            train_s, encode_s, held_tokens, size = bench_minifm(train, held_out, texts, vocab_size, "gpt2", 1, True)
            rows.append(("minifm gpt2 reference", size, train_s, total_mb / encode_s, held_bytes / held_tokens))
        for name, size, train_s, mb_per_s, bytes_per_token in rows:
            if hf_row is not None and train_s == train_s:
                vs_train = f"{train_s / hf_row[0]:.2f}x"
                vs_encode = f"{(total_mb / hf_row[1]) / mb_per_s:.2f}x"
            else:
                vs_train = vs_encode = "-"
            print(f"{vocab_size:>6}  {name:<22}{size:>7}{train_s:>9.2f}{mb_per_s:>13.2f}{bytes_per_token:>13.3f}{vs_train:>13}{vs_encode:>11}")
    print("size: the vocabulary reached (smaller than asked when the corpus runs out of pairs).")
    print("vs hf: time ratio to hf bytelevel (batch); < 1 means minifm is faster.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
