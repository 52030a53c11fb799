# cython: language_level=3
"""Cython twin of minifm/kernels/normalization.py (references: layer_norm_forward_reference,
layer_norm_backward_reference, rms_norm_forward_reference).

LayerNorm over the last axis of an (N, D) array, rows split across OpenMP threads with prange.
Per row, with sums accumulated in double by the vector primitives of _common.pxd:

    forward:   mean = sum(x) / D
               xhat = x - mean                          (written into the saved xhat row)
               inv_std = 1 / sqrt(dot(xhat, xhat) / D + eps)
               xhat *= inv_std;  y = xhat * weight + bias
    backward:  g = dy * weight                          (written into the dx row)
               a = sum(g) / D,  b = dot(g, xhat) / D
               dx = (g - a - xhat * b) * inv_std

dweight = sum over rows of dy * xhat and dbias = sum over rows of dy are accumulated in double
column by column after the row loop, in one serial pass (D accumulators, vectorised across columns).
Each row is two or three passes over D contiguous values that stay in L1, instead of the ~10
separate NumPy calls (each a pass over the whole array plus a temporary) of the reference.

RMSNorm forward, per row: inv_rms = 1 / sqrt(dot(x, x) / D + eps) (in double), y = x * inv_rms * weight,
and xhat = x * inv_rms when the caller keeps it for backward. (Its backward stays NumPy; one row
of a KV-cached decoding step is what this kernel is for: ~8 NumPy calls of a few microseconds each
became one call.)
"""
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free

cimport _common as vec
from _common cimport real

# Serial cost of one element in nanoseconds, for the threading decision (a few vector passes each).
cdef double NS_FORWARD = 1.0
cdef double NS_BACKWARD = 1.5


cdef void _forward_row(const real* x, real* xhat, real* y, const real* weight, const real* bias,
                       Py_ssize_t d, double eps, real* inv_std) noexcept nogil:
    cdef Py_ssize_t j
    cdef double mean, var, scale
    cdef real scale_r, normalised
    mean = vec.row_sum(x, d) / d
    vec.shift(x, xhat, d, <real>mean)  # xhat = x - mean
    var = vec.dot(xhat, xhat, d) / d
    scale = 1.0 / sqrt(var + eps)
    inv_std[0] = <real>scale
    scale_r = <real>scale
    if weight != NULL and bias != NULL:  # one pass: scale the centred row, then the affine map
        for j in range(d):
            normalised = xhat[j] * scale_r
            xhat[j] = normalised
            y[j] = normalised * weight[j] + bias[j]
    elif weight != NULL:
        for j in range(d):
            normalised = xhat[j] * scale_r
            xhat[j] = normalised
            y[j] = normalised * weight[j]
    elif bias != NULL:
        for j in range(d):
            normalised = xhat[j] * scale_r
            xhat[j] = normalised
            y[j] = normalised + bias[j]
    else:
        for j in range(d):
            normalised = xhat[j] * scale_r
            xhat[j] = normalised
            y[j] = normalised


cdef void _backward_row(const real* dy, const real* xhat, const real* weight, real inv_std,
                        Py_ssize_t d, real* dx) noexcept nogil:
    cdef Py_ssize_t j
    cdef double mean_g, mean_gx
    cdef real a, b
    if weight != NULL:
        for j in range(d):
            dx[j] = dy[j] * weight[j]  # g
    else:
        for j in range(d):
            dx[j] = dy[j]
    mean_g = vec.row_sum(dx, d) / d
    mean_gx = vec.dot(dx, xhat, d) / d
    a = <real>mean_g
    b = <real>mean_gx
    for j in range(d):
        dx[j] = (dx[j] - a - xhat[j] * b) * inv_std


cdef const real* _row_vector(const real[::1] vector, Py_ssize_t d, str name) except? NULL:
    """Pointer to a (D,) weight or bias, or NULL when it is None; ValueError when its length is not D."""
    if vector is None:
        return NULL
    if vector.shape[0] != d:
        raise ValueError(f"{name} has {vector.shape[0]} entries, rows have {d}")
    return &vector[0]


