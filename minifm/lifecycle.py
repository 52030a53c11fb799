"""`minifm lifecycle`: a foundation model's life end to end on tinyworld, with a report.

Stages run in order, each a function `stage(run_dir, preset, outputs) -> dict`:
  run_dir  Path of the run (runs/<name>/); a stage writes its files there or in a subfolder;
  preset   the settings of this stage (a dict: the preset's values, overridden by --config);
  outputs  {earlier stage name: its returned dict}, so a stage can use the model, tokenizer, ...
and returns a dict with
  "figures"    JSON-able numbers and short texts -> report.json[stage]   (every figure, machine-readable)
  "markdown"   this stage's section of report.md (tables, images relative to run_dir)
  "artifacts"  live objects for later stages (model, tokenizer, texts); never serialised.

Adding a stage: write its function in your own module and add a `Stage(...)` line to STAGES below
(a callable, or "module:function" imported when the stage runs). Its settings come from PRESETS
here, or, for a stage that keeps its own presets (post-training, PEFT), from the preset name
passed as preset["preset"]. A stage with `optional=True` whose module or function does not exist
is reported as "not available" instead of failing the run (any error inside a stage stops it).

The built-in stages:
  curate     tinyworld's web-like corpus through the quality rules and dedup: a per-rule table and
             how well the rules separate the generator's known noise from clean documents
  tokenizer  byte-level BPE: vocabulary, bytes/token and fertility per language
  pretrain   a small GPT, causal LM, held-out perplexity, loss curve
  sampling   the same prompts under greedy, temperature 0.7/1.0/1.5, top-k, top-p and min-p, with
             distinct-1/2 and the mean log-likelihood under the model (the quality/diversity trade-off)
and the later ones, written in their own files: post_training (minifm/lifecycle_post.py: SFT ->
reward model -> PPO, DPO and best-of-N side by side) and peft (minifm/lifecycle_peft.py).
"""
from __future__ import annotations

import importlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {  # CI smoke test: well under 2 minutes on 2 cores
        "curate": {"corpus_bytes": 120_000, "seed": 0},
        "tokenizer": {"vocab_size": 384},
        "pretrain": {"block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 64, "max_steps": 60,
                     "batch_size": 16, "lr": 3e-3, "warmup_steps": 10, "eval_every": 30, "eval_batches": 4,
                     "seed": 0},
        "sampling": {"n_prompts": 3, "samples_per_prompt": 2, "max_new_tokens": 24, "seed": 0},
    },
    "default": {  # under 10 minutes on 2 cores, pre-training about 4-5 of them
        "curate": {"corpus_bytes": 600_000, "seed": 0},
        "tokenizer": {"vocab_size": 1024},
        "pretrain": {"block_size": 96, "n_layer": 4, "n_head": 4, "n_embd": 128, "max_steps": 450,
                     "batch_size": 16, "lr": 2e-3, "warmup_steps": 40, "eval_every": 75, "eval_batches": 8,
                     "seed": 0},
        "sampling": {"n_prompts": 6, "samples_per_prompt": 4, "max_new_tokens": 48, "seed": 0},
    },
}

SAMPLING_SETTINGS = [  # (label, generate() keyword arguments)
    ("greedy", {"do_sample": False}),
    ("temperature 0.7", {"do_sample": True, "temperature": 0.7, "top_k": 0}),
    ("temperature 1.0", {"do_sample": True, "temperature": 1.0, "top_k": 0}),
    ("temperature 1.5", {"do_sample": True, "temperature": 1.5, "top_k": 0}),
    ("top-k 10", {"do_sample": True, "top_k": 10}),
    ("top-p 0.9", {"do_sample": True, "top_k": 0, "top_p": 0.9}),
    ("min-p 0.1", {"do_sample": True, "top_k": 0, "min_p": 0.1}),
]


