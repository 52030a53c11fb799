"""Exact and near-duplicate removal: a normalised-text hash, and MinHash + LSH banding.

Exact: two documents are duplicates if their normalised text (NFKC, casefold, whitespace runs
collapsed, stripped) has the same BLAKE2b-128 digest; the first occurrence is kept.

Near (Broder 1997; Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3):
* A document becomes a set of shingles: word n-grams (default n=5, words = \\w+ runs of the
  normalised text) or character k-grams. Each shingle is hashed to x in [0, p) with
  x = crc32(shingle) mod p, p = 2^31 - 1 (a Mersenne prime).
* num_perm random hash functions h_i(x) = (a_i x + b_i) mod p, a_i in [1, p), b_i in [0, p),
  drawn from a seeded NumPy Generator, stand in for random permutations. Products stay below
  2^63 so uint64 arithmetic is exact. The signature is sig_i = min over shingles of h_i(x).
* P(sig_i(A) == sig_i(B)) = J(A, B) (Jaccard similarity), so the fraction of equal signature
  entries estimates J with standard deviation sqrt(J (1 - J) / num_perm).
* LSH banding: split the signature into b bands of r rows; two documents become candidates if
  any band is identical. P(candidate | J = s) = 1 - (1 - s^r)^b, an S-curve whose steepest
  point is near (1/b)^(1/r). `lsh_params` picks (b, r) with b r <= num_perm minimising the
  weighted area of false positives (integral of P over [0, t]) plus false negatives (integral
  of 1 - P over [t, 1]) for threshold t.
* Candidates are verified: a document is dropped as a near duplicate of the earlier kept
  candidate with the highest estimated Jaccard, if that estimate is >= threshold.

Simplifications: crc32 is a 32-bit shingle hash (rare collisions only nudge estimates); the
scan is greedy in input order (a document is compared with kept documents only).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from minifm.data.rules import KEEP, Rule, RuleResult

MERSENNE_PRIME = (1 << 31) - 1
WORD_PATTERN = re.compile(r"\w+")


def normalise_for_dedup(text: str) -> str:
    """NFKC, casefold, collapse whitespace runs to one space, strip."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(normalise_for_dedup(text).encode("utf-8"), digest_size=16).digest()


@dataclass
class ExactDedup(Rule):
    """Drop documents whose normalised text equals an earlier document's."""
    name: ClassVar[str] = "exact_dedup"

    def run(self, texts: Sequence[str]) -> list[RuleResult]:
        first_seen: dict[bytes, int] = {}
        out = []
        for position, text in enumerate(texts):
            digest = text_hash(text)
            if digest in first_seen:
                out.append(RuleResult(False, "exact duplicate (same normalised text)", first_seen[digest]))
            else:
                first_seen[digest] = position
                out.append(KEEP)
        return out

    def check(self, text):
        raise TypeError("ExactDedup compares documents with each other: call run(texts)")


# ------------------------------------------------------------------ shingles and MinHash
def shingles(text: str, kind: str = "word", size: int = 5) -> set[str]:
    """Word n-grams (kind="word") or character k-grams (kind="char") of the normalised text.

    A text shorter than one shingle gives a single shingle of all it has (none if empty).
    """
    if size < 1:
        raise ValueError(f"shingles: size must be >= 1, got {size}")
    normalised = normalise_for_dedup(text)
    if kind == "word":
        words = WORD_PATTERN.findall(normalised)
        if len(words) <= size:
            return {" ".join(words)} if words else set()
        return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}
    if kind == "char":
        if len(normalised) <= size:
            return {normalised} if normalised else set()
        return {normalised[i:i + size] for i in range(len(normalised) - size + 1)}
    raise ValueError(f"shingles: kind must be 'word' or 'char', got {kind!r}")


def jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def shingle_values(shingle_set: set[str]) -> np.ndarray:
    """Each shingle as crc32 mod p, uint64, shape (n_shingles,)."""
    return np.fromiter((zlib.crc32(s.encode("utf-8")) % MERSENNE_PRIME for s in shingle_set),
                       dtype=np.uint64, count=len(shingle_set))


