# cython: language_level=3
"""Cython twin of minifm/kernels/softmax.py (reference: softmax_reference).

Each row is independent, so rows are split across OpenMP threads with prange; within a row the
max, the exponentials and the normalisation are three passes over contiguous memory.
"""
from cython.parallel cimport prange
from libc.math cimport exp, expf, INFINITY

ctypedef fused real:
    float
    double


cdef inline void _softmax_row(const real* x, real* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef double row_max = -INFINITY
    cdef double total = 0.0
    cdef double e
    for j in range(n):
        if x[j] > row_max:
            row_max = x[j]
    if row_max == -INFINITY:
        for j in range(n):
            y[j] = 0
        return
    for j in range(n):
        if real is float:
            e = expf(<float>(x[j] - row_max))
        else:
            e = exp(x[j] - row_max)
        y[j] = <real>e
        total += e
    for j in range(n):
        y[j] = <real>(y[j] / total)


def softmax_forward(const real[:, ::1] x, real[:, ::1] out):
    """out[i] = softmax(x[i]) for every row i."""
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1], i
    if out.shape[0] != rows or out.shape[1] != cols:
        raise ValueError(f"out shape {(out.shape[0], out.shape[1])} != x shape {(rows, cols)}")
    with nogil:
        for i in prange(rows, schedule="static"):
            _softmax_row(&x[i, 0], &out[i, 0], cols)
