"""The `logits_processor` hook of generate(): your own processors, with transformers' convention.

A logits processor is any callable

    processor(input_ids, scores) -> scores

input_ids: (N, T) int64, everything so far (left padding, prompt and generated tokens; for T5 the
decoder's tokens); scores: (N, V) float, the next-token scores. It returns new scores of the same
shape (-inf removes a token). minifm's constraints (minifm.sampling.constraints) are processors.

Where they run is where transformers runs them (GenerationMixin._get_logits_processor appends the
user's `logits_processor` after its own processors and before the warpers):

    greedy / sampling:  raw logits -> repetition penalty -> your processors, in list order
                        -> (sampling only) temperature, top-k, top-p, min-p, typical-p -> choice
    beam search:        log-softmax -> repetition penalty -> your processors -> beam scores

So a processor sees the model's logits (after the penalty), not tempered or truncated ones, and
the warpers truncate among the tokens it allowed. `output_scores` returns the scores after all of
them, as in transformers.

LogitsProcessorList (transformers' name) applies a list in order; it hands the first processor a
copy, so a processor that writes into `scores` in place cannot change the logits generate keeps
for log-probabilities; it refuses a result of the wrong shape, with NaN or +inf, or with every
token of a row removed, naming the processor.
"""
from __future__ import annotations

import numpy as np


class LogitsProcessorList(list):
    """Processors applied in list order: LogitsProcessorList([a, b])(input_ids, scores) = b(ids, a(ids, scores))."""

    def __call__(self, input_ids, scores) -> np.ndarray:
        scores = np.array(scores, copy=True)  # (N, V) the caller's array stays untouched
        for index, processor in enumerate(self):
            result = np.asarray(processor(input_ids, scores))
            name = f"logits_processor[{index}] ({type(processor).__name__})"
            if result.shape != scores.shape:
                raise ValueError(f"{name} returned scores of shape {result.shape}, expected {scores.shape}")
            if result.dtype.kind != "f":
                raise TypeError(f"{name} returned dtype {result.dtype}, expected float scores")
            if np.isnan(result).any() or np.isposinf(result).any():
                raise ValueError(f"{name} returned NaN or +inf scores")
            empty = np.flatnonzero(np.isneginf(result).all(axis=1))
            if empty.size:
                raise ValueError(f"{name} removed every token of rows {empty[:8].tolist()}: nothing left to choose")
            scores = result
        return scores


def check_logits_processors(logits_processor) -> LogitsProcessorList:
    """generate()'s `logits_processor` argument (None, or a list/tuple of callables) as a LogitsProcessorList."""
    if logits_processor is None:
        return LogitsProcessorList()
    if callable(logits_processor) and not isinstance(logits_processor, (list, tuple)):
        raise TypeError(f"logits_processor must be a list of processors, got one {type(logits_processor).__name__}: "
                        f"wrap it in a list, logits_processor=[...]")
    if not isinstance(logits_processor, (list, tuple)):
        raise TypeError(f"logits_processor must be a list of callables, got {type(logits_processor).__name__}")
    for index, processor in enumerate(logits_processor):
        if not callable(processor):
            raise TypeError(f"logits_processor[{index}] must be callable (input_ids, scores) -> scores, "
                            f"got {type(processor).__name__}")
    return LogitsProcessorList(logits_processor)


__all__ = ["LogitsProcessorList", "check_logits_processors"]
