"""The gradient of an embedding lookup (out = weight[ids]): NumPy reference + dispatch.

Compiled twin: csrc/embedding.pyx (module minifm.kernels._embedding), one in-order pass that adds each
gradient row into its table row: ~11 us for the tiny GPT's 1024 rows of 64, where `np.add.at` (the
reference) took ~570 us (NumPy 2.4, one core of the AMD host).

    embedding_backward(ids, grad_rows, vocab) -> grad_weight (vocab, dim)
    grad_weight[v] = sum of grad_rows[i] over the i with ids[i] == v, added in the order of i

The reference is the definition, `np.add.at(grad_weight, ids, grad_rows)`: unbuffered, one id after the
other, so each table row receives its rows in their order, as the kernel adds them; the two agree bit for
bit. (A sort of the ids with `np.add.reduceat` over the runs, the autograd op's route before the kernel, was
3x faster than `np.add.at` but sums a run in another order.) ids (N,) integers in [0, vocab); grad_rows
(N, dim) float32 or float64.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled


def _check(ids, grad_rows, vocab: int) -> None:
    if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be a 1-D integer array, got {getattr(ids, 'dtype', type(ids).__name__)} "
                        f"{getattr(ids, 'shape', '')}")
    if not isinstance(grad_rows, np.ndarray) or grad_rows.ndim != 2 or grad_rows.dtype not in (np.float32, np.float64):
        raise TypeError(f"grad_rows must be a 2-D float32 or float64 array, got "
                        f"{getattr(grad_rows, 'dtype', type(grad_rows).__name__)} {getattr(grad_rows, 'shape', '')}")
    if grad_rows.shape[0] != ids.shape[0]:
        raise ValueError(f"grad_rows has {grad_rows.shape[0]} rows for {ids.shape[0]} ids")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        bad = ids[(ids < 0) | (ids >= vocab)][0]
        raise IndexError(f"id {bad} is out of range for a table of {vocab} rows")


def embedding_backward_reference(ids: np.ndarray, grad_rows: np.ndarray, vocab: int) -> np.ndarray:
    """grad_weight (vocab, dim): each row of grad_rows added into the row its id names, in order."""
    _check(ids, grad_rows, vocab)
    grad_weight = np.zeros((vocab, grad_rows.shape[1]), dtype=grad_rows.dtype)  # (vocab, dim)
    np.add.at(grad_weight, ids, grad_rows)
    return grad_weight


def embedding_backward(ids: np.ndarray, grad_rows: np.ndarray, vocab: int) -> np.ndarray:
    """As embedding_backward_reference; the compiled kernel when available."""
    kernel = compiled("embedding")
    if kernel is None:
        return embedding_backward_reference(ids, grad_rows, vocab)
    _check(ids, grad_rows, vocab)
    grad_weight = np.zeros((vocab, grad_rows.shape[1]), dtype=grad_rows.dtype)  # (vocab, dim)
    kernel.embedding_backward(np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(grad_rows), grad_weight)
    return grad_weight