def layer_norm_forward(const real[:, ::1] x, const real[::1] weight, const real[::1] bias, double eps,
                       real[:, ::1] out, real[:, ::1] xhat, real[::1] inv_std):
    """out = LayerNorm(x) * weight + bias row by row; also fills xhat (N, D) and inv_std (N,) for backward.

    weight and bias may be None (no scale / no shift); all arrays share x's dtype.
    """
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], i
    cdef const real* weight_ptr
    cdef const real* bias_ptr
    if out.shape[0] != rows or out.shape[1] != d or xhat.shape[0] != rows or xhat.shape[1] != d:
        raise ValueError(f"out and xhat must have x's shape {(rows, d)}")
    if inv_std.shape[0] != rows:
        raise ValueError(f"inv_std has {inv_std.shape[0]} entries, x has {rows} rows")
    weight_ptr = _row_vector(weight, d, "weight")
    bias_ptr = _row_vector(bias, d, "bias")
    if rows == 0 or d == 0:
        return
    with nogil:
        for i in prange(rows, schedule="static", num_threads=vec.threads_for(rows, NS_FORWARD * rows * d)):
            _forward_row(&x[i, 0], &xhat[i, 0], &out[i, 0], weight_ptr, bias_ptr, d, eps, &inv_std[i])


def layer_norm_backward(const real[:, ::1] grad, const real[:, ::1] xhat, const real[::1] inv_std,
                        const real[::1] weight, real[:, ::1] dx, real[::1] dweight, real[::1] dbias):
    """dx (N, D) from the upstream grad and the saved xhat / inv_std; dweight and dbias (D,) when not None.

    dweight = sum_i grad[i] * xhat[i], dbias = sum_i grad[i] (accumulated in double).
    """
    cdef Py_ssize_t rows = grad.shape[0], d = grad.shape[1], i, j
    cdef const real* weight_ptr
    cdef bint want_weight = dweight is not None, want_bias = dbias is not None
    cdef double* weight_sums
    cdef double* bias_sums
    if xhat.shape[0] != rows or xhat.shape[1] != d or dx.shape[0] != rows or dx.shape[1] != d:
        raise ValueError(f"xhat and dx must have grad's shape {(rows, d)}")
    if inv_std.shape[0] != rows:
        raise ValueError(f"inv_std has {inv_std.shape[0]} entries, grad has {rows} rows")
    weight_ptr = _row_vector(weight, d, "weight")
    if (want_weight and dweight.shape[0] != d) or (want_bias and dbias.shape[0] != d):
        raise ValueError(f"dweight and dbias must have {d} entries")
    if d == 0:
        return
    weight_sums = <double*>calloc(d, sizeof(double))
    bias_sums = <double*>calloc(d, sizeof(double))
    if weight_sums == NULL or bias_sums == NULL:
        free(weight_sums)
        free(bias_sums)
        raise MemoryError()
    with nogil:
        for i in prange(rows, schedule="static", num_threads=vec.threads_for(rows, NS_BACKWARD * rows * d)):
            _backward_row(&grad[i, 0], &xhat[i, 0], weight_ptr, inv_std[i], d, &dx[i, 0])
        if want_weight or want_bias:
            for i in range(rows):  # column sums, row after row: each j is an independent accumulator
                for j in range(d):
                    weight_sums[j] += grad[i, j] * xhat[i, j]
                    bias_sums[j] += grad[i, j]
            for j in range(d):
                if want_weight:
                    dweight[j] = <real>weight_sums[j]
                if want_bias:
                    dbias[j] = <real>bias_sums[j]
    free(weight_sums)
    free(bias_sums)


def rms_norm_forward(const real[:, ::1] x, const real[::1] weight, double eps, real[:, ::1] out,
                     real[:, ::1] xhat, real[::1] inv_rms):
    """out = x / sqrt(mean(x^2) + eps) * weight row by row; also inv_rms (N,) and, when not None, xhat (N, D).

    weight may be None (no scale); all arrays share x's dtype.
    """
    cdef Py_ssize_t rows = x.shape[0], d = x.shape[1], i, j
    cdef const real* weight_ptr
    cdef bint want_xhat = xhat is not None
    cdef real scale
    if out.shape[0] != rows or out.shape[1] != d:
        raise ValueError(f"out must have x's shape {(rows, d)}")
    if want_xhat and (xhat.shape[0] != rows or xhat.shape[1] != d):
        raise ValueError(f"xhat must have x's shape {(rows, d)}")
    if inv_rms.shape[0] != rows:
        raise ValueError(f"inv_rms has {inv_rms.shape[0]} entries, x has {rows} rows")
    weight_ptr = _row_vector(weight, d, "weight")
    if rows == 0 or d == 0:
        return
    with nogil:
        for i in prange(rows, schedule="static", num_threads=vec.threads_for(rows, NS_FORWARD * rows * d)):
            scale = <real>(1.0 / sqrt(vec.dot(&x[i, 0], &x[i, 0], d) / d + eps))
            inv_rms[i] = scale
            if want_xhat:
                for j in range(d):
                    xhat[i, j] = x[i, j] * scale
            if weight_ptr != NULL:
                for j in range(d):
                    out[i, j] = x[i, j] * scale * weight_ptr[j]
            else:
                for j in range(d):
                    out[i, j] = x[i, j] * scale
