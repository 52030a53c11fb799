# cython: language_level=3
"""Cython twin of minifm/kernels/adam.py (reference: adam_update_reference).

One Adam / AdamW step for one parameter, in place, in a single pass over its elements (the
reference makes about 14 NumPy calls, each a pass over the parameter, plus a scratch array):

    AdamW:  w = w * (1 - lr * weight_decay)                 decoupled decay
    Adam:   g = g + weight_decay * w                        L2 penalty through the moments
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    w = w - step_size * m / (sqrt(v) * inv_bias_correction2_sqrt + eps)

The scalar factors (decay, step_size = lr / (1 - beta1^t), inv_bias_correction2_sqrt =
1 / sqrt(1 - beta2^t)) are computed once in double by the Python wrapper and rounded to the
parameter's dtype, as the reference does; each element then follows the reference's order of
operations in that dtype (the compiler may fuse a multiply and an add into one FMA, a difference of
at most one rounding per operation).
"""
from libc.math cimport sqrt

from _common cimport real


def adam_update(real[::1] weight, const real[::1] grad, real[::1] exp_avg, real[::1] exp_avg_sq,
                double beta1, double beta2, double eps, double weight_decay, bint decoupled,
                double lr, double step_size, double inv_bias_correction2_sqrt):
    """Update flat contiguous weight, exp_avg and exp_avg_sq in place from grad (all one length).

    step_size = lr / (1 - beta1^t); inv_bias_correction2_sqrt = 1 / sqrt(1 - beta2^t).
    """
    cdef Py_ssize_t n = weight.shape[0], j
    cdef real b1 = <real>beta1, b2 = <real>beta2, one_minus_b1 = <real>(1.0 - beta1)
    cdef real one_minus_b2 = <real>(1.0 - beta2), eps_r = <real>eps, wd = <real>weight_decay
    cdef real decay = <real>(1.0 - lr * weight_decay)
    cdef real lr_step = <real>step_size, inv_bc2 = <real>inv_bias_correction2_sqrt
    cdef bint coupled_decay = weight_decay != 0.0 and not decoupled
    cdef bint decoupled_decay = weight_decay != 0.0 and decoupled
    cdef real g, m, v, w
    if grad.shape[0] != n or exp_avg.shape[0] != n or exp_avg_sq.shape[0] != n:
        raise ValueError(f"grad ({grad.shape[0]}), exp_avg ({exp_avg.shape[0]}) and exp_avg_sq "
                         f"({exp_avg_sq.shape[0]}) must have as many elements as weight ({n})")
    with nogil:
        for j in range(n):
            w = weight[j]
            if decoupled_decay:
                w = w * decay
            g = grad[j]
            if coupled_decay:
                g = g + wd * w
            m = exp_avg[j] * b1 + one_minus_b1 * g
            v = exp_avg_sq[j] * b2 + (g * g) * one_minus_b2
            exp_avg[j] = m
            exp_avg_sq[j] = v
            weight[j] = w - (m / (<real>sqrt(v) * inv_bc2 + eps_r)) * lr_step
