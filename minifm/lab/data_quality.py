"""Lab: data quality. "High-quality data improves performance with fewer parameters."

The question. A web crawl is mostly text nobody would want a model to imitate: menus, cookie
notices, keyword spam, markup, duplicates. Curation (C4's and Gopher's heuristic rules, then
deduplication: minifm.data.quality) throws that away. Does a model trained on the curated text
beat one trained on everything, at the same training compute? Is it worth more than doubling the
model? And how much curated text is enough? A second question: curation judges the *form* of a
document. Can it catch text that looks clean but states something false?

The setup. tinyworld writes a web-like corpus (minifm.data.tinyworld) with a share of junk
documents (`noise`). From it, four training sets for the same GPT trained for the same number of
steps (the same tokens and compute):
    raw            everything
    curated        what the "web" rules and deduplication keep
    curated-half   a random half of the curated documents (seen about twice as often)
    raw-2x-params  everything, for a model about twice as large (wider)
Every model shares one BPE tokenizer (trained on clean text from a seed no training set uses), so
their per-token losses compare, and is scored on one fixed clean held-out set (tinyworld documents
from another seed: never trained on). Downstream, every model gets the same supervised fine-tuning
on tinyworld's train instructions and is graded on its held-out instructions by tinyworld's grader,
as `minifm lifecycle` grades (greedy answers, minifm.lifecycle.evaluation). Greedy answers of a
model this small are often wrong, so a second, finer downstream figure ranks answers instead: on
the held-out fact and counting questions, is the right answer more likely than each of 4 wrong ones
(chance 20%)?

Misinformation. `plant_misinformation` swaps the town of a few people (the targets) for a false one
in 0%, 5% and 20% of the documents: every statement of a target's town in a chosen document is
rewritten with the false town (named or pronoun form, in the document's language), or, where the
document does not state it, the false statement is added to a paragraph. Nothing else changes. Each
model is then asked, for every target, which completion it finds more likely: "Mara lives in" +
true town or + false town (the log-likelihoods of the two sentences, in each of the English town
templates). The share of comparisons the false town wins is the measurement; the same comparison
on people whose facts were never touched (with a wrong town drawn the same way) is the control.
Both the raw planted corpus and its curated version are trained on: does curation remove the lies?

Simplifications: one synthetic world, small models and short training; the junk share is set by
`noise` (40% by default, so the size of the raw-vs-curated gap is a choice, not a measurement of
the real web); a town paragraph may still list a target among the true town's residents (a careful
reader could spot the contradiction; the heuristic rules do not read for meaning).
"""
from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import numpy as np

import minifm.functional as F
from minifm.autograd.grad_mode import no_grad
from minifm.data import tinyworld
from minifm.data.conversations import prompt_ids, response_ids
from minifm.data.tinyworld import Document, clean_corpus, default_world, generate_documents
from minifm.data.tinyworld import sentences
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr, quiet, settings_fingerprint
from minifm.lifecycle.evaluation import fitting, generate_responses
from minifm.models.sizes import param_count
from minifm.train.config import TrainConfig
from minifm.train.plots import plot_xy, pyplot
from minifm.train.pretrain import PretrainConfig, curate_texts, pack, run_pretraining, train_tokenizer
from minifm.train.sft import SFTConfig, train_sft

NAME = "data-quality"
CLAIM = "high-quality data improves performance with fewer parameters"
SUMMARY = "raw vs curated vs half-curated vs raw at 2x parameters: held-out loss, SFT accuracy; planted misinformation"
DEFAULT_MINUTES = 14

HELD_OUT_SEED = 9_999        # the clean held-out documents
TOKENIZER_SEED = 7_777       # the clean text the shared tokenizer is trained on
PROSE_KINDS = ("clean", "cookie_notice", "exact_duplicate", "near_duplicate")  # documents that state facts
CONDITIONS = ("raw", "curated", "curated-half", "raw-2x-params")
RANKED_WRONG_ANSWERS = 4     # ranked accuracy: the right answer against this many wrong ones
RANKED_FAMILIES = ("fact", "counting")  # the held-out questions ranked (their wrong answers have the same form)

