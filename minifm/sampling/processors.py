"""Logits processors and token choice for generation, with Hugging Face transformers' semantics.

    process_logits(logits, input_ids=None, temperature=1.0, top_k=0, top_p=1.0, min_p=None,
                   typical_p=1.0, repetition_penalty=1.0, min_tokens_to_keep=1) -> new float array
    sample(logits, rng, **same keyword arguments) -> int64 token ids (batch,)
    sample_from_uniforms(processed_logits, uniforms) -> int64 token ids (batch,)
    greedy(logits) -> int64 argmax per row (first index on ties)

Order, as transformers applies them: repetition penalty (a processor: each distinct token seen in
input_ids once; a positive logit is divided by the penalty, a negative one multiplied), then the
warpers temperature (logits / temperature), top-k, top-p, min-p, typical-p. Removed tokens get -inf.
A warper at its neutral value (top_k=0, top_p=1, min_p=None or 0, typical_p=1) is skipped.

`sample` draws one uniform per row from the NumPy Generator and picks the token by inverse CDF,
so the same seed gives the same tokens. The filters and the draw run in minifm.kernels.sampling
(compiled: csrc/sampling.pyx). Accepts (vocab,) logits too, treated as one row.
"""
from __future__ import annotations

import numbers

import numpy as np

from minifm.kernels import sampling as kernels


def _check_settings(temperature, top_k, top_p, min_p, typical_p, repetition_penalty, min_tokens_to_keep):
    if not isinstance(temperature, numbers.Real) or not temperature > 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if not isinstance(top_p, numbers.Real) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if min_p is not None and (not isinstance(min_p, numbers.Real) or not 0.0 <= min_p <= 1.0):
        raise ValueError(f"min_p must be None or in [0, 1], got {min_p!r}")
    if not isinstance(typical_p, numbers.Real) or not 0.0 < typical_p <= 1.0:
        raise ValueError(f"typical_p must be in (0, 1], got {typical_p!r}")
    if not isinstance(repetition_penalty, numbers.Real) or not repetition_penalty > 0 or not np.isfinite(repetition_penalty):
        raise ValueError(f"repetition_penalty must be a finite number > 0, got {repetition_penalty!r}")
    if isinstance(min_tokens_to_keep, bool) or not isinstance(min_tokens_to_keep, numbers.Integral) or min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep must be an integer >= 1, got {min_tokens_to_keep!r}")


def _as_rows(logits) -> np.ndarray:
    """A float (batch, vocab) copy-free view of logits; (vocab,) becomes one row."""
    logits = np.asarray(logits)
    if logits.dtype not in (np.float32, np.float64):
        if logits.dtype.kind in "iu" or logits.dtype == np.float16:
            logits = logits.astype(np.float32)
        else:
            raise TypeError(f"logits must be a float array, got dtype {logits.dtype}")
    if logits.ndim == 1:
        logits = logits[None, :]
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (batch, vocab) with vocab >= 1, got {logits.shape}")
    if np.isnan(logits).any():
        rows = np.flatnonzero(np.isnan(logits).any(axis=1))
        raise ValueError(f"logits contain NaN (rows {rows[:5].tolist()}{'...' if rows.size > 5 else ''})")
    return logits


def apply_repetition_penalty(logits: np.ndarray, input_ids, penalty: float) -> np.ndarray:
    """transformers' RepetitionPenaltyLogitsProcessor on a copy: for each distinct token of each row's
    input_ids, a logit > 0 is divided by the penalty, a logit <= 0 multiplied by it."""
    out = np.array(logits, copy=True)
    if penalty == 1.0 or input_ids is None:
        return out
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.dtype.kind not in "iu":
        raise TypeError(f"input_ids must be integers, got dtype {ids.dtype}")
    if ids.ndim != 2 or ids.shape[0] != out.shape[0]:
        raise ValueError(f"input_ids must have shape (batch={out.shape[0]}, seq), got {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= out.shape[1]):
        raise ValueError(f"input_ids values must lie in [0, {out.shape[1]}), got min {ids.min()} max {ids.max()}")
    for row in range(out.shape[0]):
        seen = np.unique(ids[row])  # each distinct token once
        values = out[row, seen]
        out[row, seen] = np.where(values < 0, values * penalty, values / penalty)
    return out


def process_logits(logits, input_ids=None, temperature=1.0, top_k=0, top_p=1.0, min_p=None, typical_p=1.0,
                   repetition_penalty=1.0, min_tokens_to_keep=1):
    """The processed logits (a new array; removed entries -inf), shape (batch, vocab)."""
    _check_settings(temperature, top_k, top_p, min_p, typical_p, repetition_penalty, min_tokens_to_keep)
    rows = _as_rows(logits)
    scores = rows  # the filters below write into a copy: no copy here when there is no penalty
    if repetition_penalty != 1.0 and input_ids is not None:
        scores = apply_repetition_penalty(rows, input_ids, repetition_penalty)  # (batch, vocab)
    if temperature != 1.0:
        scores = scores / scores.dtype.type(temperature)
    return kernels.filter_logits(scores, int(top_k), float(top_p), min_p, float(typical_p), int(min_tokens_to_keep))


def sample(logits, rng, input_ids=None, temperature=1.0, top_k=0, top_p=1.0, min_p=None, typical_p=1.0,
           repetition_penalty=1.0, min_tokens_to_keep=1):
    """Process the logits, then draw one token per row from rng (a numpy Generator): int64 (batch,)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    processed = process_logits(logits, input_ids=input_ids, temperature=temperature, top_k=top_k, top_p=top_p,
                               min_p=min_p, typical_p=typical_p, repetition_penalty=repetition_penalty,
                               min_tokens_to_keep=min_tokens_to_keep)
    uniforms = rng.random(processed.shape[0])  # (batch,) one uniform per row
    return kernels.sample_from_uniforms(processed, uniforms)


def sample_from_uniforms(processed_logits, uniforms):
    """Inverse-CDF draw: for each row, the first token whose cumulative probability exceeds uniforms[row]."""
    return kernels.sample_from_uniforms(_as_rows(processed_logits), uniforms)


def greedy(logits):
    """Argmax per row, the first index on ties: int64 (batch,)."""
    return kernels.greedy(_as_rows(logits))