class MinHasher:
    """num_perm seeded universal hash functions; `signatures(texts)` -> (n_docs, num_perm) uint64."""

    def __init__(self, num_perm: int = 128, seed: int = 0, shingle: str = "word", shingle_size: int = 5,
                 chunk_columns: int = 1 << 15):
        if not isinstance(num_perm, int) or num_perm < 1:
            raise ValueError(f"MinHasher: num_perm must be an int >= 1, got {num_perm!r}")
        if shingle not in ("word", "char"):
            raise ValueError(f"MinHasher: shingle must be 'word' or 'char', got {shingle!r}")
        self.num_perm, self.seed, self.shingle, self.shingle_size = num_perm, seed, shingle, shingle_size
        self.chunk_columns = chunk_columns
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, MERSENNE_PRIME, size=num_perm, dtype=np.uint64)   # (P,)
        self.b = rng.integers(0, MERSENNE_PRIME, size=num_perm, dtype=np.uint64)   # (P,)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        values = [shingle_values(shingles(t, self.shingle, self.shingle_size)) for t in texts]
        out = np.full((len(texts), self.num_perm), MERSENNE_PRIME, dtype=np.uint64)   # empty doc -> all p
        docs = [i for i, v in enumerate(values) if v.size]
        start = 0
        while start < len(docs):                     # groups of whole documents, ~chunk_columns shingles each
            stop, columns = start, 0
            while stop < len(docs) and (columns == 0 or columns + values[docs[stop]].size <= self.chunk_columns):
                columns += values[docs[stop]].size
                stop += 1
            group = docs[start:stop]
            x = np.concatenate([values[i] for i in group])                                # (S,)
            hashed = (self.a[:, None] * x[None, :] + self.b[:, None]) % MERSENNE_PRIME     # (P, S)
            offsets = np.cumsum([0] + [values[i].size for i in group[:-1]])
            out[group] = np.minimum.reduceat(hashed, offsets, axis=1).T                    # (G, P)
            start = stop
        return out


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal MinHash signature entries."""
    return float(np.mean(sig_a == sig_b))


def candidate_probability(similarity, bands: int, rows: int):
    """LSH S-curve: P(two documents share a band) = 1 - (1 - s^rows)^bands."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s ** rows) ** bands


def lsh_params(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
               false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows), bands * rows <= num_perm, minimising the weighted false-positive area
    (integral of the S-curve over [0, threshold]) plus false-negative area (of 1 - S over [threshold, 1])."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"lsh_params: threshold must be in (0, 1), got {threshold}")
    below = np.linspace(0.0, threshold, 201)
    above = np.linspace(threshold, 1.0, 201)
    best, best_error = (1, num_perm), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = np.trapezoid(candidate_probability(below, bands, rows), below)
            false_negative = np.trapezoid(1.0 - candidate_probability(above, bands, rows), above)
            error = false_positive_weight * false_positive + false_negative_weight * false_negative
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


@dataclass
class MinHashDedup(Rule):
    """Drop near duplicates: MinHash signatures, LSH banding for candidates, estimate >= threshold.

    Candidates are verified with the signature estimate, so recall matters more than precision
    when choosing bands/rows: false negatives are weighted 0.8, false positives 0.2 by default.
    """
    name: ClassVar[str] = "near_dedup"
    threshold: float = 0.8
    num_perm: int = 128
    shingle: str = "word"
    shingle_size: int = 5
    seed: int = 0
    bands: int | None = None
    rows: int | None = None

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"MinHashDedup: threshold must be in (0, 1), got {self.threshold}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("MinHashDedup: give both bands and rows, or neither")
        if self.bands is None:
            self.bands, self.rows = lsh_params(self.threshold, self.num_perm, 0.2, 0.8)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"MinHashDedup: bands*rows = {self.bands * self.rows} > num_perm {self.num_perm}")
        self.hasher = MinHasher(self.num_perm, self.seed, self.shingle, self.shingle_size)

    def check(self, text):
        raise TypeError("MinHashDedup compares documents with each other: call run(texts)")

    def find_duplicates(self, texts: Sequence[str]) -> list[tuple[int, int, float]]:
        """(dropped position, kept position it duplicates, estimated Jaccard), greedy in input order."""
        signatures = self.hasher.signatures(texts)                      # (N, num_perm)
        buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        found = []
        for position in range(len(texts)):
            keys = [signatures[position, band * self.rows:(band + 1) * self.rows].tobytes()
                    for band in range(self.bands)]
            candidates = {kept for band, key in enumerate(keys) for kept in buckets[band].get(key, ())}
            best, best_estimate = -1, -1.0
            for kept in sorted(candidates):
                estimate = estimated_jaccard(signatures[position], signatures[kept])
                if estimate > best_estimate:
                    best, best_estimate = kept, estimate
            if best >= 0 and best_estimate >= self.threshold:
                found.append((position, best, best_estimate))
                continue
            for band, key in enumerate(keys):
                buckets[band].setdefault(key, []).append(position)
        return found

    def run(self, texts: Sequence[str]) -> list[RuleResult]:
        out = [KEEP] * len(texts)
        for position, original, estimate in self.find_duplicates(texts):
            out[position] = RuleResult(False, f"near duplicate (estimated Jaccard {estimate:.2f})", original)
        return out
