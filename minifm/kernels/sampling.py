"""Logits filters and the categorical draw: NumPy references (sort-based, read like transformers'
logits warpers) + dispatch to the compiled twin.

Compiled twin: csrc/sampling.pyx (module minifm.kernels._sampling), which replaces every sort by
partial selection (a heap for top-k, quickselect weighted by probability for top-p and typical-p),
so a (batch, vocab) row costs O(vocab) on average.

Functions (scores are (batch, vocab) float arrays; removed entries are -inf):
    filter_logits(scores, top_k, top_p, min_p, typical_p, min_tokens_to_keep) -> new array
        top-k, then top-p, then min-p, then typical-p, each exactly as transformers' TopKLogitsWarper,
        TopPLogitsWarper, MinPLogitsWarper and TypicalLogitsWarper define them.
    sample_from_uniforms(scores, uniforms) -> int64 ids (batch,): inverse-CDF draw, one uniform per row.
    greedy(scores) -> argmax per row, the first index on ties.

Ties: transformers sorts with torch.sort, whose order among equal scores is not specified; here it
is the order of a *stable* sort, i.e. top-p (ascending sort, lowest removed first) removes the lower
index of two equal scores first, and min-p / typical-p keep the lower index first when
min_tokens_to_keep has to break a tie. Top-k keeps every score equal to the k-th (transformers too).
Cut-offs: a cumulative probability within MASS_TOLERANCE (1e-9) of the top-p or typical-p mass
counts as reaching it. Equal logits make exact cut-offs common (18 equal scores and top_p=0.5 must
keep 9 tokens), and without the tolerance the answer would depend on the order in which rounding
errors were summed — which differs between the sorted cumulative sum here and the partitioned
selection of the compiled twin (which uses the same constant).
Simplification: probabilities are computed in float64 (transformers uses the logits' dtype), which
can only matter for a token exactly at a cut-off.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled

MASS_TOLERANCE = 1e-9  # csrc/sampling.pyx has the same constant


def _softmax64(scores: np.ndarray) -> np.ndarray:
    """Row softmax in float64; -inf entries get probability 0."""
    scores = scores.astype(np.float64)
    row_max = np.max(scores, axis=-1, keepdims=True)
    e = np.exp(scores - row_max)  # (batch, vocab)
    return e / np.sum(e, axis=-1, keepdims=True)


# ---------------------------------------------------------------- references (one warper each)


def top_k_reference(scores, top_k, min_tokens_to_keep=1):
    """Remove every score below the k-th largest (k = max(top_k, min_tokens_to_keep))."""
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth_largest = np.sort(scores, axis=-1)[:, -k][:, None]  # (batch, 1)
    return np.where(scores < kth_largest, -np.inf, scores).astype(scores.dtype)


def top_p_reference(scores, top_p, min_tokens_to_keep=1):
    """Sort ascending; remove tokens whose cumulative probability (up to and including them) is
    <= 1 - top_p, but never the last min_tokens_to_keep of the sorted order."""
    order = np.argsort(scores, axis=-1, kind="stable")  # (batch, vocab) ascending
    sorted_probs = np.take_along_axis(_softmax64(scores), order, axis=-1)
    cumulative = np.cumsum(sorted_probs, axis=-1)  # (batch, vocab)
    sorted_remove = cumulative <= 1 - top_p + MASS_TOLERANCE
    sorted_remove[:, -min_tokens_to_keep:] = False
    remove = np.zeros_like(sorted_remove)
    np.put_along_axis(remove, order, sorted_remove, axis=-1)
    return np.where(remove, -np.inf, scores).astype(scores.dtype)


def min_p_reference(scores, min_p, min_tokens_to_keep=1):
    """Remove tokens whose probability is below min_p times the largest probability, keeping at least
    min_tokens_to_keep of the best."""
    probs = _softmax64(scores)
    remove = probs < min_p * np.max(probs, axis=-1, keepdims=True)  # (batch, vocab)
    best_first = np.argsort(-scores, axis=-1, kind="stable")  # (batch, vocab) descending
    sorted_remove = np.take_along_axis(remove, best_first, axis=-1)
    sorted_remove[:, :min_tokens_to_keep] = False
    np.put_along_axis(remove, best_first, sorted_remove, axis=-1)
    return np.where(remove, -np.inf, scores).astype(scores.dtype)


def typical_p_reference(scores, typical_p, min_tokens_to_keep=1):
    """Locally typical sampling: rank tokens by |-log p - entropy| ascending, find the first rank at
    which the cumulative probability reaches typical_p, remove tokens whose distance is larger than
    that token's (never the first min_tokens_to_keep)."""
    probs = _softmax64(scores)  # (batch, vocab)
    with np.errstate(divide="ignore"):
        log_probs = np.log(probs)
    entropy = -np.sum(np.where(probs > 0, probs * np.where(probs > 0, log_probs, 0.0), 0.0), axis=-1, keepdims=True)
    distance = np.abs(-log_probs - entropy)  # (batch, vocab), inf for removed tokens
    order = np.argsort(distance, axis=-1, kind="stable")  # most typical first
    sorted_distance = np.take_along_axis(distance, order, axis=-1)
    cumulative = np.cumsum(np.take_along_axis(probs, order, axis=-1), axis=-1)
    last = np.minimum(np.sum(cumulative < typical_p - MASS_TOLERANCE, axis=-1), scores.shape[-1] - 1)  # (batch,)
    threshold = sorted_distance[np.arange(scores.shape[0]), last][:, None]  # (batch, 1)
    sorted_remove = sorted_distance > threshold
    sorted_remove[:, :min_tokens_to_keep] = False
    remove = np.zeros_like(sorted_remove)
    np.put_along_axis(remove, order, sorted_remove, axis=-1)
    return np.where(remove, -np.inf, scores).astype(scores.dtype)


