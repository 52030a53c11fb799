"""Byte-pair-encoding hot loops: the Python references and the dispatch to csrc/bpe.pyx.

Two loops dominate a byte-level BPE tokenizer, and both live here:

* `train_merges`: given the unique pre-tokens of a corpus (each a list of byte ids) with their
  counts, learn `num_merges` merges. Merge i joins the pair (left, right) into the new id
  `first_id + i`. The pair chosen at each step is the one with the highest count, summed over
  words and weighted by word count; ties go to the smallest (left, right) in integer order. Pairs
  are counted with overlaps ("aaa" holds the pair (a, a) twice), and a merge replaces the
  occurrences inside a word from left to right ("aaa" -> "Xa").

  The count table is updated incrementally: only the words that contain the merged pair are
  visited, and for each replaced occurrence the neighbouring pairs lose one count
  ((prev, left) and (right, next)) and the new pairs gain one ((prev, new) and (new, next)). The
  best pair comes from a max-heap with lazy deletion: a popped entry whose stored count is stale
  is pushed back with the current count; every pair whose count grew is pushed again after each
  merge, so the heap always holds an entry >= the true count of every live pair.

* `encode_pieces`: turn pre-tokens into ids by applying the merges in rank order inside each
  piece (repeatedly join the adjacent pair with the lowest rank, the leftmost one on a tie), with
  a per-piece cache, since real text repeats the same pieces over and over.

The compiled twin `minifm.kernels._bpe` (csrc/bpe.pyx) runs the same algorithms on C++ hash maps
and heaps; tests check both produce identical merges and identical ids.
"""
from __future__ import annotations

import heapq
from collections import Counter

import numpy as np

from minifm.kernels._backend import compiled

Pair = tuple[int, int]