PRESETS = {
    "tiny": dict(corpus_bytes=40_000, noise=0.4, held_out_bytes=6_000, tokenizer_bytes=30_000, vocab_size=300,
                 block_size=48, batch_size=8, n_layer=1, n_head=2, n_embd=16, wide_n_embd=24, steps=12,
                 learning_rate=3e-3, sft_steps=4, sft_batch_size=8, n_sft_train=64, n_sft_eval=40,
                 max_new_tokens=12, misinformation_shares=[0.0, 0.05, 0.2], n_targets=3, seeds=1),
    "default": dict(corpus_bytes=800_000, noise=0.4, held_out_bytes=50_000, tokenizer_bytes=200_000,
                    vocab_size=512, block_size=64, batch_size=16, n_layer=2, n_head=4, n_embd=64, wide_n_embd=96,
                    steps=800, learning_rate=3e-3, sft_steps=120, sft_batch_size=16, n_sft_train=None,
                    n_sft_eval=None, max_new_tokens=24, misinformation_shares=[0.0, 0.05, 0.2], n_targets=6,
                    seeds=2),
}


# ------------------------------------------------------------------ misinformation
@dataclasses.dataclass(frozen=True)
class FalseFact:
    """One person's town, and the false town that planted documents state instead."""

    person: str
    true_town: str
    false_town: str


def false_facts(people: list[str], seed: int, world: tinyworld.World | None = None) -> list[FalseFact]:
    """For each named person, a false town drawn (seeded) from the world's other towns."""
    world = default_world() if world is None else world
    rng = random.Random(seed)
    facts = []
    for name in people:
        if name not in world.by_name:
            raise ValueError(f"false_facts: {name!r} is not a person of {world!r}")
        true_town = world.by_name[name].town
        facts.append(FalseFact(name, true_town, rng.choice([t for t in world.towns if t != true_town])))
    return facts


def targets_and_controls(n_targets: int,
                          world: tinyworld.World | None = None) -> tuple[list[FalseFact], list[FalseFact]]:
    """`n_targets` people whose town is planted falsely, and as many untouched people (the control)."""
    world = default_world() if world is None else world
    if not 1 <= n_targets <= len(world.people) // 2:
        raise ValueError(f"n_targets must be in [1, {len(world.people) // 2}], got {n_targets}")
    names = [person.name for person in world.people]
    random.Random(0).shuffle(names)
    return (false_facts(names[:n_targets], seed=1, world=world),
            false_facts(names[n_targets:2 * n_targets], seed=2, world=world))


def town_statements(fact: FalseFact, town: str, language: str, pronoun: bool,
                    world: tinyworld.World | None = None) -> list[str]:
    """Every template's sentence saying fact.person lives in `town` (pronoun forms only where a template has one)."""
    world = default_world() if world is None else world
    person = dataclasses.replace(world.by_name[fact.person], town=town)
    out = []
    for variant in range(sentences.FACT_VARIANTS["town"][language]):
        if pronoun and variant not in sentences.SUBJECT_FIRST["town"][language]:
            continue
        out.append(sentences.fact_sentence(person, "town", language, variant, pronoun=pronoun))
    return out


def plant_in_document(document: Document, fact: FalseFact, rng: random.Random,
                      world: tinyworld.World | None = None) -> str:
    """The document with every statement of fact.person's town made false, or one false statement added.

    A pronoun statement ("She lives in Tollby.") is rewritten only in a paragraph (line) whose first
    sentence names the person: tinyworld uses pronouns only inside a person's own paragraph.
    """
    language = document.language
    swaps = list(zip(town_statements(fact, fact.true_town, language, False, world),
                     town_statements(fact, fact.false_town, language, False, world)))
    pronoun_swaps = list(zip(town_statements(fact, fact.true_town, language, True, world),
                             town_statements(fact, fact.false_town, language, True, world)))
    lines = document.text.split("\n")
    changed = False
    for index, line in enumerate(lines):
        first_sentence = re.split(r"(?<=[.!?])\s+", line, maxsplit=1)[0]
        pairs = swaps + (pronoun_swaps if re.search(rf"\b{re.escape(fact.person)}\b", first_sentence) else [])
        for true_sentence, false_sentence in pairs:
            pattern = rf"(?<![\w']){re.escape(true_sentence)}"
            line, count = re.subn(pattern, false_sentence, line)
            changed = changed or count > 0
        lines[index] = line
    if not changed:  # the document did not state the fact: add the false statement to one paragraph
        statement = rng.choice(town_statements(fact, fact.false_town, language, False, world))
        index = rng.randrange(len(lines))
        lines[index] = f"{lines[index]} {statement}" if lines[index] else statement
    return "\n".join(lines)