def filter_logits_reference(scores, top_k=0, top_p=1.0, min_p=None, typical_p=1.0, min_tokens_to_keep=1):
    """The warpers in transformers' order: top-k, top-p, min-p, typical-p (inactive ones skipped)."""
    scores = np.array(scores, copy=True)
    if top_k > 0:
        scores = top_k_reference(scores, top_k, min_tokens_to_keep)
    if top_p < 1.0:
        scores = top_p_reference(scores, top_p, min_tokens_to_keep)
    if min_p is not None and min_p > 0.0:
        scores = min_p_reference(scores, min_p, min_tokens_to_keep)
    if typical_p < 1.0:
        scores = typical_p_reference(scores, typical_p, min_tokens_to_keep)
    return scores


def sample_from_uniforms_reference(scores, uniforms):
    """Inverse CDF per row: the first token whose cumulative (unnormalised) weight exceeds u * total."""
    scores = np.asarray(scores, dtype=np.float64)
    row_max = np.max(scores, axis=-1, keepdims=True)
    weights = np.exp(scores - row_max)  # (batch, vocab)
    cdf = np.cumsum(weights, axis=-1)  # (batch, vocab)
    ids = np.empty(scores.shape[0], dtype=np.int64)
    for row in range(scores.shape[0]):
        chosen = int(np.searchsorted(cdf[row], uniforms[row] * cdf[row, -1], side="right"))
        last_with_mass = int(np.flatnonzero(weights[row] > 0)[-1])
        ids[row] = min(chosen, last_with_mass)  # rounding can leave u * total unreached
    return ids


def greedy_reference(scores):
    """Argmax per row; np.argmax already returns the first index on ties."""
    return np.argmax(scores, axis=-1).astype(np.int64)


# ---------------------------------------------------------------- dispatch


def filter_logits(scores, top_k=0, top_p=1.0, min_p=None, typical_p=1.0, min_tokens_to_keep=1):
    """New (batch, vocab) array with the filtered-out entries at -inf (compiled when available)."""
    kernel = compiled("sampling")
    if kernel is None:
        return filter_logits_reference(scores, top_k, top_p, min_p, typical_p, min_tokens_to_keep)
    out = np.array(scores, copy=True, order="C")
    kernel.filter_rows(out, int(top_k), float(top_p), float(min_p or 0.0), float(typical_p), int(min_tokens_to_keep))
    return out


def sample_from_uniforms(scores, uniforms):
    """One token id per row drawn by inverse CDF from the given uniforms in [0, 1)."""
    scores = np.asarray(scores)
    uniforms = np.ascontiguousarray(uniforms, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (batch, vocab), got {scores.shape}")
    if uniforms.shape != (scores.shape[0],):
        raise ValueError(f"uniforms must have shape ({scores.shape[0]},), got {uniforms.shape}")
    if np.any((uniforms < 0) | (uniforms >= 1)):
        raise ValueError(f"uniforms must lie in [0, 1), got min {uniforms.min()} max {uniforms.max()}")
    if np.any(np.isnan(scores)):
        raise ValueError("scores contain NaN")
    empty_rows = np.flatnonzero(np.all(np.isneginf(scores), axis=-1)) if scores.shape[1] else np.arange(scores.shape[0])
    if empty_rows.size:
        raise ValueError(f"row {int(empty_rows[0])} has no token left to sample (every score is -inf)")
    kernel = compiled("sampling")
    if kernel is None or scores.dtype not in (np.float32, np.float64):
        return sample_from_uniforms_reference(scores, uniforms)
    ids = np.empty(scores.shape[0], dtype=np.int64)
    kernel.sample_rows(np.ascontiguousarray(scores), uniforms, ids)
    return ids


def greedy(scores):
    """Argmax per row (first index on ties)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must have shape (batch, vocab) with vocab >= 1, got {scores.shape}")
    if np.any(np.isnan(scores)):
        raise ValueError("scores contain NaN")
    return greedy_reference(scores)
