# cython: language_level=3
"""Cython twin of minifm/kernels/embedding.py (reference: embedding_backward_reference).

The gradient of an embedding lookup out = weight[ids]: each row of the upstream gradient is added into
the row of the table it was looked up from,

    grad_weight[ids[i], :] += grad_rows[i, :]          i = 0 .. N - 1, in order

one pass over the N rows, on one thread (the work is N * dim additions: ~65,000 for the tiny GPT's
16 x 64 tokens of width 64, about 11 us, less than waking a second thread). In order, so every table
row receives its rows in the order the ids list them, as the reference's `np.add.at` adds them: the same
bits. ids are int64 and checked in range by the caller.
"""
from libc.stdint cimport int64_t

from _common cimport real


def embedding_backward(const int64_t[::1] ids, const real[:, ::1] grad_rows, real[:, ::1] grad_weight):
    """grad_weight[ids[i]] += grad_rows[i] for i in order; grad_weight (vocab, dim) is added into, not cleared."""
    cdef Py_ssize_t n = ids.shape[0], dim = grad_rows.shape[1], i, j
    cdef real* target
    cdef const real* source
    if grad_rows.shape[0] != n:
        raise ValueError(f"grad_rows has {grad_rows.shape[0]} rows for {n} ids")
    if grad_weight.shape[1] != dim:
        raise ValueError(f"grad_weight has rows of {grad_weight.shape[1]}, grad_rows of {dim}")
    if n == 0 or dim == 0:
        return
    with nogil:
        for i in range(n):
            target = &grad_weight[ids[i], 0]
            source = &grad_rows[i, 0]
            for j in range(dim):
                target[j] += source[j]