def plant_misinformation(documents: list[Document], share: float, facts: list[FalseFact], seed: int = 0,
                         world: tinyworld.World | None = None) -> tuple[list[str], list[int]]:
    """The documents' texts with a false fact planted in round(share * len(documents)) of them.

    The planted documents are drawn (seeded) from those that state facts (PROSE_KINDS); the i-th of
    them, in corpus order, gets facts[i % len(facts)], so every false fact is planted about equally
    often. Returns (texts, indices of the planted documents).
    """
    if not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be a fraction in [0, 1], got {share!r}")
    if not facts:
        raise ValueError("plant_misinformation needs at least one FalseFact, got none")
    n_planted = int(round(share * len(documents)))
    prose = [index for index, document in enumerate(documents) if document.kind in PROSE_KINDS]
    if n_planted > len(prose):
        raise ValueError(f"share {share} asks for {n_planted} planted documents but only {len(prose)} of "
                         f"{len(documents)} documents state facts")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(prose, n_planted))
    texts = [document.text for document in documents]
    for order, index in enumerate(chosen):
        texts[index] = plant_in_document(documents[index], facts[order % len(facts)], rng, world)
    return texts, chosen


# ------------------------------------------------------------------ measurements
def completion_log_likelihoods(model, prefixes: list[list[int]], completions: list[list[int]]) -> np.ndarray:
    """log p(completion | prefix) summed over the completion's tokens, one number per pair.

    Each row is prefix + completion, right-padded (a causal model's earlier positions never see the
    padding); the logits at position t score the token at t + 1.
    """
    if len(prefixes) != len(completions):
        raise ValueError(f"prefixes and completions must pair up, got {len(prefixes)} and {len(completions)}")
    if not prefixes:
        return np.zeros(0)
    rows = [list(prefix) + list(completion) for prefix, completion in zip(prefixes, completions)]
    if any(len(prefix) == 0 or len(completion) == 0 for prefix, completion in zip(prefixes, completions)):
        raise ValueError("every prefix and completion needs at least one token")
    longest = max(len(row) for row in rows)
    if longest > model.config.block_size:
        raise ValueError(f"a prefix + completion has {longest} tokens, more than block_size {model.config.block_size}")
    ids = np.zeros((len(rows), longest), dtype=np.int64)  # (N, L), padded with token 0 (never scored)
    scored = np.zeros((len(rows), longest - 1), dtype=bool)  # (N, L - 1): which next-token predictions count
    for row_index, (row, prefix) in enumerate(zip(rows, prefixes)):
        ids[row_index, :len(row)] = row
        scored[row_index, len(prefix) - 1:len(row) - 1] = True
    totals = np.zeros(len(rows))
    model.eval()
    with no_grad():
        for start in range(0, len(rows), 64):
            batch = ids[start:start + 64]
            log_probs = F.log_softmax(model(batch[:, :-1]), axis=-1).data  # (b, L - 1, V)
            picked = np.take_along_axis(log_probs, batch[:, 1:, None], axis=-1)[..., 0]  # (b, L - 1)
            totals[start:start + 64] = np.where(scored[start:start + 64], picked, 0.0).sum(axis=1)
    return totals