# ---------------------------------------------------------------------------------------- helpers
def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def distinct_n(token_lists: list[list[int]], n: int) -> float:
    """Unique n-grams / total n-grams over all the given sequences (Li et al. 2016's distinct-n)."""
    total, unique = 0, set()
    for tokens in token_lists:
        for i in range(len(tokens) - n + 1):
            unique.add(tuple(tokens[i:i + n]))
            total += 1
    return len(unique) / total if total else 0.0


# ---------------------------------------------------------------------------------------- stages
def curate_stage(run_dir: Path, preset: dict, outputs: dict) -> dict:
    from minifm.data import tinyworld
    from minifm.data.quality import QualityPipeline

    documents = tinyworld.generate_documents(size_bytes=preset["corpus_bytes"], seed=preset["seed"])
    texts = [d.text for d in documents]
    result = QualityPipeline(preset="web").run(texts)
    print(result.table())
    kept = set(result.kept_indices)
    noisy = [i for i, d in enumerate(documents) if d.kind != "clean"]
    clean = [i for i, d in enumerate(documents) if d.kind == "clean"]
    noise_removed = sum(i not in kept for i in noisy) / max(len(noisy), 1)
    clean_kept = sum(i in kept for i in clean) / max(len(clean), 1)
    rows = [[s.rule, s.seen, s.dropped, s.example_reason] for s in result.rule_stats]
    figures = {
        "documents": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts), "kept": len(result.kept),
        "dropped": len(result.dropped), "noise_documents": len(noisy), "noise_removed_fraction": noise_removed,
        "clean_kept_fraction": clean_kept,
        "rules": {s.rule: {"seen": s.seen, "dropped": s.dropped} for s in result.rule_stats},
    }
    markdown = (f"{len(texts)} tinyworld documents ({figures['bytes']:,} bytes, {len(noisy)} planted noise "
                f"documents). The rules kept {len(result.kept)}: they removed {noise_removed:.0%} of the noise "
                f"and kept {clean_kept:.0%} of the clean documents.\n\n"
                + markdown_table(["rule", "seen", "dropped", "example reason"], rows))
    kept_documents = [documents[i] for i in result.kept_indices]
    return {"figures": figures, "markdown": markdown,
            "artifacts": {"texts": result.kept, "documents": kept_documents}}


def tokenizer_stage(run_dir: Path, preset: dict, outputs: dict) -> dict:
    from minifm.tokenizer.fertility import fertility, format_table
    from minifm.train.pretrain import train_tokenizer

    documents = outputs["curate"]["artifacts"]["documents"]
    texts = [d.text for d in documents]
    started = time.perf_counter()
    tokenizer = train_tokenizer(texts, preset["vocab_size"])
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
    rows = [[lang, s["texts"], s["tokens"], s["tokens_per_word"], s["bytes_per_token"], s["ratio_to_best"]]
            for lang, s in stats.items()]
    markdown = (f"Byte-level BPE, {tokenizer.vocab_size} ids ({len(tokenizer.special_tokens)} special), trained "
                f"in {seconds:.1f} s; {figures['bytes_per_token']:.2f} bytes/token over the curated corpus.\n\n"
                + markdown_table(["language", "texts", "tokens", "tokens/word", "bytes/token", "ratio to best"],
                                 rows))
    return {"figures": figures, "markdown": markdown, "artifacts": {"tokenizer": tokenizer}}


PRETRAIN_KEYS = ("block_size", "n_layer", "n_head", "n_embd", "eval_batches")


