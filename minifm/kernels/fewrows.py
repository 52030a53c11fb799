"""Products of a few float32 rows with cache-resident row-major weights: NumPy reference + dispatch.

Compiled twin: csrc/matvec.pyx's fewrows_many (module minifm.kernels._matvec, shared with
minifm/kernels/matvec.py: one table of the weights of a call and one split of their rows across the
threads, this kernel's register tiles in csrc/_fewrows.h); the operand checks are matvec's too.

The math, for x (M, K) and weights W_1 .. W_n, each (N_i, K) as a Linear layer stores it:

    out_i = x @ W_i^T            out_i[m, r] = sum_k x[m, k] * W_i[r, k]        (M, N_i)

It is the matvec kernel's product (minifm/kernels/matvec.py), for another regime: KV-cached decoding
of a small model, whose weights fit in the caches, at a batch of up to MAX_ROWS rows. There the
product is bound by arithmetic and per-call overhead, not memory bandwidth, and OpenBLAS's GEMM
(which packs the whole weight on every call) and the matvec kernel (one reduced dot product per
output) both lose to a kernel that loads a weight row once and multiplies it into vector sums for
up to four input rows at a time (csrc/matvec.pyx says how, and in which order it sums).

Used by: GPT's output head during batched decoding (minifm/models/gpt.py, `logits_from_hidden`), a
(batch x n_embd) @ (n_embd x vocab) product that is the largest of a small model's decoding step, and
(through csrc/_fewrows.h, the same C tiles) every product of the GPT-2 block step, csrc/gpt2_step.pyx.
The result differs from `x @ W.T` by float32 rounding only (another summation order); it does not
depend on the thread count or on M (a row's logits are the same alone or in a batch).
Simplification: float32 only (float64 models keep BLAS); no bias.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled
from minifm.kernels import matvec

# Products with at most this many input rows go to the compiled kernel: the batch sizes of decoding.
MAX_ROWS = 16

# The kernel uses every thread of the budget when the weights of one call hold at least this many
# bytes, else one thread (waking a second thread costs tens of microseconds on an idle machine).
PARALLEL_BYTES = 1024 * 1024

_FLOAT32 = (np.dtype(np.float32),)


def fewrows_reference(x: np.ndarray, weights) -> list[np.ndarray]:
    """[x @ W^T for W in weights]: x (M, K), each W (N_i, K) -> (M, N_i) float32 arrays."""
    matvec.check_operands(x, weights, _FLOAT32)
    return [np.ascontiguousarray(x @ weight.T) for weight in weights]  # (M, N_i) each


def applies(x: np.ndarray, weights) -> bool:
    """True when the compiled kernel computes x @ W^T for every W in `weights` (a sequence of weights,
    or one weight): float32, 1..MAX_ROWS rows, C-contiguous non-empty weights, the kernel built."""
    return matvec.applies(x, weights, MAX_ROWS, _FLOAT32)


def fewrows_many(x: np.ndarray, weights) -> list[np.ndarray]:
    """[x @ W^T for W in weights] (M, N_i) each, in one parallel region; the compiled kernel when it
    applies to all of them (`applies`), else the reference."""
    weights = tuple(weights)
    if not applies(x, weights):
        return fewrows_reference(x, weights)
    x = np.ascontiguousarray(x)
    outs = tuple([np.empty((x.shape[0], weight.shape[0]), dtype=np.float32) for weight in weights])  # (M, N_i)
    compiled("matvec").fewrows_many(x, weights, outs, PARALLEL_BYTES)
    return list(outs)


def fewrows(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x @ weight^T for x (M, K) and weight (N, K) -> (M, N); the compiled kernel when it applies."""
    return fewrows_many(x, (weight,))[0]
