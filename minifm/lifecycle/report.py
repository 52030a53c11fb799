"""The lifecycle's report: how each stage's numbers become report.md's text and the plots.

Each stage returns its figures (JSON-able numbers and texts, collected in report.json) and its
section of report.md. Every sentence, table and picture of those sections is built here, from the
figures alone, so the report reads the same however a stage was run:

    formats    one number format per kind of quantity (`fmt_reward`, `fmt_share`, `fmt_nats`, ...)
    metrics    `define(term, text)` writes a metric's definition where report.md first uses it;
               METRIC_TERMS lists every defined term and the words that count as a use of it
    quoting    model samples as quoted text: `quote_block` (blockquotes, real line breaks) and
               `quote_inline` (one table cell); never Python reprs with a literal backslash-n
    sections   curate_markdown, tokenizer_markdown, pretrain_markdown, sampling_markdown,
               post_training_markdown, peft_markdown (+ peft_table)
    plots      figure_* build a matplotlib Figure (tests inspect its titles, labels and legends);
               plot_* write it as a PNG. Points are named in legends, never by text next to them,
               so labels cannot collide; ordered points get a colour ramp (and arrows)
    files      markdown_table, write_report

The sentences that interpret results (which policy gained, why a PEFT method scored 0.000, when
best-of-N is reward hacking) are written from the numbers: each claim is checked before it is made.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_bytes
from minifm.data import tinyworld
from minifm.data.tinyworld import tasks as tinyworld_tasks
from minifm.train.plots import figure_scatter, pyplot, save_figure


# ------------------------------------------------------------------------------------------- formats
# One format per kind of quantity, used by every table and sentence of the report.
def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float, np.number)) and math.isfinite(float(value))


# One formatter per kind of quantity, deliberately parallel: the kind decides the precision, so every
# table in the report shows a reward, a share or a loss the same way.
def fmt_reward(value) -> str:
    """Rewards and reward differences: signed, 3 decimals (+1.000, -0.433)."""
    return f"{value:+.3f}" if _finite(value) else "n/a"


def fmt_share(value) -> str:
    """Accuracies, shares, distinct-n, correlations, standard errors: 3 decimals (0.292)."""
    return f"{value:.3f}" if _finite(value) else "n/a"


def fmt_nats(value) -> str:
    """Losses, log-likelihoods and KL, in nats: 3 decimals (1.081, -0.661)."""
    return f"{value:.3f}" if _finite(value) else "n/a"


def fmt_rate(value) -> str:
    """Ratios of counts (bytes/token, tokens/word, ratio to best) and perplexity: 2 decimals (4.20)."""
    return f"{value:.2f}" if _finite(value) else "n/a"


def fmt_percent(fraction) -> str:
    """A fraction shown as a percentage with 2 decimals (3.57%)."""
    return f"{100 * fraction:.2f}%" if _finite(fraction) else "n/a"


def fmt_seconds(value) -> str:
    """Times: seconds with 1 decimal."""
    return f"{value:.1f}" if _finite(value) else "n/a"


def fmt_count(value) -> str:
    """Counts (parameters, tokens, documents): integers with thousands separators."""
    return f"{int(round(value)):,d}" if _finite(value) else "n/a"


def human_bytes(count) -> str:
    """A byte count in B, KiB, MiB or GiB (1 decimal above bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


_human_bytes = human_bytes  # the name earlier code used


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{fmt_count(count)} {word if count == 1 else (plural or word + 's')}"


# ------------------------------------------------------------------------------------------- metrics
# Every metric report.md uses, with the patterns that count as a use of it. Each is defined once,
# with `define`, at or before its first use (tests/lifecycle/test_report.py checks this).
METRIC_TERMS: dict[str, tuple[str, ...]] = {
    "bytes/token": (r"bytes/token",),
    "fertility": (r"(?i)fertility", r"tokens/word"),
    "loss": (r"(?i)\bloss\b",),
    "perplexity": (r"(?i)perplexity",),
    "distinct-n": (r"(?i)distinct-",),
    "mean log-likelihood": (r"(?i)log-lik",),
    "accuracy": (r"(?i)accuracy",),
    "ground-truth reward": (r"(?i)ground[- ]truth",),
    "learned reward": (r"(?i)learned reward",),
    "preference accuracy": (r"(?i)preference accuracy",),
    "polite share": (r"(?i)polite share",),
    "KL to SFT": (r"\bKL\b",),
    "trainable parameters": (r"(?i)trainable param",),
    "optimizer memory": (r"(?i)optimizer memory",),
}


def define(term: str, text: str) -> str:
    """A metric's definition as a markdown list item: `- **term**: text`."""
    if term not in METRIC_TERMS:
        raise KeyError(f"define: {term!r} is not in METRIC_TERMS; add it there so the report tests check it")
    return f"- **{term}**: {text}"


def ground_truth_scale() -> dict:
    """The ground-truth reward's range and landmarks, from tinyworld's constants."""
    bonus, per_word = tinyworld_tasks.POLITENESS_BONUS, tinyworld_tasks.LENGTH_PENALTY_PER_WORD
    longest, rude = tinyworld_tasks.MAX_LENGTH_PENALTY, tinyworld_tasks.RUDENESS_PENALTY
    return {"best": 1.0 + bonus, "worst": -1.0 - longest - rude, "bonus": bonus, "per_word": per_word,
            "max_length_penalty": longest, "rude": rude, "lowest_correct": 1.0 - longest - rude,
            "highest_wrong": -1.0 + bonus}


def _signed(value: float) -> str:
    """A reward landmark with one decimal: +1.2, -0.8, 0.0."""
    return "0.0" if abs(value) < 0.05 else f"{value:+.1f}"


def _polite_markers() -> str:
    return ", ".join(f"“{prefix}”" for prefix in tinyworld.POLITE_PREFIXES)


# ------------------------------------------------------------------------------------------- quoting
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MARKUP = re.compile(r"([\\`*_\[\]<~&#])")   # emphasis, code, links, HTML, strike-through, entities
_LINE_START = re.compile(r"^([-+=>])")        # lists, setext headings, nested quotes


def _visible(text: str) -> str:
    """Control characters as their Unicode control pictures (U+2400 + code), tabs as spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    return _CONTROL.sub(lambda m: chr(0x2400 + ord(m.group()) if m.group() != "\x7f" else 0x2421), text)


def _escape(line: str, table_cell: bool = False) -> str:
    """Backslash-escape what markdown would read as markup (emphasis, code, links, HTML, lists; | in tables)."""
    line = _MARKUP.sub(r"\\\1", line)
    if table_cell:
        line = line.replace("|", "\\|")
    if re.match(r"^\d+[.)]", line):   # "1." or "1)" would start a numbered list: escape the punctuation
        return re.sub(r"^(\d+)([.)])", r"\1\\\2", line)
    return _LINE_START.sub(r"\\\1", line)


def quote_block(text: str) -> str:
    """`text` as a markdown blockquote: each line of the text is a line of the quote (hard line breaks),
    markdown characters escaped, control characters made visible."""
    lines = [_escape(line.strip()) for line in _visible(text.strip()).split("\n")]
    out = []
    for i, line in enumerate(lines):
        breaks = i + 1 < len(lines) and line and lines[i + 1]   # a backslash at a line's end: CommonMark hard break
        out.append(("> " + line + ("\\" if breaks else "")).rstrip())
    return "\n".join(out or [">"])


def quote_inline(text: str) -> str:
    """`text` for one table cell or sentence: escaped, line breaks shown as ↵, in typographic quotes."""
    lines = [_escape(line.strip(), table_cell=True) for line in _visible(text.strip()).split("\n")]
    return "“" + " ↵ ".join(lines) + "”"


def sample_notes(texts: list[str]) -> str:
    """Sentences explaining odd characters that appear in `texts` (empty when there are none)."""
    notes = []
    if any("\ufffd" in t for t in texts):
        notes.append("“�” marks bytes that are not valid UTF-8 on their own: a byte-level model can emit half a "
                     "character.")
    if any(re.search(r"<\|extra_\d+\|>", t) for t in texts):
        notes.append("“<|extra_…|>” are reserved special-token ids that never occur in the training text; a "
                     "barely trained model still gives them some probability.")
    if any(_CONTROL.search(t) for t in texts):
        notes.append("Symbols such as “␐” stand for control characters the model generated.")
    return " ".join(notes)


# ------------------------------------------------------------------------------------------- tables
def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; cells are str() of the values (format numbers before passing them; a bare
    float gets 3 decimals), with | escaped and line breaks shown as ↵."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value).replace("|", "\\|").replace("\n", " ↵ ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(run_dir: Path, report: dict, sections: list[str]) -> None:
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


# ------------------------------------------------------------------------------------------- curation
def curate_markdown(figures: dict, rules: list[dict]) -> str:
    """The curation section: what was generated, what the rules kept, the per-rule table.
    `rules`: [{"rule", "seen", "dropped", "example_reason"}] in the order the rules ran."""
    rows = [[r["rule"], fmt_count(r["seen"]), fmt_count(r["dropped"]), r["example_reason"]] for r in rules]
    return (f"{fmt_count(figures['documents'])} tinyworld documents ({fmt_count(figures['bytes'])} bytes), "
            f"{fmt_count(figures['noise_documents'])} of them planted noise (boilerplate, symbol soup, duplicates, "
            f"...). The quality rules and deduplication, run in order, kept {fmt_count(figures['kept'])}: they removed "
            f"{figures['noise_removed_fraction']:.0%} of the noise and kept {figures['clean_kept_fraction']:.0%} "
            "of the clean documents. Each row counts the documents a rule saw and dropped, with one reason it "
            "gave.\n\n"
            + markdown_table(["rule", "seen", "dropped", "example reason"], rows))


# ------------------------------------------------------------------------------------------- tokenizer
def tokenizer_markdown(figures: dict) -> str:
    """The tokenizer section: the two compression measures, defined, and the per-language table."""
    stats = figures["fertility"]
    rows = [[language, fmt_count(s["texts"]), fmt_count(s["tokens"]), fmt_rate(s["tokens_per_word"]),
             fmt_rate(s["bytes_per_token"]), fmt_rate(s["ratio_to_best"])] for language, s in stats.items()]
    lines = [
        f"Byte-level BPE with {fmt_count(figures['vocab_size'])} ids, {fmt_count(figures['special_tokens'])} of them "
        f"special tokens (chat markers such as `<|user|>` and spare ids), trained in "
        f"{fmt_seconds(figures['train_seconds'])} s on the curated corpus. Two numbers say how well it compresses "
        "text:",
        "",
        define("bytes/token", "UTF-8 bytes of text per token. Higher means fewer, longer tokens, so more text fits "
                              "in the model's context; a byte-level tokenizer without merges has 1.00."),
        define("fertility", "tokens per whitespace-separated word (tokens/word). A language the merges serve "
                            "poorly needs more tokens per word; *ratio to best* divides by the best language's."),
        "",
        f"Over the whole curated corpus: {fmt_rate(figures['bytes_per_token'])} bytes/token.",
    ]
    if len(stats) > 1:
        best = min(stats, key=lambda language: stats[language]["tokens_per_word"])
        worst = max(stats, key=lambda language: stats[language]["tokens_per_word"])
        most = max(stats, key=lambda language: stats[language]["texts"])
        total = sum(s["texts"] for s in stats.values())
        sentence = (f"{worst} needs {fmt_rate(stats[worst]['ratio_to_best'])}× as many tokens per word as {best}")
        if most == best:
            sentence += (f": {best} has {fmt_count(stats[best]['texts'])} of the {fmt_count(total)} documents, so most "
                         "merges were learned from it.")
        else:
            sentence += "."
        lines[-1] += " " + sentence
    lines += ["", markdown_table(["language", "texts", "tokens", "tokens/word", "bytes/token", "ratio to best"], rows)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- pre-training
def pretrain_markdown(figures: dict, model: dict) -> str:
    """The pre-training section. `model`: {"n_layer", "n_embd", "n_head", "block_size"}."""
    vocab = figures.get("vocab_size")
    uniform = f" a uniform guess over the {fmt_count(vocab)} ids scores {fmt_count(vocab)}." if vocab else ""
    lines = [
        f"A GPT ({model['n_layer']} layers, width {model['n_embd']}, {model['n_head']} heads, context "
        f"{model['block_size']} tokens, {fmt_count(figures['params'])} parameters) trained as a causal language "
        "model on the curated corpus: at every position it predicts the next token.",
        "",
        define("loss", "the cross-entropy of the next token, -ln p(true next token), averaged over tokens, in "
                       "nats per token. The train loss is measured on the batch being trained on, the held-out loss "
                       "on windows of text kept out of training."),
        define("perplexity", "exp(held-out loss): the model is, on average, as unsure as a uniform choice among "
                             "that many tokens;" + uniform),
        "",
    ]
    sentences = []
    if vocab and _finite(figures.get("first_loss")) and abs(figures["first_loss"] - math.log(vocab)) < 0.5:
        sentences.append(f"The first train loss, {fmt_nats(figures['first_loss'])}, is close to "
                         f"ln {fmt_count(vocab)} = {fmt_nats(math.log(vocab))}: an untrained model spreads its "
                         "probability almost evenly over the vocabulary.")
    if _finite(figures.get("val_loss")) and _finite(figures.get("final_train_loss")):
        gap = figures["val_loss"] - figures["final_train_loss"]
        if gap < 0.15:
            sentences.append(f"The held-out loss ({fmt_nats(figures['val_loss'])}) is close to the final train loss "
                             f"({fmt_nats(figures['final_train_loss'])}): the model does as well on unseen text as on "
                             "its training text, so it has learned patterns rather than memorised documents.")
        else:
            sentences.append(f"The held-out loss ({fmt_nats(figures['val_loss'])}) is {fmt_nats(gap)} above the final "
                             f"train loss ({fmt_nats(figures['final_train_loss'])}): the model fits its training text "
                             "better than unseen text.")
    if sentences:
        lines += [" ".join(sentences), ""]
    speed = figures.get("tokens_per_s_median")
    rows = [["parameters", fmt_count(figures["params"])], ["optimizer steps", fmt_count(figures["steps"])],
            ["tokens seen", fmt_count(figures["tokens"])],
            ["training time (s)", fmt_seconds(figures["train_elapsed_s"])],
            ["tokens/s (median step)", fmt_count(speed) if _finite(speed) else "n/a"],
            ["first train loss", fmt_nats(figures["first_loss"])],
            ["final train loss", fmt_nats(figures["final_train_loss"])],
            ["held-out loss", fmt_nats(figures["val_loss"])],
            ["held-out perplexity", fmt_rate(figures["val_ppl"])]]
    lines += [markdown_table(["quantity", "value"], rows), "",
              f"![pre-training loss curve]({figures.get('loss_curve', 'pretrain/loss_curve.png')})"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- sampling
TEMPERATURE_ORDER = ["greedy", "temperature 0.7", "temperature 1.0", "temperature 1.5"]


def _sampling_rule(label: str, options: dict) -> str:
    if not options.get("do_sample", True):
        return "the most likely token every time"
    if options.get("top_k"):
        return f"sampling among the {options['top_k']} likeliest tokens"
    if options.get("top_p", 1.0) < 1.0:
        return f"sampling among the fewest tokens that hold {options['top_p']:.0%} of the probability"
    if options.get("min_p"):
        return f"sampling among tokens at least {options['min_p']:g} times as likely as the likeliest"
    return f"sampling from the logits divided by {options.get('temperature', 1.0):g}"


def sampling_markdown(figures: dict) -> str:
    """The sampling section: the decoding rules, distinct-n and log-likelihood defined, the trend read
    from the numbers, the table, the plot and the samples as quotes."""
    results, examples, prompts = figures["settings"], figures["examples"], figures["prompts"]
    rules = "; ".join(f"*{label}*: {_sampling_rule(label, s.get('options', {}))}" for label, s in results.items())
    lines = [
        f"The pre-trained model continues the same {_plural(len(prompts), 'prompt')} (the first words of tinyworld "
        f"documents it never saw) under each decoding rule, up to {figures['max_new_tokens']} new tokens: {rules}.",
        "",
        define("distinct-n", "unique n-grams / all n-grams of the generated token ids, over one sample per "
                             "prompt (distinct-1: single tokens, distinct-2: pairs). 1.000 means nothing repeats; "
                             "low values mean the text loops. A measure of diversity."),
        define("mean log-likelihood", "the mean log-probability, in nats per token, that the plain model "
                                      "(temperature 1, no truncation) gives the tokens it generated. Nearer 0 means "
                                      "text the model finds more typical. A measure of quality, as the model sees it."),
        "",
    ]
    chain = [label for label in TEMPERATURE_ORDER if label in results]
    if len(chain) >= 2:
        first, last = results[chain[0]], results[chain[-1]]
        loglik = [results[label]["mean_loglik"] for label in chain]
        distinct = [results[label]["distinct_2"] for label in chain]
        sentence = (f"From {chain[0]} to {chain[-1]} the mean log-likelihood goes from "
                    f"{fmt_nats(first['mean_loglik'])} to {fmt_nats(last['mean_loglik'])} nats/token and distinct-2 "
                    f"from {fmt_share(first['distinct_2'])} to {fmt_share(last['distinct_2'])}")
        if all(b <= a for a, b in zip(loglik, loglik[1:])) and all(b >= a for a, b in zip(distinct, distinct[1:])):
            sentence += (": every step up in temperature buys diversity with likelihood, the quality/diversity "
                         "trade-off.")
        else:
            sentence += ", though not step by step in order (few prompts make these numbers noisy)."
        truncated = [label for label, s in results.items()
                     if label not in chain and s.get("options", {}).get("do_sample", True)]
        reference = results.get("temperature 1.0")
        if reference and truncated:
            if all(results[label]["mean_loglik"] > reference["mean_loglik"] for label in truncated):
                kept = _join([fmt_nats(results[label]["mean_loglik"]) for label in truncated])
                sentence += (f" {_join(truncated)} sample at temperature 1.0 but cut off the unlikely tail, so they "
                             f"keep more likelihood ({kept}) than plain sampling at 1.0 "
                             f"({fmt_nats(reference['mean_loglik'])}).")
        lines += [sentence, ""]
    rows = [[label, fmt_share(s["distinct_1"]), fmt_share(s["distinct_2"]), fmt_nats(s["mean_loglik"]),
             f"{s['mean_length']:.1f}"] for label, s in results.items()]
    lines += [markdown_table(["setting", "distinct-1", "distinct-2", "mean log-likelihood (nats/token)",
                              "mean length (tokens)"], rows),
              "",
              "![sampling: diversity against likelihood; arrows follow rising temperature](sampling_tradeoff.png)",
              "",
              "Samples, one per prompt (each starts with its prompt):",
              ""]
    shown = []
    for label, texts in examples.items():
        lines += [f"**{label}**", ""]
        for text in texts[:3]:
            lines += [quote_block(text[:300]), ""]
            shown.append(text[:300])
    notes = sample_notes(shown)
    if notes:
        lines += [notes, ""]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------- post-training
def post_training_definitions(summary: dict) -> list[str]:
    """The definitions the post-training section needs, in the order it uses them."""
    scale = ground_truth_scale()
    table = summary["evaluation"]
    bound = table["best_of_n"]["kl_to_sft"] if "best_of_n" in table else None
    n = _best_of_from_bound(bound) if _finite(bound) else None
    best_of = (f" Best-of-N changes no weights; its entry is the analytic upper bound log N - (N-1)/N"
               + (f" = {fmt_nats(bound)} for N = {n}." if n and _finite(bound) else "."))
    return [
        define("accuracy", "the share of answers that state the right fact, as tinyworld's grader "
                           "(`tinyworld.grade`) judges it: after dropping a polite opener, the answer or one of its "
                           "sentences must equal the reference answer, up to case, spacing and final punctuation. "
                           "Style does not count. *Greedy* accuracy grades one greedy answer per prompt, *sampled* "
                           "accuracy every sampled answer."),
        define("ground-truth reward",
               f"tinyworld's stand-in for a human rater (`tinyworld.ground_truth_reward`), from "
               f"{_signed(scale['worst'])} to {_signed(scale['best'])}: +1 for a correct answer and -1 for a wrong "
               f"one, +{scale['bonus']:g} for opening with a polite marker, -{scale['per_word']:g} per word beyond the "
               f"reference answer's length (at most -{scale['max_length_penalty']:g}) and -{scale['rude']:g} for rude "
               f"words. A plain correct answer scores +1.0 and a polite one {_signed(scale['best'])}; every correct "
               f"answer scores at least {_signed(scale['lowest_correct'])} and every wrong one at most "
               f"{_signed(scale['highest_wrong'])}. The reward model's preference pairs were ranked by it."),
        define("learned reward", "the reward model's score of a prompt and answer. It was trained only to score the "
                                 "preferred answer of each pair above the other, so its zero and its scale are "
                                 "arbitrary: compare policies by it, never with the ground-truth numbers."),
        define("preference accuracy", "the share of held-out preference pairs whose preferred answer the reward "
                                      "model scores higher (0.500 is chance). Its correlation with the ground truth "
                                      "is measured over every answer of those pairs, Pearson (linear) and Spearman "
                                      "(rank)."),
        define("polite share", f"the share of sampled answers that open with a polite marker ({_polite_markers()}), "
                               f"each worth +{scale['bonus']:g} ground-truth reward."),
        define("KL to SFT", "how far a policy has moved from the SFT model, in nats per answer: the mean over its "
                            "sampled answers of Σ_t [log π(y_t) - log π_SFT(y_t)], the k1 estimate of "
                            "KL(π ‖ π_SFT). It is unbiased but noisy, so a policy close to SFT can come out slightly "
                            "negative." + best_of),
    ]


def _best_of_from_bound(bound: float) -> int | None:
    """The N whose best-of-N KL bound log N - (N-1)/N is `bound` (report.json stores the bound, not N)."""
    for n in range(2, 4097):
        if abs(math.log(n) - (n - 1) / n - bound) < 1e-9:
            return n
    return None


POLICY_NAMES = {"sft": "SFT", "ppo": "PPO", "dpo": "DPO", "best_of_n": "best-of-N"}


def _join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _difference_words(difference: float, standard_error: float) -> str:
    """'raised'/'lowered' when the paired difference is at least two standard errors from 0, else 'no clear change'."""
    if not (_finite(difference) and _finite(standard_error)) or abs(difference) < 2 * standard_error \
            or difference == 0:
        return "no clear change"
    return "raised" if difference > 0 else "lowered"


def post_training_reading(summary: dict) -> list[str]:
    """Sentences reading the held-out table, each written only when the numbers support it."""
    table = summary["evaluation"]
    sft = table.get("sft")
    if sft is None:
        return []
    sentences = []
    if sft["greedy"]["accuracy"] == 0 and sft["accuracy_sampled"] == 0:
        sentences.append("SFT answers none of the held-out prompts correctly at this size, so every policy's "
                         "ground-truth reward sits near -1 and the differences in the table are mostly noise; a "
                         "longer run (the default preset) is needed to compare the methods.")
    for name in ("ppo", "dpo"):
        row = table.get(name)
        if row is None:
            continue
        words = _difference_words(row["difference_vs_sft"], row["difference_vs_sft_se"])
        difference = f"{fmt_reward(row['difference_vs_sft'])} ± {fmt_share(row['difference_vs_sft_se'])}"
        if words == "no clear change":
            change = (f"{POLICY_NAMES[name]} did not clearly change the ground-truth reward ({difference} against "
                      "SFT, within two standard errors of 0)")
        else:
            change = f"{POLICY_NAMES[name]} {words} the ground-truth reward over SFT by {difference}"
        change += f", at a KL to SFT of {fmt_nats(row['kl_to_sft'])} nats"
        sentences.append(change + ".")
        if row["kl_to_sft"] < 0:
            sentences.append(f"{POLICY_NAMES[name]}'s negative KL estimate is sampling noise around a true KL near 0.")
    polite = [name for name in ("ppo", "dpo", "best_of_n")
              if name in table and table[name]["polite_fraction"] - sft["polite_fraction"] >= 0.1]
    if polite:
        names = _join([POLICY_NAMES.get(name, name) for name in polite])
        shares = _join([fmt_share(table[name]["polite_fraction"]) for name in polite])
        bonus = ground_truth_scale()["bonus"]
        sentences.append(f"{names[0].upper() + names[1:]} answer politely far more often than SFT (polite share "
                         f"{shares} against {fmt_share(sft['polite_fraction'])}): they picked up the +{bonus:g} "
                         "politeness bonus, the cheapest part of the ground-truth reward to earn, since a fixed opener "
                         "earns it whether the answer is right or wrong.")
    best = table.get("best_of_n")
    if best is not None:
        highest = all(best["learned_reward"] >= row["learned_reward"] for row in table.values())
        difference = f"{fmt_reward(best['difference_vs_sft'])} ± {fmt_share(best['difference_vs_sft_se'])}"
        paired = difference + " paired"
        if highest and best["ground_truth_reward"] < sft["ground_truth_reward"]:
            sentences.append(
                f"Best-of-N has the highest learned reward of all policies ({fmt_reward(best['learned_reward'])}, "
                f"SFT {fmt_reward(sft['learned_reward'])}), yet its ground-truth reward is below SFT's "
                f"({fmt_reward(best['ground_truth_reward'])} against {fmt_reward(sft['ground_truth_reward'])}; "
                f"{paired}). Picking the reward model's favourite of N answers from the SFT model raised the "
                "reward model's score far more than the true quality, which did not improve: the reward model's "
                "favourite is often not the best answer. This is reward-model over-optimisation, or reward hacking: "
                "pushing hard on an imperfect learned reward finds its mistakes instead of better answers.")
        elif _difference_words(best["difference_vs_sft"], best["difference_vs_sft_se"]) == "raised":
            sentences.append(
                f"Best-of-N, the SFT model choosing the reward model's favourite of N answers, raised the "
                f"ground-truth reward by {difference} over SFT without any training: here the reward model's "
                "ranking points the right way.")
        else:
            sentences.append(
                f"Best-of-N, the SFT model choosing the reward model's favourite of N answers, moves the learned "
                f"reward from {fmt_reward(sft['learned_reward'])} to {fmt_reward(best['learned_reward'])} but does "
                f"not clearly improve the ground-truth reward ({paired}).")
    return sentences


def _examples_markdown(table: dict, n_prompts: int = 2) -> list[str]:
    """The first held-out prompts with every policy's first sampled answer, graded."""
    names = [name for name in table if table[name].get("examples")]
    if not names:
        return []
    lines = ["Example answers to the first held-out prompts (one sampled answer per policy, graded by tinyworld):", ""]
    for index in range(min(n_prompts, len(table[names[0]]["examples"]))):
        prompt = table[names[0]]["examples"][index]["prompt"]
        try:
            reference = " (reference answer: " + quote_inline(tinyworld.reference_answer(prompt)) + ")"
        except ValueError:
            reference = ""
        lines += [f"Prompt {quote_inline(prompt)}{reference}:", "",
                  "| policy | answer | correct | ground-truth reward |", "|---|---|---|---:|"]
        for name in names:
            examples = table[name]["examples"]
            if index >= len(examples):
                continue
            answer = examples[index]["response"]
            lines.append(f"| {name} | {quote_inline(answer)} | {'yes' if tinyworld.grade(prompt, answer) else 'no'} | "
                         f"{fmt_reward(tinyworld.ground_truth_reward(prompt, answer))} |")
        lines.append("")
    return lines


def post_training_markdown(summary: dict) -> str:
    """The post-training section: metric definitions, SFT and reward-model results, the held-out table of
    every policy, what the table says (written from the numbers), example answers and the two plots."""
    sft, reward, table = summary["sft"], summary["reward"], summary["evaluation"]
    first = next(iter(table.values()))
    times = (f"SFT {fmt_seconds(sft['seconds'])} s, reward model {fmt_seconds(reward['seconds'])} s, "
             f"PPO {fmt_seconds(summary['ppo']['seconds'])} s, DPO {fmt_seconds(summary['dpo']['seconds'])} s, "
             f"evaluation {fmt_seconds(summary['evaluation_seconds'])} s")
    lines = [
        "The pre-trained model learns to answer tinyworld's questions (SFT, supervised fine-tuning on "
        "demonstrations), a reward model learns which of two answers is preferred, and three ways of using "
        "preferences start from the SFT model: PPO (reinforcement learning against the reward model, with a "
        "penalty for drifting away from SFT), DPO (training directly on the preference pairs) and best-of-N (no "
        "training: sample N answers, keep the reward model's favourite). Every policy is graded on held-out prompts:",
        "",
        *post_training_definitions(summary),
        "",
        f"* SFT, held-out greedy accuracy {fmt_share(sft['accuracy_before'])} before → "
        f"{fmt_share(sft['accuracy_after'])} after; greedy ground-truth reward "
        f"{fmt_reward(sft['ground_truth_reward_before'])} → {fmt_reward(sft['ground_truth_reward_after'])}.",
        f"* Reward model, held-out preference accuracy {fmt_share(reward['preference_accuracy'])}; correlation with "
        f"the ground-truth reward: Pearson {fmt_share(reward['pearson_r'])}, "
        f"Spearman {fmt_share(reward['spearman_r'])}.",
        "",
        f"Held-out comparison: {_plural(first['n_prompts'], 'prompt')} × "
        f"{_plural(first['samples_per_prompt'], 'sampled answer')} per policy at temperature "
        f"{summary['temperature']:g}. ± is the standard error over prompts; *vs SFT (paired)* is the per-prompt "
        "difference to SFT on the same prompts, which cancels most of the prompt-to-prompt spread.",
        "",
        "| policy | ground-truth reward ± s.e. | vs SFT (paired) ± s.e. | learned reward | polite share | "
        "sampled accuracy | greedy accuracy | greedy ground-truth reward | KL to SFT (nats) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        kl = f"≤ {fmt_nats(row['kl_to_sft'])} (bound)" if name == "best_of_n" else fmt_nats(row["kl_to_sft"])
        greedy = row["greedy"]
        lines.append(f"| {name} | {fmt_reward(row['ground_truth_reward'])} ± "
                     f"{fmt_share(row['ground_truth_reward_se'])} | "
                     f"{fmt_reward(row['difference_vs_sft'])} ± {fmt_share(row['difference_vs_sft_se'])} | "
                     f"{fmt_reward(row['learned_reward'])} | {fmt_share(row['polite_fraction'])} | "
                     f"{fmt_share(row['accuracy_sampled'])} | {fmt_share(greedy['accuracy'])} | "
                     f"{fmt_reward(greedy['mean_ground_truth_reward'])} | {kl} |")
    reading = post_training_reading(summary)
    if reading:
        lines += ["", " ".join(reading)]
    lines += [""] + _examples_markdown(table)
    history = summary.get("ppo", {}).get("history") or []
    lines += [_ppo_reading(history),
              "",
              "![learned and ground-truth reward over PPO iterations](ppo_rewards.png)",
              "",
              "![ground-truth reward against KL to the SFT policy](reward_vs_kl.png)",
              "",
              f"Time: {fmt_seconds(summary['seconds'])} s in all ({times})."]
    return "\n".join(lines)


def _ppo_reading(history: list[dict]) -> str:
    """What the PPO plot shows, with the first and last iterations' means."""
    text = ("The first plot follows PPO's training rollouts: if the learned reward climbs while the ground-truth "
            "reward stays flat, the policy is learning to please the reward model rather than to answer better.")
    rows = [h for h in history if _finite(h.get("reward_mean")) and _finite(h.get("ground_truth_reward_mean"))]
    if len(rows) >= 2:
        k = max(1, min(3, len(rows) // 3))
        mean = lambda key, part: float(np.mean([h[key] for h in part]))  # noqa: E731
        span = "from the first to the last" if k == 1 else f"means of the first and last {k}"
        text += (f" Over {_plural(len(rows), 'iteration')} ({span}) the learned reward went "
                 f"from {fmt_reward(mean('reward_mean', rows[:k]))} to {fmt_reward(mean('reward_mean', rows[-k:]))} "
                 f"and the ground-truth reward from {fmt_reward(mean('ground_truth_reward_mean', rows[:k]))} to "
                 f"{fmt_reward(mean('ground_truth_reward_mean', rows[-k:]))}.")
    return text + (" The second places every policy by its held-out ground-truth reward against its distance from "
                   "SFT, with PPO's training iterations coloured from first to last.")


# ------------------------------------------------------------------------------------------- PEFT
def _what_it_trains(row: dict, config: dict) -> str:
    """One line on what a PEFT run trains, from its method name and the stage's settings."""
    method = row["method"]
    targets = ", ".join(t.replace("_proj", "") for t in config.get("lora_targets", ("q_proj", "v_proj")))
    tokens = len(config.get("lora_trainable_tokens", ()))
    if method == "full":
        return "every weight of the model"
    if method.startswith("lora"):
        rank = method.split("_r")[-1]
        text = (f"a rank-{rank} update B·A beside each {targets} projection (the projection stays frozen; B starts "
                "at zero, so training starts from the base model)")
        if tokens:
            text += f", plus the embedding rows of the {tokens} chat special tokens, which pre-training never saw"
        return text
    if method == "adapter":
        return (f"a small bottleneck MLP (width d → d/{config.get('reduction_factor', 16)} → d) after each attention "
                "and feed-forward output")
    if method == "prompt":
        return f"{config.get('num_virtual_tokens', 8)} learned input embeddings put before every prompt (a soft prompt)"
    if method == "prefix":
        return (f"{config.get('num_virtual_tokens', 8)} learned key and value vectors put before the sequence in "
                "every attention layer")
    if method == "ia3":
        return ("one learned scaling vector each for the keys, the values and the feed-forward activations of "
                "every block")
    return row.get("setting", method)


def _methods_list(rows: list[dict], config: dict) -> list[str]:
    """One list item per method; the LoRA runs, which differ only in rank, share one."""
    items, lora = [], [row for row in rows if row["method"].startswith("lora_r")]
    for row in rows:
        if row in lora[1:]:
            continue
        if row is (lora[0] if lora else None) and len(lora) > 1:
            names = ", ".join(f"*{r['method']}*" for r in lora)
            ranks = ", ".join(r["method"].split("_r")[-1] for r in lora)
            text = _what_it_trains(row, config).replace(f"rank-{row['method'].split('_r')[-1]}", "rank-r", 1)
            items.append(f"- {names}: {text} (r = {ranks})")
        else:
            items.append(f"- *{row['method']}*: {_what_it_trains(row, config)}")
    return items


def peft_table(rows: list[dict]) -> str:
    """The PEFT comparison table, one row per run."""
    lines = ["| method | setting | trainable params | % of model | held-out accuracy | ground-truth reward | "
             "train loss | wall time (s) | optimizer memory |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row.get('setting', row['method'])} | {fmt_count(row['trainable_params'])} | "
            f"{fmt_percent(row['trainable_fraction'])} | {fmt_share(row['accuracy'])} | "
            f"{fmt_reward(row['mean_ground_truth_reward'])} | {fmt_nats(row['train_loss'])} | "
            f"{fmt_seconds(row['wall_time_s'])} | {human_bytes(row['optimizer_bytes'])} |")
    return "\n".join(lines)


def _budget(config: dict) -> str:
    """'120 steps of 16 examples' (or just the steps when the batch size is not recorded)."""
    steps = config.get("max_steps")
    batch = config.get("per_device_train_batch_size", config.get("batch_size"))
    if not steps:
        return "the same number of steps"
    return _plural(steps, "step") + (f" of {fmt_count(batch)} examples" if batch else "")


def peft_reading(rows: list[dict], config: dict, n_train_examples: int | None = None) -> list[str]:
    """Sentences explaining the PEFT numbers, each written only when the numbers support it."""
    by_name = {row["method"]: row for row in rows}
    full = by_name.get("full")
    n_test = config.get("n_test")
    steps = config.get("max_steps")
    batch = config.get("per_device_train_batch_size", config.get("batch_size"))
    sentences = []
    if n_test:
        sentences.append(f"Each of the {fmt_count(n_test)} held-out prompts is worth {fmt_share(1 / n_test)} "
                         "accuracy.")
    budget = _budget(config) if steps else ""
    if steps and batch:
        if n_train_examples:
            budget += f" ({steps * batch / n_train_examples:.1f} passes over the {fmt_count(n_train_examples)} " \
                      "training examples)"
    base = config.get("base_params")
    model = f"a {fmt_count(base)}-parameter model" if base else "this model"
    zero = [row for row in rows if row["accuracy"] == 0]
    if full is not None and full["accuracy"] == 0:
        sentences.append(f"No run answered any held-out prompt correctly, not even full fine-tuning: "
                         f"{budget or 'this training budget'} on {model} is too little to learn tinyworld's answers "
                         "word for word, so accuracy cannot rank the methods here. The train loss still can: "
                         + ", ".join(f"{row['method']} {fmt_nats(row['train_loss'])}"
                                     for row in sorted(rows, key=lambda r: r["train_loss"]))
                         + " (lowest first).")
    elif zero and full is not None:
        names = _join([row["method"] for row in zero])
        losses = [row["train_loss"] for row in zero]
        text = (f"{names} scored 0.000: none of their answers stated the fact exactly. Their train loss ended at "
                f"{fmt_nats(min(losses))}–{fmt_nats(max(losses))}, against {fmt_nats(full['train_loss'])} for full "
                "fine-tuning")
        if min(losses) > full["train_loss"]:
            text += (f": in {budget or 'this budget'} they had not fitted the training answers closely enough to "
                     "reproduce a fact word for word, which the grader requires. Training so few parameters moves "
                     f"{model} slowly; these methods need more steps than this budget gives (or a larger model).")
        else:
            text += ": they fit the training answers as well, yet their greedy answers to new prompts miss the exact "
            text += "wording."
        sentences.append(text)
    peft_rows = [row for row in rows if row["method"] != "full"]
    best = max(peft_rows, key=lambda r: r["accuracy"]) if peft_rows else None
    if best is not None and best["accuracy"] > 0:
        text = (f"The most accurate PEFT run is {best['method']}: {fmt_share(best['accuracy'])} with "
                f"{fmt_percent(best['trainable_fraction'])} of the parameters trainable")
        if full is not None:
            text += f", against full fine-tuning's {fmt_share(full['accuracy'])}"
        sentences.append(text + ".")
    lora = by_name.get("lora_r16")
    if full is not None and lora is not None:
        sentences.append(f"Optimizer memory shrinks with the trainable parameters (full fine-tuning "
                         f"{human_bytes(full['optimizer_bytes'])}, lora_r16 {human_bytes(lora['optimizer_bytes'])}).")
    if full is not None and peft_rows:
        fastest, slowest = (f(r["wall_time_s"] for r in peft_rows) for f in (min, max))
        span = f"full fine-tuning took {fmt_seconds(full['wall_time_s'])} s, the PEFT runs " \
               f"{fmt_seconds(fastest)}–{fmt_seconds(slowest)} s"
        if slowest >= 0.5 * full["wall_time_s"]:
            sentences.append("Training time does not shrink in proportion, since every method still runs the whole "
                             "network forward and backward (prompt and prefix tuning on sequences longer by their "
                             f"virtual tokens): {span}.")
        else:
            sentences.append(f"Training time shrinks too: {span}.")
    return sentences


def peft_markdown(rows: list[dict], config: dict, n_train_examples: int | None = None) -> str:
    """The PEFT section up to the LoRA-vs-full sentence: what each run trains, the definitions, the
    table and what its numbers say. `config`: the stage's settings plus "base_params"."""
    lines = [
        f"The same pre-trained model is fine-tuned {len(rows)} ways on tinyworld's instructions (loss on the answer "
        f"tokens only), each run with the same data order and {_budget(config)}, at its own learning rate; each then "
        "answers the held-out prompts greedily, graded for accuracy and ground-truth reward as in post-training. "
        "What each run trains (everything else stays frozen):",
        "",
        *_methods_list(rows, config),
        "",
        define("trainable parameters", "the numbers the optimizer updates; *% of model* divides them by the base "
                                       f"model's {fmt_count(config['base_params'])} parameters."
               if config.get("base_params") else "the numbers the optimizer updates."),
        define("optimizer memory", "the arrays AdamW keeps per trainable parameter (two float32 moments, 8 bytes "
                                   "each parameter), measured from the optimizer's state."),
        "",
        "The train loss is the answer tokens' loss averaged over the last 5 steps; the wall time covers training "
        "only.",
        "",
        peft_table(rows),
    ]
    reading = peft_reading(rows, config, n_train_examples)
    if reading:
        lines += ["", " ".join(reading)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- plots
def figure_sampling_tradeoff(results: dict):
    """Diversity (distinct-2) against mean log-likelihood per decoding setting; the temperature settings
    (greedy first) share a colour ramp joined by arrows in rising temperature."""
    points = {label: (s["distinct_2"], s["mean_loglik"]) for label, s in results.items()}
    ordered = [label for label in TEMPERATURE_ORDER if label in points]
    return figure_scatter(points, "Sampling: diversity against likelihood", "distinct-2 (diversity)",
                          "mean log-likelihood (nats/token)", ordered=ordered)


def plot_sampling_tradeoff(results: dict, path) -> Path:
    return save_figure(figure_sampling_tradeoff(results), path)


def figure_ppo_rewards(history: list[dict]):
    """Learned and ground-truth reward of PPO's rollouts per iteration."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    iterations = [h["iteration"] for h in history]
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    axis.plot(iterations, [h["reward_mean"] for h in history], "o-", markersize=3,
              label="learned reward (reward model, arbitrary scale)")
    truth = [h.get("ground_truth_reward_mean") for h in history]
    if any(_finite(value) for value in truth):
        axis.plot(iterations, [value if _finite(value) else np.nan for value in truth], "s-", markersize=3,
                  label="ground-truth reward")
    axis.set_xlabel("PPO iteration")
    axis.set_ylabel("mean reward of the rollouts")
    axis.set_title("PPO: learned and ground-truth reward per iteration")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def plot_ppo_rewards(history: list[dict], path) -> Path:
    return save_figure(figure_ppo_rewards(history), path)


POLICY_STYLES = {"sft": ("o", "C1"), "ppo": ("s", "C2"), "dpo": ("D", "C3"), "best_of_n": ("<", "C4")}


def figure_reward_vs_kl(history: list[dict], table: dict):
    """Ground-truth reward against KL to SFT: PPO's training iterations as a scatter coloured from first to
    last (no connecting line), each held-out policy as a marker with ±1 s.e.; best-of-N's x is a bound."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    figure, axis = plt.subplots(figsize=(7.2, 4.4))
    rows = [h for h in history if _finite(h.get("kl")) and _finite(h.get("ground_truth_reward_mean"))]
    if rows:
        points = axis.scatter([h["kl"] for h in rows], [h["ground_truth_reward_mean"] for h in rows],
                              c=[h["iteration"] for h in rows], cmap="viridis", s=18, alpha=0.8, zorder=2,
                              label="PPO training rollouts, one per iteration")
        colorbar = figure.colorbar(points, ax=axis, pad=0.02)
        colorbar.set_label("PPO iteration")
        colorbar.locator = MaxNLocator(integer=True)
        colorbar.update_ticks()
    for i, (name, row) in enumerate(table.items()):
        label = f"{name} (held-out)" + (", x = KL upper bound" if name == "best_of_n" else "")
        marker, colour = POLICY_STYLES.get(name, ("o", f"C{5 + i % 5}"))
        axis.errorbar([row["kl_to_sft"]], [row["ground_truth_reward"]], yerr=[row.get("ground_truth_reward_se", 0.0)],
                      fmt=marker, markersize=9, color=colour, ecolor=colour, capsize=3, zorder=3, label=label)
    axis.set_xlabel("KL(policy ‖ SFT), nats per answer")
    axis.set_ylabel("mean ground-truth reward")
    axis.set_title("Ground-truth reward against distance from the SFT policy")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def plot_reward_vs_kl(history: list[dict], table: dict, path) -> Path:
    return save_figure(figure_reward_vs_kl(history, table), path)


PEFT_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*"]


def figure_peft_tradeoff(rows: list[dict]):
    """Four panels: accuracy and train loss against trainable parameters (log x), every method a marker
    named in one shared legend; wall time and optimizer memory (log x) as bars named on the axis."""
    plt = pyplot()
    names = [row["method"] for row in rows]
    params = np.array([row["trainable_params"] for row in rows], dtype=float)
    figure, axes = plt.subplots(2, 2, figsize=(12, 7.6))
    (accuracy_axis, loss_axis), (time_axis, memory_axis) = axes
    for i, row in enumerate(rows):
        style = {"marker": PEFT_MARKERS[i % len(PEFT_MARKERS)], "color": f"C{i % 10}", "s": 60, "alpha": 0.85,
                 "edgecolors": "black", "linewidths": 0.5, "zorder": 3}
        accuracy_axis.scatter([params[i]], [row["accuracy"]], label=row["method"], **style)
        loss_axis.scatter([params[i]], [row["train_loss"]], **style)
    top = max([row["accuracy"] for row in rows] + [0.05])
    accuracy_axis.set_ylim(-0.05 * top, 1.15 * top)   # small accuracies still fill the panel
    accuracy_axis.set_ylabel("held-out accuracy")
    accuracy_axis.set_title("Accuracy against trainable parameters")
    loss_axis.set_ylabel("train loss (nats/token, last 5 steps)")
    loss_axis.set_title("Train loss against trainable parameters")
    for axis in (accuracy_axis, loss_axis):
        axis.set_xscale("log")
        axis.set_xlabel("trainable parameters (log scale)")
        axis.grid(alpha=0.3)
    positions = np.arange(len(rows))
    colours = [f"C{i % 10}" for i in range(len(rows))]
    time_axis.barh(positions, [row["wall_time_s"] for row in rows], color=colours)
    time_axis.set_xlabel("training wall time (s)")
    time_axis.set_title("Training time")
    memory_axis.barh(positions, [row["optimizer_bytes"] / 1024 for row in rows], color=colours)
    memory_axis.set_xscale("log")
    memory_axis.set_xlabel("AdamW state (KiB, log scale)")
    memory_axis.set_title("Optimizer memory")
    for axis in (time_axis, memory_axis):
        axis.set_yticks(positions, names)
        axis.invert_yaxis()
        axis.grid(alpha=0.3, axis="x")
    figure.suptitle("PEFT methods against full fine-tuning")
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.legend(*accuracy_axis.get_legend_handles_labels(), loc="upper center", ncol=len(rows),
                  bbox_to_anchor=(0.5, 0.955), fontsize=9, frameon=False)
    return figure


def plot_peft_tradeoff(rows: list[dict], path: Path) -> Path:
    """The four-panel PEFT trade-off plot as a PNG (see figure_peft_tradeoff)."""
    return save_figure(figure_peft_tradeoff(rows), path)


__all__ = ["METRIC_TERMS", "curate_markdown", "define", "figure_peft_tradeoff", "figure_ppo_rewards",
           "figure_reward_vs_kl", "figure_sampling_tradeoff", "fmt_count", "fmt_nats", "fmt_percent", "fmt_rate",
           "fmt_reward", "fmt_seconds", "fmt_share", "ground_truth_scale", "human_bytes", "markdown_table",
           "peft_markdown", "peft_reading", "peft_table", "plot_peft_tradeoff", "plot_ppo_rewards",
           "plot_reward_vs_kl", "plot_sampling_tradeoff", "post_training_markdown", "post_training_reading",
           "pretrain_markdown", "quote_block", "quote_inline", "sampling_markdown", "tokenizer_markdown",
           "write_report"]
