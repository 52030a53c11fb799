"""Heuristic quality filters in the style of C4 (Raffel et al., 2020) and Gopher/MassiveText (Rae et al., 2021).

Every rule is a small dataclass with a `name` and its thresholds, built on the `Rule` interface of
minifm/data/rules.py: `rule.check(text)` returns a `RuleResult(keep, reason)`, and `rule.run(texts)`
applies it to a list (the deduplication rules of dedup.py override `run`). `QualityPipeline(rules).run(docs)` applies the rules in order,
each to the documents the earlier rules kept, and returns a `CurationResult` with the kept
documents, every dropped document with the rule and reason, a per-rule table (`table()`) and the
rule that dropped the most (`top_rule()`), which is what a user needs to see when a preset does not
fit their text (pre-training refuses a curation that drops more than 95%: minifm/train/pretrain.py).

Simplifications against the originals:
* C4 removes offending *lines* (no terminal punctuation, fewer than 3 words, "javascript") and
  keeps the rest of the page; here every rule keeps or drops a whole document, and the line
  rules drop a document when too large a fraction of its lines offend.
* Words are whitespace-separated tokens; "symbols" are "#", "|" and ellipses ("..." and "…").
* The stop-word rule is language-agnostic by using the union of small English, Spanish and
  German function-word lists instead of Gopher's eight English words.
* Presets: "web" (prose: all rules, then exact and near dedup) and "code" (source files: document
  length, the Codex/StarCoder-style line-length and alphanumeric-fraction rules, and dedup),
  since code lacks terminal punctuation and stop words.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from minifm.data.dedup import ExactDedup, MinHashDedup
from minifm.data.rules import KEEP, Rule, RuleResult, drop

TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’", ")", ":")
BULLETS = ("•", "-", "*", "·", "‣", "–", "●", "▪", "◦", "→", ">")
ELLIPSES = ("...", "…")
BOILERPLATE_PHRASES = (
    "uses cookies", "use cookies", "use of cookies", "cookie policy", "accept all cookies", "enable javascript",
    "javascript is disabled", "terms of use", "terms of service", "privacy policy", "all rights reserved",
    "lorem ipsum", "sign up for our newsletter", "click here to",
)
STOP_WORDS = frozenset((
    # English (Gopher's eight and a few more)
    "the", "be", "to", "of", "and", "that", "have", "with", "is", "in", "a", "has", "are",
    # Spanish
    "de", "la", "el", "en", "y", "que", "los", "las", "es", "un", "una", "tiene", "por",
    # German
    "der", "die", "das", "und", "von", "ist", "zu", "den", "ein", "eine", "hat", "mit",
))


def non_empty_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def fraction_rule(items: list[str], unit: str, has_property, describe: str, at_most: float | None = None,
                  at_least: float | None = None) -> RuleResult:
    """The shared judgement of the line and word rules: keep when the fraction of `items` (a document's
    lines or words) that have the property is at most `at_most` / at least `at_least`; drop a
    document without any. `describe` completes the reason "<fraction> of <unit>s <describe> > <limit>"."""
    if not items:
        return drop(f"no {unit}s")
    fraction = sum(bool(has_property(item)) for item in items) / len(items)
    if at_most is not None and fraction > at_most:
        return drop(f"{fraction:.0%} of {unit}s {describe} > {at_most:.0%}")
    if at_least is not None and fraction < at_least:
        return drop(f"{fraction:.0%} of {unit}s {describe} < {at_least:.0%}")
    return KEEP


# ------------------------------------------------------------------ document-level rules
# Every rule below has the same form on purpose (a dataclass: name, thresholds as fields, check):
# one rule reads alone, and its thresholds are what QualityPipeline's table and a config can set.
@dataclass
class DocumentWords(Rule):
    """Gopher: keep documents with min_words <= words <= max_words."""
    name: ClassVar[str] = "document_words"
    min_words: int = 50
    max_words: int = 100_000

    def check(self, text):
        n = len(text.split())
        if n < self.min_words:
            return drop(f"{n} words < min_words {self.min_words}")
        if n > self.max_words:
            return drop(f"{n} words > max_words {self.max_words}")
        return KEEP


@dataclass
class MeanWordLength(Rule):
    """Gopher: the mean word length (characters) must lie in [min_mean, max_mean]."""
    name: ClassVar[str] = "mean_word_length"
    min_mean: float = 3.0
    max_mean: float = 10.0

    def check(self, text):
        words = text.split()
        if not words:
            return drop("no words")
        mean = sum(len(w) for w in words) / len(words)
        if not self.min_mean <= mean <= self.max_mean:
            return drop(f"mean word length {mean:.2f} outside [{self.min_mean}, {self.max_mean}]")
        return KEEP


@dataclass
class SymbolToWordRatio(Rule):
    """Gopher: (number of '#', '|' and ellipses) / words <= max_ratio."""
    name: ClassVar[str] = "symbol_to_word_ratio"
    max_ratio: float = 0.1
    symbols: tuple[str, ...] = ("#", "|", "...", "…")

    def check(self, text):
        words = text.split()
        if not words:
            return drop("no words")
        n_symbols = sum(text.count(s) for s in self.symbols)
        ratio = n_symbols / len(words)
        if ratio > self.max_ratio:
            return drop(f"symbol/word ratio {ratio:.2f} > {self.max_ratio}")
        return KEEP


@dataclass
class BulletLines(Rule):
    """Gopher: at most max_fraction of lines may start with a bullet."""
    name: ClassVar[str] = "bullet_lines"
    max_fraction: float = 0.9

    def check(self, text):
        return fraction_rule(non_empty_lines(text), "line", lambda line: line.startswith(BULLETS),
                             "start with a bullet", at_most=self.max_fraction)


@dataclass
class EllipsisLines(Rule):
    """Gopher: at most max_fraction of lines may end with an ellipsis."""
    name: ClassVar[str] = "ellipsis_lines"
    max_fraction: float = 0.3

    def check(self, text):
        return fraction_rule(non_empty_lines(text), "line", lambda line: line.endswith(ELLIPSES),
                             "end with an ellipsis", at_most=self.max_fraction)


@dataclass
class AlphabeticWords(Rule):
    """Gopher: at least min_fraction of words must contain an alphabetic character."""
    name: ClassVar[str] = "alphabetic_words"
    min_fraction: float = 0.8

    def check(self, text):
        return fraction_rule(text.split(), "word", lambda word: any(c.isalpha() for c in word),
                             "contain a letter", at_least=self.min_fraction)


@dataclass
class StopWords(Rule):
    """Gopher-style: at least min_count occurrences of function words (multilingual list)."""
    name: ClassVar[str] = "stop_words"
    min_count: int = 2
    stop_words: frozenset = STOP_WORDS

    def check(self, text):
        count = sum(w.strip(".,;:!?\"'()").casefold() in self.stop_words for w in text.split())
        if count < self.min_count:
            return drop(f"{count} stop words < min_count {self.min_count}")
        return KEEP


@dataclass
class TerminalPunctuation(Rule):
    """C4-style: at least min_fraction of lines end in terminal punctuation (. ! ? quotes)."""
    name: ClassVar[str] = "terminal_punctuation"
    min_fraction: float = 0.7

    def check(self, text):
        return fraction_rule(non_empty_lines(text), "line",
                             lambda line: line.endswith(TERMINAL_PUNCTUATION) and not line.endswith(ELLIPSES),
                             "end in terminal punctuation", at_least=self.min_fraction)


@dataclass
class MinWordsPerLine(Rule):
    """C4-style: at most max_short_fraction of lines may have fewer than min_words words."""
    name: ClassVar[str] = "min_words_per_line"
    min_words: int = 3
    max_short_fraction: float = 0.3

    def check(self, text):
        return fraction_rule(non_empty_lines(text), "line", lambda line: len(line.split()) < self.min_words,
                             f"have < {self.min_words} words", at_most=self.max_short_fraction)


@dataclass
class BoilerplatePhrases(Rule):
    """C4-style: drop documents containing cookie/JavaScript/legal boilerplate phrases."""
    name: ClassVar[str] = "boilerplate_phrases"
    phrases: tuple[str, ...] = BOILERPLATE_PHRASES

    def check(self, text):
        folded = " ".join(text.casefold().split())
        for phrase in self.phrases:
            if phrase in folded:
                return drop(f"contains boilerplate phrase {phrase!r}")
        return KEEP


@dataclass
class CurlyBraces(Rule):
    """C4: drop documents containing '{' or '}' (code and markup in prose corpora)."""
    name: ClassVar[str] = "curly_braces"

    def check(self, text):
        if "{" in text or "}" in text:
            return drop("contains a curly brace")
        return KEEP


@dataclass
class RepeatedLines(Rule):
    """Gopher: duplicate lines (and paragraphs) by count and by characters.

    A line counts as duplicate if an identical line occurred earlier in the document.
    Drop if duplicate lines / lines > max_fraction or their characters / all characters >
    max_char_fraction; the same for paragraphs (blocks separated by a blank line).
    """
    name: ClassVar[str] = "repeated_lines"
    max_fraction: float = 0.3
    max_char_fraction: float = 0.2

    def check(self, text):
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        for unit, pieces in (("line", non_empty_lines(text)), ("paragraph", paragraphs)):
            if len(pieces) < 2:
                continue
            seen: set[str] = set()
            dup_count = dup_chars = 0
            for piece in pieces:
                if piece in seen:
                    dup_count += 1
                    dup_chars += len(piece)
                seen.add(piece)
            total_chars = sum(len(p) for p in pieces)
            if dup_count / len(pieces) > self.max_fraction:
                return drop(f"{dup_count}/{len(pieces)} duplicate {unit}s > {self.max_fraction:.0%}")
            if dup_chars / total_chars > self.max_char_fraction:
                return drop(f"duplicate {unit}s hold {dup_chars / total_chars:.0%} of characters > {self.max_char_fraction:.0%}")
        return KEEP


def word_ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


@dataclass
class TopNgramFraction(Rule):
    """Gopher: the characters covered by the most frequent n-gram (n = 2, 3, 4), counted
    once per occurrence, over all word characters, must not exceed 0.20, 0.18, 0.16."""
    name: ClassVar[str] = "top_ngram_fraction"
    max_fractions: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})

    def check(self, text):
        words = [w.casefold() for w in text.split()]
        total_chars = sum(len(w) for w in words)
        if total_chars == 0:
            return KEEP
        for n, limit in sorted(self.max_fractions.items()):
            counts = Counter(word_ngrams(words, n))
            if not counts:
                continue
            top, count = counts.most_common(1)[0]
            if count < 2:
                continue
            fraction = count * sum(len(w) for w in top) / total_chars
            if fraction > limit:
                return drop(f"top {n}-gram {' '.join(top)!r} covers {fraction:.0%} of characters > {limit:.0%}")
        return KEEP


@dataclass
class DuplicateNgramFraction(Rule):
    """Gopher: characters of words inside n-grams that occur more than once (each word
    counted once), over all word characters, for n = 5..10 must not exceed 0.15 .. 0.10."""
    name: ClassVar[str] = "duplicate_ngram_fraction"
    max_fractions: dict = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})

    def check(self, text):
        words = [w.casefold() for w in text.split()]
        total_chars = sum(len(w) for w in words)
        if total_chars == 0:
            return KEEP
        for n, limit in sorted(self.max_fractions.items()):
            grams = word_ngrams(words, n)
            counts = Counter(grams)
            covered = [False] * len(words)
            for start, gram in enumerate(grams):
                if counts[gram] > 1:
                    for i in range(start, start + n):
                        covered[i] = True
            fraction = sum(len(w) for w, c in zip(words, covered) if c) / total_chars
            if fraction > limit:
                return drop(f"duplicate {n}-grams cover {fraction:.0%} of characters > {limit:.0%}")
        return KEEP


# ------------------------------------------------------------------ code rules (Codex / StarCoder style)
@dataclass
class LineLength(Rule):
    """Code: drop files with a line longer than max_line_chars or mean line length > max_mean_chars."""
    name: ClassVar[str] = "line_length"
    max_line_chars: int = 1000
    max_mean_chars: float = 100.0

    def check(self, text):
        lines = text.splitlines() or [""]
        longest = max(len(line) for line in lines)
        mean = sum(len(line) for line in lines) / len(lines)
        if longest > self.max_line_chars:
            return drop(f"a line of {longest} characters > max_line_chars {self.max_line_chars}")
        if mean > self.max_mean_chars:
            return drop(f"mean line length {mean:.0f} > max_mean_chars {self.max_mean_chars}")
        return KEEP


@dataclass
class AlphanumericFraction(Rule):
    """Code: at least min_fraction of characters must be alphanumeric (drops data blobs)."""
    name: ClassVar[str] = "alphanumeric_fraction"
    min_fraction: float = 0.25

    def check(self, text):
        if not text:
            return drop("empty document")
        fraction = sum(c.isalnum() for c in text) / len(text)
        if fraction < self.min_fraction:
            return drop(f"{fraction:.0%} alphanumeric characters < {self.min_fraction:.0%}")
        return KEEP


# ------------------------------------------------------------------ presets and the pipeline
PRESET_NAMES = ("web", "code")


def preset_for(corpus: str, rules: str | None = None) -> str:
    """The rule preset for a corpus: `rules` when given, else "code" for python-stdlib and "web" for prose."""
    return rules or ("code" if corpus == "python-stdlib" else "web")


def preset_rules(preset: str = "web", dedup: bool = True) -> list[Rule]:
    """The default rule list for "web" (prose) or "code" (source files), dedup last."""
    if preset == "web":
        rules: list[Rule] = [
            DocumentWords(), MeanWordLength(), SymbolToWordRatio(), BulletLines(), EllipsisLines(),
            AlphabeticWords(), StopWords(), TerminalPunctuation(), MinWordsPerLine(), BoilerplatePhrases(),
            CurlyBraces(), RepeatedLines(), TopNgramFraction(), DuplicateNgramFraction(),
        ]
        dedup_rules: list[Rule] = [ExactDedup(), MinHashDedup()]
    elif preset == "code":
        rules = [DocumentWords(min_words=5, max_words=200_000), LineLength(), AlphanumericFraction()]
        dedup_rules = [ExactDedup(), MinHashDedup(threshold=0.85)]
    else:
        raise ValueError(f"preset must be 'web' or 'code', got {preset!r}")
    return rules + (dedup_rules if dedup else [])


@dataclass(frozen=True)
class DroppedDocument:
    index: int                   # position in the pipeline's input
    text: str
    rule: str
    reason: str
    duplicate_of: int | None = None   # input position of the document it duplicates (dedup rules)


@dataclass(frozen=True)
class RuleStats:
    rule: str
    seen: int
    dropped: int
    example_reason: str


@dataclass
class CurationResult:
    n_input: int
    kept: list[str]
    kept_indices: list[int]
    dropped: list[DroppedDocument]
    rule_stats: list[RuleStats]

    def dropped_by_rule(self) -> dict[str, list[DroppedDocument]]:
        out: dict[str, list[DroppedDocument]] = {s.rule: [] for s in self.rule_stats}
        for d in self.dropped:
            out.setdefault(d.rule, []).append(d)
        return out

    def dropped_fraction(self) -> float:
        return len(self.dropped) / self.n_input if self.n_input else 0.0

    def top_rule(self) -> RuleStats | None:
        """The rule that dropped the most documents (the first such in pipeline order); None if none dropped any."""
        busiest = max(self.rule_stats, key=lambda s: s.dropped, default=None)
        return busiest if busiest is not None and busiest.dropped else None

    def table(self) -> str:
        """A printable per-rule table: rule, documents seen, dropped, fraction of input, example reason."""
        width = max([len("rule"), len("total")] + [len(s.rule) for s in self.rule_stats])
        lines = [f"{'rule':<{width}}  {'seen':>7}  {'dropped':>7}  {'fraction':>8}  example reason"]
        for s in self.rule_stats:
            fraction = s.dropped / self.n_input if self.n_input else 0.0
            lines.append(f"{s.rule:<{width}}  {s.seen:>7}  {s.dropped:>7}  {fraction:>8.2%}  {s.example_reason}")
        total = len(self.dropped)
        fraction = total / self.n_input if self.n_input else 0.0
        lines.append(f"{'total':<{width}}  {self.n_input:>7}  {total:>7}  {fraction:>8.2%}  kept {len(self.kept)}")
        return "\n".join(lines)


class QualityPipeline:
    """Apply rules in order; each rule sees only the documents every earlier rule kept."""

    def __init__(self, rules: Sequence[Rule] | None = None, preset: str = "web"):
        self.rules = list(preset_rules(preset) if rules is None else rules)
        names = [r.name for r in self.rules]
        for i, rule in enumerate(self.rules):
            if not isinstance(rule, Rule):
                raise TypeError(f"QualityPipeline: rules[{i}] must be a Rule, got {type(rule).__name__}")
        if len(set(names)) != len(names):
            raise ValueError(f"QualityPipeline: rule names must be unique, got {names}")

    def run(self, docs: Sequence[str]) -> CurationResult:
        for i, doc in enumerate(docs):
            if not isinstance(doc, str):
                raise TypeError(f"QualityPipeline.run: docs[{i}] must be a str, got {type(doc).__name__}")
        alive = list(range(len(docs)))
        dropped: list[DroppedDocument] = []
        stats: list[RuleStats] = []
        for rule in self.rules:
            results = rule.run([docs[i] for i in alive])
            if len(results) != len(alive):
                raise RuntimeError(f"rule {rule.name!r} returned {len(results)} results for {len(alive)} documents")
            survivors, example, n_dropped = [], "", 0
            for index, result in zip(alive, results):
                if result.keep:
                    survivors.append(index)
                    continue
                original = alive[result.duplicate_of] if result.duplicate_of is not None else None
                reason = result.reason if original is None else f"{result.reason}, duplicate of document {original}"
                dropped.append(DroppedDocument(index, docs[index], rule.name, reason, original))
                example = example or reason
                n_dropped += 1
            stats.append(RuleStats(rule.name, len(alive), n_dropped, example))
            alive = survivors
        return CurationResult(len(docs), [docs[i] for i in alive], alive, dropped, stats)