def false_preference(model, tokenizer, facts: list[FalseFact], world: tinyworld.World | None = None) -> dict:
    """How often the model finds "<person> lives in <false town>." more likely than the true sentence.

    Each English town template is one comparison: the shared opening ("Mara lives in", "The home of
    Mara is in") after an <|endoftext|> (a document's start) is the prefix; " <town>." the completion.
    """
    eos = tokenizer.special_tokens["<|endoftext|>"]
    prefixes, true_completions, false_completions = [], [], []
    for fact in facts:
        for true_sentence, false_sentence in zip(town_statements(fact, fact.true_town, "en", False, world),
                                                 town_statements(fact, fact.false_town, "en", False, world)):
            opening = true_sentence[:true_sentence.rindex(f" {fact.true_town}")]
            if not false_sentence.startswith(opening):
                raise ValueError(f"the town templates must end in the town: {true_sentence!r}")
            prefixes.append([eos] + list(tokenizer.encode(opening)))
            true_completions.append(list(tokenizer.encode(true_sentence[len(opening):])))
            false_completions.append(list(tokenizer.encode(false_sentence[len(opening):])))
    true_scores = completion_log_likelihoods(model, prefixes, true_completions)
    false_scores = completion_log_likelihoods(model, prefixes, false_completions)
    return {"false_preferred": float(np.mean(false_scores > true_scores)),
            "mean_margin": float(np.mean(false_scores - true_scores)), "comparisons": len(prefixes)}


def held_out_loss(model, tokenizer, texts: list[str], block_size: int) -> float:
    """Token-weighted mean next-token cross-entropy over the texts packed into windows (nats/token)."""
    windows = pack(tokenizer.encode_batch(texts), block_size, tokenizer.special_tokens["<|endoftext|>"], "held-out")
    total, count = 0.0, 0
    model.eval()
    with no_grad():
        for start in range(0, windows.shape[0], 32):
            batch = windows[start:start + 32]  # (b, T + 1)
            total += float(F.cross_entropy(model(batch[:, :-1]), batch[:, 1:]).data) * batch[:, 1:].size
            count += batch[:, 1:].size
    return total / count


def sft_tasks(s: dict, tokenizer, block_size: int) -> tuple[list[dict], list[tinyworld.Task]]:
    """The SFT examples (tinyworld's train instructions, plain style) and the held-out tasks to grade."""
    train = fitting(tinyworld.instructions("train", n=s["n_sft_train"], style_mix={"plain": 1.0}), tokenizer,
                    block_size, s["max_new_tokens"])
    held_out = [task for task in tinyworld.all_tasks("test")]
    if s["n_sft_eval"] is not None:
        held_out = random.Random(0).sample(held_out, min(s["n_sft_eval"], len(held_out)))
    held_out = [task for task in held_out
                if len(prompt_ids(tokenizer, task.prompt)) + s["max_new_tokens"] <= block_size]
    return train, held_out