def pretrain_stage(run_dir: Path, preset: dict, outputs: dict) -> dict:
    from minifm.train.loop import TrainConfig
    from minifm.train.pretrain import PretrainConfig, run_pretraining

    model_values = {k: preset[k] for k in PRETRAIN_KEYS if k in preset}
    train_values = {k: v for k, v in preset.items() if k not in PRETRAIN_KEYS and k != "preset"}
    config = PretrainConfig(arch="gpt", corpus="tinyworld", **model_values)
    train_config = TrainConfig(**train_values)
    summary = run_pretraining(run_dir / "pretrain", config, train_config,
                              tokenizer=outputs["tokenizer"]["artifacts"]["tokenizer"],
                              texts=outputs["curate"]["artifacts"]["texts"])
    figures = {k: v for k, v in summary.items() if k not in ("model", "tokenizer", "curation")}
    figures["loss_curve"] = "pretrain/loss_curve.png"
    rows = [["parameters", f"{summary['params']:,}"], ["steps", summary["steps"]],
            ["tokens seen", f"{summary['tokens']:,}"], ["training time (s)", summary["train_elapsed_s"]],
            ["tokens/s (median step)", summary["tokens_per_s_median"]], ["first train loss", summary["first_loss"]],
            ["final train loss", summary["final_train_loss"]], ["held-out loss", summary["val_loss"]],
            ["held-out perplexity", summary["val_ppl"]]]
    markdown = (f"GPT ({config.n_layer} layers, d={config.n_embd}, {config.n_head} heads, context "
                f"{config.block_size}) trained as a causal LM on the curated corpus.\n\n"
                + markdown_table(["quantity", "value"], rows) + "\n\n![loss curve](pretrain/loss_curve.png)")
    return {"figures": figures, "markdown": markdown,
            "artifacts": {"model": summary["model"], "tokenizer": summary["tokenizer"]}}


def sampling_prompts(n_prompts: int, seed: int) -> list[str]:
    """The first words of clean tinyworld documents the model never saw (a different corpus seed)."""
    from minifm.data import tinyworld

    documents = tinyworld.clean_corpus(size_bytes=20_000, seed=10_000 + seed)
    prompts = []
    for text in documents:
        words = text.split()
        if len(words) >= 4:
            prompts.append(" ".join(words[:3]))
        if len(prompts) == n_prompts:
            break
    return prompts


