# cython: language_level=3
"""Cython twin of minifm/kernels/cross_entropy.py (reference: cross_entropy_reference).

One fused pass per row i of the (N, V) logits, rows split across OpenMP threads with prange:

    m    = max_j x[j]                                 (vectorised reduction)
    lse  = m + log(sum_j exp(x[j] - m))               (vectorised exp + reduction)
    loss = (1 - eps) * (lse - x[t]) + eps * (lse - mean_j x[j])
    grad[j] = exp(x[j] - lse) - eps / V,  grad[t] -= 1 - eps

No probability array is ever stored: the gradient row is written directly from the logits row
(which stays in cache between the passes). Targets are validated by the Python wrapper; a row with
target == ignore_index gets loss 0 and a zero gradient row.
"""
from cython.parallel cimport prange
from libc.math cimport log
from libc.stdint cimport int64_t

cimport _common as vec
from _common cimport real


cdef inline real _row(const real* x, int64_t target, Py_ssize_t vocab, double eps,
                      real* grad, double grad_scale) noexcept nogil:
    """Loss of one row; writes the gradient row, times grad_scale, when grad is not NULL."""
    cdef real row_max
    cdef double total, lse, logit_sum = 0.0, loss
    row_max = vec.row_max(x, vocab)
    total = vec.exp_sum(x, vocab, row_max)
    if eps != 0.0:
        logit_sum = vec.row_sum(x, vocab)
    lse = row_max + log(total)
    loss = (1.0 - eps) * (lse - x[target])
    if eps != 0.0:
        loss = loss + eps * (lse - logit_sum / vocab)
    if grad != NULL:
        vec.exp_affine(x, grad, vocab, <real>lse, <real>grad_scale, <real>(-eps / vocab * grad_scale))
        grad[target] = <real>(grad[target] - (1.0 - eps) * grad_scale)
    return <real>loss


def cross_entropy_rows(const real[:, ::1] logits, const int64_t[::1] targets, int64_t ignore_index,
                       double label_smoothing, real[::1] losses, real[:, ::1] grad=None,
                       double grad_scale=1.0):
    """losses[i] (and grad[i] * grad_scale when grad is given) for every row; targets must already be valid."""
    cdef Py_ssize_t rows = logits.shape[0], vocab = logits.shape[1], i, j
    cdef bint want_grad = grad is not None
    cdef real* grad_row
    if targets.shape[0] != rows or losses.shape[0] != rows:
        raise ValueError(
            f"targets ({targets.shape[0]},) and losses ({losses.shape[0]},) must have "
            f"logits' row count {rows}"
        )
    if want_grad and (grad.shape[0] != rows or grad.shape[1] != vocab):
        raise ValueError(f"grad shape {(grad.shape[0], grad.shape[1])} != logits shape {(rows, vocab)}")
    if rows == 0 or vocab == 0:
        return
    with nogil:
        for i in prange(rows, schedule="static", num_threads=vec.threads_for(rows, <double>rows * vocab)):
            grad_row = &grad[i, 0] if want_grad else NULL
            if targets[i] == ignore_index:
                losses[i] = 0
                if want_grad:
                    for j in range(vocab):
                        grad_row[j] = 0
            else:
                losses[i] = _row(&logits[i, 0], targets[i], vocab, label_smoothing, grad_row, grad_scale)