def fine_tune_and_grade(model, tokenizer, s: dict, run_dir) -> dict:
    """The same SFT for every model, then greedy answers graded by tinyworld.grade (per family) and the
    ranked accuracy on fact and counting questions (the right answer more likely than each of 4 wrong ones)."""
    block_size = model.config.block_size
    train, held_out = sft_tasks(s, tokenizer, block_size)
    config = SFTConfig(max_steps=s["sft_steps"], per_device_train_batch_size=s["sft_batch_size"],
                       learning_rate=1e-3, max_length=block_size - 1, disable_tqdm=True)
    train_sft(model, tokenizer, train, config, run_dir=Path(run_dir) / "sft")
    with no_grad():
        answers = generate_responses(model, tokenizer, [task.prompt for task in held_out], s["max_new_tokens"])
    correct = [bool(tinyworld.grade(task.prompt, answer)) for task, answer in zip(held_out, answers)]
    by_family = {}
    for task, right in zip(held_out, correct):
        by_family.setdefault(task.family, []).append(right)

    rng = random.Random(0)
    ranked_tasks, prefixes, completions = [], [], []
    for task in held_out:
        if task.family not in RANKED_FAMILIES or len(task.wrong_answers) < RANKED_WRONG_ANSWERS:
            continue
        candidates = [task.answer] + rng.sample(list(task.wrong_answers), RANKED_WRONG_ANSWERS)
        prompt = prompt_ids(tokenizer, task.prompt)
        candidate_ids = [response_ids(tokenizer, candidate) for candidate in candidates]
        if len(prompt) + max(len(ids) for ids in candidate_ids) > block_size:
            continue  # a long answer ("Who lives in ...?") that does not fit the context
        ranked_tasks.append(task)
        prefixes += [prompt] * len(candidates)
        completions += candidate_ids
    scores = completion_log_likelihoods(model, prefixes, completions)  # (tasks x candidates,)
    scores = scores.reshape(len(ranked_tasks), RANKED_WRONG_ANSWERS + 1)  # (tasks, right answer + wrong ones)
    ranked = scores[:, 0] > scores[:, 1:].max(axis=1)  # (tasks,)
    return {"graded_accuracy": float(np.mean(correct)), "graded_n": len(correct),
            "graded_by_family": {family: float(np.mean(values)) for family, values in sorted(by_family.items())},
            "ranked_accuracy": float(np.mean(ranked)) if ranked_tasks else None, "ranked_n": len(ranked_tasks),
            "examples": [{"prompt": task.prompt, "answer": answer}
                         for task, answer in list(zip(held_out, answers))[:3]]}


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    tokenizer = train_tokenizer(clean_corpus(size_bytes=s["tokenizer_bytes"], seed=TOKENIZER_SEED), s["vocab_size"])
    held_out = clean_corpus(size_bytes=s["held_out_bytes"], seed=HELD_OUT_SEED)
    targets, controls = targets_and_controls(s["n_targets"])
    fingerprint = settings_fingerprint(s)  # in every key: changed settings never reuse a kept result
    results = {}
    for seed in range(s["seeds"]):
        documents = generate_documents(size_bytes=s["corpus_bytes"], seed=seed, noise=s["noise"])
        for share in s["misinformation_shares"]:
            planted_texts, planted = plant_misinformation(documents, share, targets, seed=seed)
            curation = curate_texts(planted_texts, "web")
            curated = curation.kept
            planted_set = {planted_texts[index] for index in planted}
            kept_planted = sum(text in planted_set for text in curated)
            # condition -> (texts, model width, planted documents among the texts)
            training_sets = {"raw": (planted_texts, s["n_embd"], len(planted)),
                             "curated": (curated, s["n_embd"], kept_planted)}
            if share == 0:  # the data-quality comparison proper runs on the corpus with nothing planted
                order = np.random.default_rng(seed).permutation(len(curated))
                half = [curated[index] for index in sorted(order[:len(curated) // 2])]
                training_sets["curated-half"] = (half, s["n_embd"], 0)
                training_sets["raw-2x-params"] = (planted_texts, s["wide_n_embd"], 0)
            for condition, (texts, width, planted_in_training) in training_sets.items():
                key = f"{condition} planted={share:g} seed={seed} settings={fingerprint}"

                def train(texts=texts, width=width, key=key, seed=seed, fine_tune=share == 0,
                          planted_in_training=planted_in_training):
                    return train_and_score(lab, key, texts, width, seed, tokenizer, held_out, targets, controls,
                                           fine_tune, planted_in_training)

                result = lab.sub_run(key, train)
                results[key] = dict(result, condition=condition, share=share, seed=seed,
                                    planted=len(planted), planted_kept_by_curation=kept_planted,
                                    documents_in_corpus=len(documents), documents_kept=len(curated))
    report(lab, results)


def train_and_score(lab: LabRun, key: str, texts: list[str], width: int, seed: int, tokenizer, held_out: list[str],
                    targets: list[FalseFact], controls: list[FalseFact], fine_tune: bool,
                    planted_in_training: int) -> dict:
    """Pre-train one GPT on `texts`, score it on the held-out set and the false facts, then (fine_tune) SFT + grade."""
    s = lab.settings
    config = dict(corpus="tinyworld", curate=False, block_size=s["block_size"], n_layer=s["n_layer"],
                  n_head=s["n_head"], n_embd=width, model_seed=seed, eval_batches=2)
    train_config = TrainConfig(max_steps=s["steps"], per_device_train_batch_size=s["batch_size"],
                               learning_rate=s["learning_rate"], warmup_steps=max(1, s["steps"] // 10), eval_steps=0,
                               seed=seed, disable_tqdm=True)
    run_dir = lab.path("runs") / key.replace(" ", "_").replace("=", "-")
    summary = run_pretraining(run_dir, PretrainConfig(**config), train_config, tokenizer=tokenizer, texts=texts,
                              log=quiet)
    model = summary["model"]
    result = {"params": param_count(model.config), "training_documents": len(texts),
              "training_bytes": sum(len(text.encode("utf-8")) for text in texts),
              "planted_in_training": planted_in_training,
              "held_out_loss": held_out_loss(model, tokenizer, held_out, s["block_size"]),
              "targets": false_preference(model, tokenizer, targets),
              "controls": false_preference(model, tokenizer, controls)}
    if fine_tune:
        result["downstream"] = fine_tune_and_grade(model, tokenizer, s, run_dir)
    return result


# ------------------------------------------------------------------ the report
def plot_bars(values: dict[str, tuple[float, float]], path, title: str, ylabel: str, chance: float | None = None):
    """One bar per name with its standard error; an optional dashed chance line."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    names = list(values)
    axes.bar(names, [values[name][0] for name in names], yerr=[values[name][1] for name in names], capsize=4,
             color="tab:blue", alpha=0.8)
    if chance is not None:
        axes.axhline(chance, color="grey", linestyle="--", label=f"chance ({chance:.0%})")
        axes.legend()
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.set_xlabel("training data")
    axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def report(lab: LabRun, results: dict) -> None:
    s = lab.settings

    def runs(condition: str, share: float) -> list[dict]:
        return [r for r in results.values() if r["condition"] == condition and r["share"] == share]

    def stat(condition: str, share: float, pick) -> tuple[float, float]:
        values = [pick(r) for r in runs(condition, share)]
        values = [value for value in values if value is not None]  # None: nothing to measure in that run
        return mean_and_stderr(values) if values else (float("nan"), float("nan"))

    quality_rows, loss_bars, graded_bars, ranked_bars = [], {}, {}, {}
    for condition in CONDITIONS:
        loss = stat(condition, 0.0, lambda r: r["held_out_loss"])
        graded = stat(condition, 0.0, lambda r: r["downstream"]["graded_accuracy"])
        ranked = stat(condition, 0.0, lambda r: r["downstream"]["ranked_accuracy"])
        first = runs(condition, 0.0)[0]
        loss_bars[condition], graded_bars[condition], ranked_bars[condition] = loss, graded, ranked
        quality_rows.append([condition, f"{first['params']:,}", f"{first['training_documents']:,}",
                             f"{first['training_bytes']:,}", f"{loss[0]:.3f} ± {loss[1]:.3f}",
                             f"{np.exp(loss[0]):.2f}", f"{graded[0]:.3f} ± {graded[1]:.3f}",
                             f"{ranked[0]:.3f} ± {ranked[1]:.3f}"])
    plot_bars(loss_bars, lab.path("held_out_loss.png"), "Held-out loss on clean text by training data",
              "held-out loss (nats/token; lower is better)")
    plot_bars(ranked_bars, lab.path("ranked_accuracy.png"),
              "After SFT: right answer ranked above 4 wrong ones (held-out questions)", "ranked accuracy",
              chance=1 / (RANKED_WRONG_ANSWERS + 1))
    family_rows = []
    families = sorted({family for r in results.values() if "downstream" in r
                       for family in r["downstream"]["graded_by_family"]})
    for condition in CONDITIONS:
        row = [condition]
        for family in families:
            shares = [r["downstream"]["graded_by_family"].get(family, np.nan) for r in runs(condition, 0.0)]
            row.append(f"{np.mean(shares):.3f}")
        family_rows.append(row)

    shares = s["misinformation_shares"]
    series, errors, misinformation_rows = {}, {}, []
    for condition in ("raw", "curated"):
        for label, which in (("planted facts", "targets"), ("untouched facts (control)", "controls")):
            means, stderrs = [], []
            for share in shares:
                mean, stderr = stat(condition, share, lambda r: r[which]["mean_margin"])
                means.append(mean)
                stderrs.append(stderr)
            name = f"{condition}: {label}"
            series[name] = ([100 * share for share in shares], means)
            errors[name] = stderrs
        for share in shares:
            targets = stat(condition, share, lambda r: r["targets"]["false_preferred"])
            controls = stat(condition, share, lambda r: r["controls"]["false_preferred"])
            margin = stat(condition, share, lambda r: r["targets"]["mean_margin"])
            control_margin = stat(condition, share, lambda r: r["controls"]["mean_margin"])
            in_training = np.mean([r["planted_in_training"] for r in runs(condition, share)])
            misinformation_rows.append([condition, f"{100 * share:g}%", f"{in_training:.0f} of "
                                        f"{np.mean([r['training_documents'] for r in runs(condition, share)]):.0f}",
                                        f"{targets[0]:.3f} ± {targets[1]:.3f}", f"{margin[0]:+.2f} ± {margin[1]:.2f}",
                                        f"{controls[0]:.3f} ± {controls[1]:.3f}",
                                        f"{control_margin[0]:+.2f} ± {control_margin[1]:.2f}"])
    plot_xy(series, lab.path("misinformation.png"), title="Log-likelihood of the false town minus the true one",
            xlabel="share of documents with a planted false town (%)",
            ylabel="margin, false - true (nats; > 0: the lie wins)", errors=errors)

    planted_runs = [r for r in results.values() if r["condition"] == "raw" and r["share"] > 0]
    kept_share = (np.mean([r["planted_kept_by_curation"] / r["planted"] for r in planted_runs])
                  if planted_runs else float("nan"))
    raw_loss, curated_loss = loss_bars["raw"][0], loss_bars["curated"][0]
    wide_loss, half_loss = loss_bars["raw-2x-params"][0], loss_bars["curated-half"][0]
    first_raw = runs("raw", 0.0)[0]
    all_kept = np.mean([r["documents_kept"] / r["documents_in_corpus"] for r in results.values()])
    kept_documents = np.mean([r["documents_kept"] for r in runs("curated", 0.0)])
    size_ratio = runs("raw-2x-params", 0.0)[0]["params"] / first_raw["params"]
    bought = (raw_loss - curated_loss) / (raw_loss - wide_loss) if raw_loss != wide_loss else float("nan")
    verdicts = [
        f"curated data {'lowers' if curated_loss < raw_loss else 'does not lower'} the held-out loss "
        f"({raw_loss:.3f} -> {curated_loss:.3f} nats/token)",
        f"the curated model {'beats' if curated_loss < wide_loss else 'does not beat'} the raw model with "
        f"{size_ratio:.1f}x the parameters ({wide_loss:.3f}); curation buys {bought:.0%} of the loss that "
        f"{size_ratio:.1f}x the parameters buy",
        f"half of the curated data gives {half_loss:.3f} ({'worse' if half_loss > curated_loss else 'no worse'} "
        f"than all of it)",
    ]
    supported = bool(curated_loss < raw_loss and curated_loss < wide_loss)
    claim = ("The result supports the claim at this scale: the curated data beats twice the parameters."
             if supported else
             "The result does not support the claim at this scale: curated data beats raw data at the same size, "
             "but not a model with twice the parameters." if curated_loss < raw_loss else
             "The result does not support the claim at this scale.")
    graded_best = max(graded_bars[condition][0] for condition in CONDITIONS)
    downstream = (f" Downstream, no model answers more than {graded_best:.1%} of the held-out instructions exactly "
                  f"(too small and too briefly trained to recall facts word for word), so the comparison rests on "
                  f"the ranked accuracy: "
                  if graded_best < 0.05 else " Downstream, graded accuracy: "
                  + ", ".join(f"{c} {graded_bars[c][0]:.3f}" for c in CONDITIONS) + "; ranked accuracy: ")
    downstream += ", ".join(f"{c} {ranked_bars[c][0]:.3f}" for c in CONDITIONS) + " (chance 0.2)."
    top_share = max(shares)
    raw_top = stat("raw", top_share, lambda r: r["targets"]["false_preferred"])[0]
    curated_top = stat("curated", top_share, lambda r: r["targets"]["false_preferred"])[0]
    raw_zero = stat("raw", 0.0, lambda r: r["targets"]["false_preferred"])[0] if 0.0 in shares else float("nan")
    curated_zero = stat("curated", 0.0, lambda r: r["targets"]["false_preferred"])[0] if 0.0 in shares else float("nan")
    margins = {condition: [stat(condition, share, lambda r: r["targets"]["mean_margin"])[0] for share in shares]
               for condition in ("raw", "curated")}
    sections = [
        ("Question", f"Does a model trained on curated text beat one trained on the raw crawl at the same compute, "
                     f"even one twice as large? Does curation remove planted misinformation? (The chapter: "
                     f"\"{CLAIM}\".)"),
        ("Setup", f"tinyworld corpus of {s['corpus_bytes']:,} bytes per seed with {s['noise']:.0%} junk documents; "
                  f"the \"web\" rules and deduplication keep {kept_documents:.0f} of "
                  f"{first_raw['documents_in_corpus']:,} documents. GPT {s['n_layer']} layer(s) x {s['n_embd']} wide "
                  f"({first_raw['params']:,} parameters; the 2x model {s['wide_n_embd']} wide), {s['steps']} steps of "
                  f"{s['batch_size']} x {s['block_size']} tokens for every model; one shared {s['vocab_size']}-token "
                  f"BPE; held-out: {s['held_out_bytes']:,} bytes of clean documents from an unseen seed. SFT: "
                  f"{s['sft_steps']} steps on tinyworld's train instructions, graded on its held-out ones. "
                  f"{s['seeds']} seed(s) (corpus sample and weights); ± is the standard error over seeds."),
        ("Data quality", markdown_table(["training data", "parameters", "documents", "bytes",
                                         "held-out loss", "perplexity", "SFT graded accuracy",
                                         "ranked accuracy"], quality_rows)
         + "\n\n![held-out loss](held_out_loss.png)\n\n![ranked accuracy](ranked_accuracy.png)\n\n"
         + "Graded accuracy by task family (greedy answers, tinyworld.grade):\n\n"
         + markdown_table(["training data"] + families, family_rows)),
        ("Misinformation", f"False towns planted for {s['n_targets']} people. \"false preferred\" is the share of "
                           f"(person, template) comparisons in which \"... <false town>.\" is more likely than the "
                           f"truth; the margin is the mean log-likelihood difference (false - true, nats); the control "
                           f"asks the same about people whose facts were never touched.\n\n"
         + markdown_table(["training data", "planted", "planted documents in training",
                           "false preferred (planted facts)", "margin (planted)", "false preferred (control)",
                           "margin (control)"], misinformation_rows)
         + "\n\n![misinformation](misinformation.png)\n\n"
         + f"Curation kept {kept_share:.0%} of the planted documents: the rules judge form (length, punctuation, "
           f"stop words, repetition, boilerplate), and a planted document has the form of a clean one."),
        ("What it shows",
         "; ".join(verdicts) + ". " + claim + downstream
         + f" Misinformation: with {100 * top_share:g}% of documents planted, the false town wins "
           f"{raw_top:.0%} of the comparisons for the model trained on raw text (nothing planted: {raw_zero:.0%}) and "
           f"{curated_top:.0%} on curated text (nothing planted: {curated_zero:.0%}); the log-likelihood margin of "
           f"the false town moves " + "; ".join(f"{condition}: " + " -> ".join(f"{m:+.2f}" for m in margins[condition])
                                                for condition in margins)
         + f" nats as the planted share grows ({', '.join(f'{100 * share:g}%' for share in shares)}). "
         + (f"Curation kept {kept_share:.0%} of the planted documents against {all_kept:.0%} of all documents: it does "
            f"not remove misinformation (the heuristic rules cannot see whether a fluent sentence is true), and by "
            f"dropping junk it raises the planted share of what remains."
            if kept_share >= all_kept else
            f"Curation kept {kept_share:.0%} of the planted documents against {all_kept:.0%} of all documents: it "
            f"removed planted documents more often than others here (duplicates among them), not because they "
            f"were false.")),
    ]
    lab.write_report("Data quality: curated vs raw text, and planted misinformation", sections,
                     {"results": results, "planted_kept_by_curation": kept_share, "claim_supported": supported})
