"""One Adam / AdamW update of one parameter, in place: NumPy reference + dispatch.

Compiled twin: csrc/adam.pyx (module minifm.kernels._adam), one pass over the parameter instead of
about 14 NumPy calls; the optimizer calls it once per parameter per step (torch.optim semantics,
see minifm/optim/adam.py). The math at step t (starting at 1), for weight w, gradient g and the
moments m ("exp_avg") and v ("exp_avg_sq"):

    AdamW (decoupled=True):  w = w * (1 - lr * weight_decay)
    Adam  (decoupled=False): g = g + weight_decay * w
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Every scalar factor is computed in double and rounded to the parameter's dtype, and the arrays
are updated in that dtype. The compiled path needs weight, grad and both moments C-contiguous and
of one dtype (float32 or float64); anything else (a strided view, a float64 gradient on a float32
parameter) takes the reference, which handles it with NumPy's casting rules.
"""
from __future__ import annotations

import math

import numpy as np

from minifm.kernels._backend import compiled


def adam_update_reference(weight, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                          decoupled):
    """Update weight, exp_avg and exp_avg_sq in place (one scratch array); returns nothing."""
    dtype = weight.dtype.type
    if weight_decay != 0:
        if decoupled:
            weight *= dtype(1 - lr * weight_decay)
        else:
            grad = grad + dtype(weight_decay) * weight
    exp_avg *= dtype(beta1)
    exp_avg += dtype(1 - beta1) * grad  # m = b1 m + (1 - b1) g
    exp_avg_sq *= dtype(beta2)
    scratch = np.multiply(grad, grad)
    scratch *= dtype(1 - beta2)
    exp_avg_sq += scratch  # v = b2 v + (1 - b2) g^2
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    np.sqrt(exp_avg_sq, out=scratch)
    scratch *= dtype(1.0 / bias_correction2_sqrt)
    scratch += dtype(eps)  # denominator
    np.divide(exp_avg, scratch, out=scratch)
    scratch *= dtype(lr / bias_correction1)
    weight -= scratch


def _fits_kernel(weight, grad, exp_avg, exp_avg_sq) -> bool:
    """True when the four arrays are C-contiguous, of one float dtype and one shape."""
    if weight.dtype not in (np.float32, np.float64):
        return False
    for array in (weight, grad, exp_avg, exp_avg_sq):
        if array.dtype != weight.dtype or array.shape != weight.shape or not array.flags.c_contiguous:
            return False
    return True


def adam_update(weight, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """As adam_update_reference; the compiled one-pass kernel when available and the arrays fit it."""
    kernel = compiled("adam")
    if kernel is None or not _fits_kernel(weight, grad, exp_avg, exp_avg_sq) or not weight.flags.writeable:
        adam_update_reference(weight, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                              decoupled)
        return
    step_size = lr / (1 - beta1**step)
    inv_bias_correction2_sqrt = 1.0 / math.sqrt(1 - beta2**step)
    kernel.adam_update(weight.reshape(-1), grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
                       beta1, beta2, eps, weight_decay, bool(decoupled), lr, step_size, inv_bias_correction2_sqrt)
