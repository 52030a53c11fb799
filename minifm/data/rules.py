"""The interface every curation step implements: a `Rule` that keeps or drops documents.

`rule.check(text)` judges one document and returns a `RuleResult(keep, reason)`; `rule.run(texts)`
judges a list (by default one `check` per text; corpus-level rules such as deduplication, which
compare documents with each other, override `run` and name the original in `duplicate_of`).
The heuristic filters (quality.py) and the deduplication rules (dedup.py) both build on it, and
quality.QualityPipeline runs any list of them in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence


@dataclass(frozen=True)
class RuleResult:
    keep: bool
    reason: str = ""                 # why the document was dropped ("" when kept)
    duplicate_of: int | None = None  # for dedup rules: position (in the rule's input) of the original


KEEP = RuleResult(True)


def drop(reason: str) -> RuleResult:
    return RuleResult(False, reason)


class Rule:
    """Base class: subclasses set `name` and implement `check(text)` (or `run(texts)`)."""

    name: ClassVar[str] = "rule"

    def check(self, text: str) -> RuleResult:
        raise NotImplementedError

    def run(self, texts: Sequence[str]) -> list[RuleResult]:
        return [self.check(text) for text in texts]
