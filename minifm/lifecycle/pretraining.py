"""The lifecycle's first half: curate -> tokenizer -> pre-train -> sampling, on tinyworld.

Each stage is a function `stage(run_dir, settings, outputs) -> dict` (see minifm/lifecycle/__init__.py):
  curate     tinyworld's web-like corpus through the quality rules and dedup: a per-rule table and
             how well the rules separate the generator's known noise from clean documents
  tokenizer  byte-level BPE: vocabulary, bytes/token and fertility per language
  pretrain   a small GPT, causal LM, held-out perplexity, loss curve
  sampling   the same prompts under greedy, temperature 0.7/1.0/1.5, top-k, top-p and min-p, with
             distinct-1/2 and the mean log-likelihood under the model (the quality/diversity trade-off)
"""
from __future__ import annotations

import time
from pathlib import Path

from minifm.checkpoint import has_checkpoint
from minifm.data import tinyworld
from minifm.data.quality import QualityPipeline
from minifm.lifecycle.evaluation import distinct_n
from minifm.lifecycle.presets import stage_configs
from minifm.lifecycle.report import (
    curate_markdown, plot_sampling_tradeoff, pretrain_markdown, sampling_markdown, tokenizer_markdown,
)
from minifm.sampling.generate import generate
from minifm.tokenizer.fertility import fertility, format_table
from minifm.train.pretrain import run_pretraining, train_tokenizer

SAMPLING_SETTINGS = [  # (label, generate() keyword arguments)
    ("greedy", {"do_sample": False}),
    ("temperature 0.7", {"do_sample": True, "temperature": 0.7, "top_k": 0}),
    ("temperature 1.0", {"do_sample": True, "temperature": 1.0, "top_k": 0}),
    ("temperature 1.5", {"do_sample": True, "temperature": 1.5, "top_k": 0}),
    ("top-k 10", {"do_sample": True, "top_k": 10}),
    ("top-p 0.9", {"do_sample": True, "top_k": 0, "top_p": 0.9}),
    ("min-p 0.1", {"do_sample": True, "top_k": 0, "min_p": 0.1}),
]


def curate_stage(run_dir: Path, settings: dict, outputs: dict, resume: bool = False) -> dict:
    documents = tinyworld.generate_documents(size_bytes=settings["corpus_bytes"], seed=settings["seed"])
    texts = [d.text for d in documents]
    result = QualityPipeline(preset="web").run(texts)
    print(result.table())
    kept = set(result.kept_indices)
    noisy = [i for i, d in enumerate(documents) if d.kind != "clean"]
    clean = [i for i, d in enumerate(documents) if d.kind == "clean"]
    noise_removed = sum(i not in kept for i in noisy) / max(len(noisy), 1)
    clean_kept = sum(i in kept for i in clean) / max(len(clean), 1)
    figures = {
        "documents": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts), "kept": len(result.kept),
        "dropped": len(result.dropped), "noise_documents": len(noisy), "noise_removed_fraction": noise_removed,
        "clean_kept_fraction": clean_kept,
        "rules": {s.rule: {"seen": s.seen, "dropped": s.dropped} for s in result.rule_stats},
    }
    markdown = curate_markdown(figures, [{"rule": s.rule, "seen": s.seen, "dropped": s.dropped,
                                          "example_reason": s.example_reason} for s in result.rule_stats])
    kept_documents = [documents[i] for i in result.kept_indices]
    return {"figures": figures, "markdown": markdown,
            "artifacts": {"texts": result.kept, "documents": kept_documents}}


def tokenizer_stage(run_dir: Path, settings: dict, outputs: dict, resume: bool = False) -> dict:
    documents = outputs["curate"]["artifacts"]["documents"]
    texts = [d.text for d in documents]
    started = time.perf_counter()
    tokenizer = train_tokenizer(texts, settings["vocab_size"])
    seconds = time.perf_counter() - started
    tokenizer.save(run_dir / "tokenizer.json")
    by_language: dict[str, list[str]] = {}
    for document in documents:
        by_language.setdefault(document.language, []).append(document.text)
    stats = fertility(tokenizer, by_language)
    print(format_table(stats))
    total_bytes = sum(len(t.encode("utf-8")) for t in texts)
    total_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    figures = {"vocab_size": tokenizer.vocab_size, "special_tokens": len(tokenizer.special_tokens),
               "train_seconds": seconds, "bytes_per_token": total_bytes / max(total_tokens, 1),
               "tokens": total_tokens, "fertility": stats}
    return {"figures": figures, "markdown": tokenizer_markdown(figures), "artifacts": {"tokenizer": tokenizer}}