# ------------------------------------------------------------------ validation shared by both paths
def _check_words(symbols: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> tuple:
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    if symbols.ndim != 1 or offsets.ndim != 1 or counts.ndim != 1:
        raise ValueError(
            f"symbols, offsets and counts must be 1-D, got shapes {symbols.shape}, "
            f"{offsets.shape}, {counts.shape}"
        )
    if offsets.shape[0] != counts.shape[0] + 1:
        raise ValueError(
            f"offsets must have len(counts) + 1 = {counts.shape[0] + 1} entries, got {offsets.shape[0]}"
        )
    if offsets.shape[0] and (offsets[0] != 0 or offsets[-1] != symbols.shape[0]):
        raise ValueError(
            f"offsets must start at 0 and end at len(symbols) = {symbols.shape[0]}, "
            f"got {offsets[0]} .. {offsets[-1]}"
        )
    if np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing")
    if np.any(counts < 0):
        raise ValueError(f"counts must be >= 0, got minimum {counts.min()}")
    if symbols.size and symbols.min() < 0:
        raise ValueError(f"symbols must be >= 0, got minimum {symbols.min()}")
    return symbols, offsets, counts


def _as_merge_array(merges) -> np.ndarray:
    """merges as a C-contiguous int32 (M, 2) array (their meaning is checked by BPETokenizer)."""
    array = np.asarray(merges)
    if array.size and (array.ndim != 2 or array.shape[1] != 2):
        raise ValueError(f"merges must have shape (M, 2), got {array.shape}")
    return np.ascontiguousarray(array, dtype=np.int32).reshape(-1, 2)


# ------------------------------------------------------------------ training: the reference
def _pairs_of(word: list[int]) -> Counter:
    """Adjacent pairs of `word`, counted with overlaps."""
    return Counter(zip(word, word[1:]))


def _merge_word(word: list[int], pair: Pair, new_id: int) -> list[int]:
    """`word` with every occurrence of `pair` replaced by `new_id`, scanning left to right."""
    merged = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


def train_merges_reference(
    symbols: np.ndarray, offsets: np.ndarray, counts: np.ndarray, num_merges: int, first_id: int = 256
) -> np.ndarray:
    """Learn up to `num_merges` merges; returns int32 (n_merges, 2) of (left, right) ids.

    words[w] = symbols[offsets[w]:offsets[w + 1]] occurs counts[w] times. Stops early when no
    adjacent pair is left.
    """
    symbols, offsets, counts = _check_words(symbols, offsets, counts)
    words = [symbols[offsets[w]:offsets[w + 1]].tolist() for w in range(counts.shape[0])]
    word_counts = counts.tolist()

    pair_counts: dict[Pair, int] = Counter()
    words_with_pair: dict[Pair, set[int]] = {}
    for w, word in enumerate(words):
        if word_counts[w] == 0:
            continue
        for pair, n in _pairs_of(word).items():
            pair_counts[pair] += n * word_counts[w]
            words_with_pair.setdefault(pair, set()).add(w)

    # Max-heap on count, then min on (left, right): heapq is a min-heap, so store -count.
    heap = [(-n, pair) for pair, n in pair_counts.items() if n > 0]
    heapq.heapify(heap)

    merges: list[Pair] = []
    while len(merges) < num_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        current = pair_counts.get(pair, 0)
        if current != -negative_count:  # stale entry: put the pair back with its true count
            if current > 0:
                heapq.heappush(heap, (-current, pair))
            continue
        new_id = first_id + len(merges)
        merges.append(pair)

        grown: set[Pair] = set()
        for w in sorted(words_with_pair.pop(pair)):
            old_word = words[w]
            new_word = _merge_word(old_word, pair, new_id)
            if len(new_word) == len(old_word):
                continue  # this word no longer holds the pair (it was merged away earlier)
            words[w] = new_word
            change = _pairs_of(new_word)
            change.subtract(_pairs_of(old_word))
            for changed_pair, delta in change.items():
                if delta == 0:
                    continue
                pair_counts[changed_pair] += delta * word_counts[w]
                if delta > 0:
                    grown.add(changed_pair)
                    words_with_pair.setdefault(changed_pair, set()).add(w)
        del pair_counts[pair]
        for grown_pair in sorted(grown):
            heapq.heappush(heap, (-pair_counts[grown_pair], grown_pair))
    return np.array(merges, dtype=np.int32).reshape(-1, 2)


def train_merges(
    symbols: np.ndarray, offsets: np.ndarray, counts: np.ndarray, num_merges: int, first_id: int = 256
) -> np.ndarray:
    """Learn up to `num_merges` merges (compiled when available); see train_merges_reference."""
    if not isinstance(num_merges, (int, np.integer)) or num_merges < 0:
        raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")
    kernel = compiled("bpe")
    if kernel is None:
        return train_merges_reference(symbols, offsets, counts, int(num_merges), first_id)
    symbols, offsets, counts = _check_words(symbols, offsets, counts)
    return kernel.train_merges(symbols, offsets, counts, int(num_merges), int(first_id))


# ------------------------------------------------------------------ encoding: the reference
def merge_ranks(merges: np.ndarray) -> dict[Pair, int]:
    """{(left, right): rank}; the merge of rank r produces id first_id + r."""
    return {(int(a), int(b)): rank for rank, (a, b) in enumerate(np.asarray(merges).tolist())}


def encode_piece_reference(piece: bytes, ranks: dict[Pair, int], first_id: int = 256) -> list[int]:
    """Ids of one pre-token: start from its bytes, join the lowest-rank pair until none is left."""
    ids = list(piece)
    while len(ids) >= 2:
        best = min(zip(ids, ids[1:]), key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        ids = _merge_word(ids, best, first_id + ranks[best])
    return ids


class ReferenceEncoder:
    """The reference encoder: pieces -> ids with a per-piece cache (same API as the compiled one)."""

    def __init__(self, merges: np.ndarray, first_id: int = 256, cache_limit: int = 1 << 20):
        self.ranks = merge_ranks(_as_merge_array(merges))
        self.first_id = first_id
        self.cache: dict[str, list[int]] = {}
        self.cache_limit = cache_limit

    def encode_pieces(self, pieces: list[str]) -> list[int]:
        ids: list[int] = []
        for piece in pieces:
            cached = self.cache.get(piece)
            if cached is None:
                cached = encode_piece_reference(piece.encode("utf-8"), self.ranks, self.first_id)
                if len(self.cache) >= self.cache_limit:
                    self.cache.clear()
                self.cache[piece] = cached
            ids.extend(cached)
        return ids


def make_encoder(merges: np.ndarray, first_id: int = 256):
    """An object with `encode_pieces(list[str]) -> list[int]` (compiled when available)."""
    merges = _as_merge_array(merges)
    kernel = compiled("bpe")
    if kernel is None:
        return ReferenceEncoder(merges, first_id)
    return kernel.Encoder(merges, int(first_id))
