# cython: language_level=3
"""Cython twin of minifm/kernels/softmax.py (references: softmax_reference, softmax_backward_reference,
log_softmax_reference, log_softmax_backward_reference).

Each row is independent, so rows are split across OpenMP threads with prange. Within a row the work
is a few passes over contiguous memory, each one a vectorised primitive from _common.pxd:

  softmax:      m = max(x);  y = exp(x - m), s = sum(y);  y *= 1/s
  log_softmax:  m = max(x);  s = sum(exp(x - m));         y = x - (m + log s)
  softmax backward:      dx = y * (dy - sum(dy * y))
  log_softmax backward:  dx = dy - exp(y) * sum(dy)

A row whose maximum is -inf (every entry -inf) has no mass: softmax gives zeros, log_softmax -inf.
"""
from cython.parallel cimport prange
from libc.math cimport log, INFINITY

cimport _common as vec
from _common cimport real


cdef inline void _softmax_row(const real* x, real* y, Py_ssize_t n) noexcept nogil:
    cdef real row_max
    cdef double total
    cdef Py_ssize_t j
    row_max = vec.row_max(x, n)
    if row_max == -INFINITY:
        for j in range(n):
            y[j] = 0
        return
    total = vec.exp_store_sum(x, y, n, 1, row_max)
    vec.scale(y, n, <real>(1.0 / total))


cdef inline void _log_softmax_row(const real* x, real* y, Py_ssize_t n) noexcept nogil:
    cdef real row_max
    cdef double total
    cdef Py_ssize_t j
    row_max = vec.row_max(x, n)
    if row_max == -INFINITY:
        for j in range(n):
            y[j] = -INFINITY
        return
    total = vec.exp_sum(x, n, row_max)
    vec.shift(x, y, n, <real>(row_max + log(total)))


def _check_pair(tuple a, tuple b, str name_a, str name_b):
    if a != b:
        raise ValueError(f"{name_a} shape {a} != {name_b} shape {b}")


def softmax_forward(const real[:, ::1] x, real[:, ::1] out):
    """out[i] = softmax(x[i]) for every row i."""
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1], i
    _check_pair((out.shape[0], out.shape[1]), (rows, cols), "out", "x")
    if cols == 0:
        return
    with nogil:
        for i in prange(rows, schedule="static", num_threads=vec.threads_for(rows, <double>rows * cols)):
            _softmax_row(&x[i, 0], &out[i, 0], cols)


def log_softmax_forward(const real[:, ::1] x, real[:, ::1] out):
    """out[i] = log_softmax(x[i]) for every row i."""
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1], i
    _check_pair((out.shape[0], out.shape[1]), (rows, cols), "out", "x")
    if cols == 0:
        return
    with nogil:
        for i in prange(rows, schedule="static", num_threads=vec.threads_for(rows, <double>rows * cols)):
            _log_softmax_row(&x[i, 0], &out[i, 0], cols)


def softmax_backward(const real[:, ::1] y, const real[:, ::1] dy, real[:, ::1] dx):
    """dx[i] = y[i] * (dy[i] - <dy[i], y[i]>) where y = softmax(x)."""
    cdef Py_ssize_t rows = y.shape[0], cols = y.shape[1], i
    cdef double inner
    _check_pair((dy.shape[0], dy.shape[1]), (rows, cols), "dy", "y")
    _check_pair((dx.shape[0], dx.shape[1]), (rows, cols), "dx", "y")
    if cols == 0:
        return
    with nogil:
        for i in prange(rows, schedule="static", num_threads=vec.threads_for(rows, <double>rows * cols)):
            inner = vec.dot(&dy[i, 0], &y[i, 0], cols)
            vec.mul_sub(&y[i, 0], &dy[i, 0], &dx[i, 0], cols, <real>inner)


def log_softmax_backward(const real[:, ::1] y, const real[:, ::1] dy, real[:, ::1] dx):
    """dx[i] = dy[i] - exp(y[i]) * sum(dy[i]) where y = log_softmax(x)."""
    cdef Py_ssize_t rows = y.shape[0], cols = y.shape[1], i
    cdef double total
    _check_pair((dy.shape[0], dy.shape[1]), (rows, cols), "dy", "y")
    _check_pair((dx.shape[0], dx.shape[1]), (rows, cols), "dx", "y")
    if cols == 0:
        return
    with nogil:
        for i in prange(rows, schedule="static", num_threads=vec.threads_for(rows, <double>rows * cols)):
            total = vec.row_sum(&dy[i, 0], cols)
            vec.sub_exp_mul(&y[i, 0], &dy[i, 0], &dx[i, 0], cols, <real>total)