def pretrain_stage(run_dir: Path, settings: dict, outputs: dict, resume: bool = False) -> dict:
    config, train_config = stage_configs("pretrain", settings)  # a GPT on tinyworld: PretrainConfig's defaults
    summary = run_pretraining(run_dir / "pretrain", config, train_config,
                              tokenizer=outputs["tokenizer"]["artifacts"]["tokenizer"],
                              texts=outputs["curate"]["artifacts"]["texts"],
                              resume=resume and has_checkpoint(run_dir / "pretrain"))
    figures = {k: v for k, v in summary.items() if k not in ("model", "tokenizer", "curation")}
    figures["loss_curve"] = "pretrain/loss_curve.png"
    markdown = pretrain_markdown(figures, {"n_layer": config.n_layer, "n_embd": config.n_embd,
                                           "n_head": config.n_head, "block_size": config.block_size})
    return {"figures": figures, "markdown": markdown,
            "artifacts": {"model": summary["model"], "tokenizer": summary["tokenizer"]}}


def sampling_prompts(n_prompts: int, seed: int) -> list[str]:
    """The first words of clean tinyworld documents the model never saw (a different corpus seed)."""
    documents = tinyworld.clean_corpus(size_bytes=20_000, seed=10_000 + seed)
    prompts = []
    for text in documents:
        words = text.split()
        if len(words) >= 4:
            prompts.append(" ".join(words[:3]))
        if len(prompts) == n_prompts:
            break
    return prompts


def sampling_stage(run_dir: Path, settings: dict, outputs: dict, resume: bool = False) -> dict:
    model = outputs["pretrain"]["artifacts"]["model"]
    tokenizer = outputs["pretrain"]["artifacts"]["tokenizer"]
    eos = tokenizer.special_tokens.get("<|endoftext|>")
    prompts = sampling_prompts(settings["n_prompts"], settings["seed"])
    prompt_ids = [tokenizer.encode(p) for p in prompts]
    budget = model.config.block_size - max(len(ids) for ids in prompt_ids)
    max_new = max(1, min(settings["max_new_tokens"], budget))
    results, examples = {}, {}
    for label, options in SAMPLING_SETTINGS:
        copies = 1 if not options["do_sample"] else settings["samples_per_prompt"]
        out = generate(model, prompt_ids, max_new, num_return_sequences=copies, eos_token_id=eos,
                       seed=settings["seed"], return_logprobs=True, **options)
        new_tokens = [out.new_tokens(row) for row in range(out.sequences.shape[0])]
        kept = [t[:-1] if t and t[-1] == eos else t for t in new_tokens]
        n_tokens = int(out.num_generated.sum())
        mean_loglik = float(out.logprobs.sum() / max(n_tokens, 1))
        texts = [tokenizer.decode(t) for t in kept]
        first_samples = kept[::copies]  # one sample per prompt, so every setting is scored on as many texts
        results[label] = {"options": options, "distinct_1": distinct_n(first_samples, 1),
                           "distinct_2": distinct_n(first_samples, 2),
                           "mean_loglik": mean_loglik, "mean_length": n_tokens / len(new_tokens)}
        examples[label] = [prompts[row // copies] + texts[row] for row in range(0, len(texts), copies)]
        print(f"--- {label}: distinct-1 {results[label]['distinct_1']:.2f}, distinct-2 "
              f"{results[label]['distinct_2']:.2f}, mean log-likelihood {mean_loglik:.2f} nats/token")
        for text in examples[label][:2]:
            print("   ", text.replace("\n", " ")[:160])
    plot_sampling_tradeoff(results, run_dir / "sampling_tradeoff.png")
    figures = {"prompts": prompts, "max_new_tokens": max_new, "settings": results, "examples": examples}
    return {"figures": figures, "markdown": sampling_markdown(figures), "artifacts": {}}