def sampling_stage(run_dir: Path, preset: dict, outputs: dict) -> dict:
    from minifm.sampling.generate import generate
    from minifm.train.plots import plot_scatter

    model = outputs["pretrain"]["artifacts"]["model"]
    tokenizer = outputs["pretrain"]["artifacts"]["tokenizer"]
    eos = tokenizer.special_tokens.get("<|endoftext|>")
    prompts = sampling_prompts(preset["n_prompts"], preset["seed"])
    prompt_ids = [tokenizer.encode(p) for p in prompts]
    budget = model.config.block_size - max(len(ids) for ids in prompt_ids)
    max_new = max(1, min(preset["max_new_tokens"], budget))
    settings, examples, points = {}, {}, {}
    for label, options in SAMPLING_SETTINGS:
        copies = 1 if not options["do_sample"] else preset["samples_per_prompt"]
        out = generate(model, prompt_ids, max_new, num_return_sequences=copies, eos_token_id=eos,
                       seed=preset["seed"], return_logprobs=True, **options)
        new_tokens = [out.new_tokens(row) for row in range(out.sequences.shape[0])]
        kept = [t[:-1] if t and t[-1] == eos else t for t in new_tokens]
        n_tokens = int(out.num_generated.sum())
        mean_loglik = float(out.logprobs.sum() / max(n_tokens, 1))
        texts = [tokenizer.decode(t) for t in kept]
        first_samples = kept[::copies]  # one sample per prompt, so every setting is scored on as many texts
        settings[label] = {"options": options, "distinct_1": distinct_n(first_samples, 1),
                           "distinct_2": distinct_n(first_samples, 2),
                           "mean_loglik": mean_loglik, "mean_length": n_tokens / len(new_tokens)}
        examples[label] = [prompts[row // copies] + texts[row] for row in range(0, len(texts), copies)]
        points[label] = (settings[label]["distinct_2"], mean_loglik)
        print(f"--- {label}: distinct-1 {settings[label]['distinct_1']:.2f}, distinct-2 "
              f"{settings[label]['distinct_2']:.2f}, mean log-likelihood {mean_loglik:.2f} nats/token")
        for text in examples[label][:2]:
            print("   ", text.replace("\n", " ")[:160])
    plot_scatter(points, run_dir / "sampling_tradeoff.png", "sampling: diversity vs likelihood",
                 "distinct-2 (diversity)", "mean log-likelihood per token (nats)")
    rows = [[label, s["distinct_1"], s["distinct_2"], s["mean_loglik"], s["mean_length"]]
            for label, s in settings.items()]
    sample_lines = []
    for label, texts in examples.items():
        sample_lines.append(f"**{label}**\n")
        sample_lines += [f"- {text.strip()[:300]!r}" for text in texts[:3]]
        sample_lines.append("")
    markdown = ("The same prompts (opening words of unseen tinyworld documents) under each decoding rule. "
                "distinct-n counts unique n-grams over one sample per prompt; the log-likelihood is the mean "
                "per-token log-probability under the unwarped model over all samples. "
                "Lower temperature and tighter truncation raise the likelihood under the model and lower "
                "the diversity; high temperature does the opposite.\n\n"
                + markdown_table(["setting", "distinct-1", "distinct-2", "mean log-lik (nats/token)",
                                  "mean length"], rows)
                + "\n\n![sampling trade-off](sampling_tradeoff.png)\n\n" + "\n".join(sample_lines))
    figures = {"prompts": prompts, "max_new_tokens": max_new, "settings": settings, "examples": examples}
    return {"figures": figures, "markdown": markdown, "artifacts": {}}


def post_training_stage(run_dir: Path, preset: dict, outputs: dict) -> dict:
    """minifm.lifecycle_post.run_post_training on a copy of the pre-trained GPT (SFT changes it in place)."""
    import copy

    from minifm.lifecycle_post import run_post_training

    extra = sorted(k for k in preset if k != "preset")
    if extra:
        raise ValueError(f"the post_training stage takes only its preset name (see minifm/lifecycle_post.py), "
                         f"got keys {extra}")
    artifacts = outputs["pretrain"]["artifacts"]
    policy = copy.deepcopy(artifacts["model"])
    summary = run_post_training(policy, artifacts["tokenizer"], run_dir, preset=preset["preset"])
    markdown = summary.pop("markdown", "")
    return {"figures": summary, "markdown": markdown, "artifacts": {"sft_policy": policy}}


def peft_stage(run_dir: Path, preset: dict, outputs: dict) -> dict:
    """minifm.lifecycle_peft.run_peft_stage on the pre-trained GPT (it trains fresh copies)."""
    from minifm.lifecycle_peft import run_peft_stage

    artifacts = outputs["pretrain"]["artifacts"]
    overrides = {k: v for k, v in preset.items() if k != "preset"}
    report = run_peft_stage(artifacts["model"], artifacts["tokenizer"], run_dir, preset=preset["preset"],
                            **overrides)
    table = report.pop("table_markdown", "")
    markdown = table + "\n\n" + report.get("lora_r16_vs_full", {}).get("summary", "")
    if "plot" in report.get("files", {}):
        markdown += "\n\n![PEFT trade-off](peft/peft_tradeoff.png)"
    return {"figures": report, "markdown": markdown, "artifacts": {}}


# ---------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    function: object            # a callable, or "module:function" imported when the stage runs
    optional: bool = False      # True: skip (and say so) when the module/function does not exist yet


STAGES: list[Stage] = [
    Stage("curate", "Data curation", curate_stage),
    Stage("tokenizer", "Tokenizer", tokenizer_stage),
    Stage("pretrain", "Pre-training", pretrain_stage),
    Stage("sampling", "Sampling strategies", sampling_stage),
    Stage("post_training", "Post-training: SFT, reward model, PPO, DPO, best-of-N", post_training_stage),
    Stage("peft", "Parameter-efficient fine-tuning", peft_stage),
]


def resolve(stage: Stage):
    """The stage's function, or None when an optional stage's module/function does not exist yet."""
    if callable(stage.function):
        return stage.function
    module_name, _, attribute = stage.function.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if stage.optional and error.name == module_name:
            return None
        raise
    function = getattr(module, attribute, None)
    if function is None and not stage.optional:
        raise AttributeError(f"stage {stage.name}: {module_name} has no {attribute}")
    return function


def stage_presets(preset: str, overrides: dict | None = None) -> dict[str, dict]:
    """The preset's settings per stage, with `overrides` ({stage: {key: value}}) checked and applied.

    A stage without built-in presets here (a later stage) receives {"preset": name} plus its overrides
    and chooses its own values from the preset name.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    settings = {stage.name: {"preset": preset, **PRESETS[preset].get(stage.name, {})} for stage in STAGES}
    for stage_name, values in (overrides or {}).items():
        if stage_name not in settings:
            raise ValueError(f"unknown lifecycle stage {stage_name!r} in the configuration; "
                             f"stages: {[s.name for s in STAGES]}")
        if not isinstance(values, dict):
            raise ValueError(f"configuration for stage {stage_name!r} must be a table/object, got {values!r}")
        known = PRESETS[preset].get(stage_name)
        if known is not None:
            unknown = sorted(set(values) - set(known))
            if unknown:
                raise ValueError(f"unknown keys {unknown} for stage {stage_name!r}; valid keys: {sorted(known)}")
        settings[stage_name].update(values)
    return settings


def run_lifecycle(preset: str = "default", run_name: str = "lifecycle", out="runs", stages=None,
                  overrides: dict | None = None) -> dict:
    """Run the stages in order into out/run_name; write report.md and report.json; return the report dict."""
    run_dir = Path(out) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = stage_presets(preset, overrides)
    names = [s.name for s in STAGES]
    if stages is not None:
        unknown = sorted(set(stages) - set(names))
        if unknown:
            raise ValueError(f"unknown stages {unknown}; stages: {names}")
    from minifm import __version__
    from minifm.kernels import backend_info

    report = {"minifm_version": __version__, "preset": preset, "run_dir": str(run_dir),
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "numpy": np.__version__, "kernels": backend_info()},
              "settings": settings, "stages": {}, "not_available": [], "seconds": {}}
    sections = [f"# minifm lifecycle report ({preset} preset)\n",
                f"minifm {__version__}, kernels: {backend_info().get('backend')}, Python {platform.python_version()}.\n"]
    outputs: dict[str, dict] = {}
    started = time.perf_counter()
    for stage in STAGES:
        if stages is not None and stage.name not in stages:
            continue
        function = resolve(stage)
        if function is None:
            report["not_available"].append(stage.name)
            print(f"== {stage.title}: not available yet ({stage.function})")
            continue
        print(f"\n== {stage.title}")
        stage_started = time.perf_counter()
        result = function(run_dir, settings[stage.name], outputs)
        seconds = time.perf_counter() - stage_started
        outputs[stage.name] = result
        report["stages"][stage.name] = result.get("figures", {})
        report["seconds"][stage.name] = seconds
        sections.append(f"## {stage.title}\n\n{result.get('markdown', '')}\n\n*{seconds:.1f} s*\n")
        print(f"   ({seconds:.1f} s)")
        _write_report(run_dir, report, sections)  # after every stage, so a stopped run still has one
    report["seconds"]["total"] = time.perf_counter() - started
    if report["not_available"]:
        sections.append("Stages not available in this build: " + ", ".join(report["not_available"]) + ".\n")
    sections.append(f"Total time: {report['seconds']['total']:.1f} s.\n")
    _write_report(run_dir, report, sections)
    print(f"\nreport: {run_dir / 'report.md'} ({report['seconds']['total']:.1f} s)")
    return report


def _write_report(run_dir: Path, report: dict, sections: list[str]) -> None:
    from minifm.checkpoint import atomic_write_bytes

    atomic_write_bytes(run_dir / "report.json", (json.dumps(report, indent=2, default=_json_default) + "\n")
                       .encode("utf-8"))
    atomic_write_bytes(run_dir / "report.md", "\n".join(sections).encode("utf-8"))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report.json cannot store a {type(value).__name__}")


__all__ = ["PRESETS", "SAMPLING_SETTINGS", "STAGES", "Stage", "curate_stage", "distinct_n", "markdown_table",
           "pretrain_stage", "run_lifecycle", "sampling_stage", "stage_presets", "tokenizer_stage"]
