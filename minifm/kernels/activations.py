"""Exact (erf) GELU, forward and backward, and SwiGLU's gate silu(gate) * up: NumPy references + dispatch.

Compiled twin: csrc/activations.pyx (module minifm.kernels._activations), one fused pass per
direction and no temporaries; its float32 path computes in float32 with a Chebyshev-fitted erfc
(csrc/_gelu.h: within 3.82e-7 relative of the float64 truth over every float32 in [-30, 30]), its
float64 path calls libm's erfc.

The math, with Phi the standard normal CDF and phi its density:

    gelu(x)   = x * Phi(x),          Phi(x) = erfc(-x / sqrt 2) / 2
    backward: dx = dy * (Phi(x) + x * phi(x)),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

`gelu_with_derivative` returns the output and dy/dx = Phi(x) + x phi(x) from one pass, for
training (the backward becomes one multiply at the cost of one stored activation-sized array).

SwiGLU's gate and its backward (for the upstream gradient `grad` of the output):

    silu_mul(gate, up) = silu(gate) * up = gate * sigmoid(gate) * up,   sigmoid(g) = 1 / (1 + exp(-g))
    backward: d_up = grad * gate * s,   d_gate = grad * up * (s + gate * s * (1 - s)),   s = sigmoid(gate)

The backward recomputes s from gate (the forward saves nothing) and writes both gradients in one pass; the
NumPy route (the reference) takes about ten whole-array passes and temporaries (10% of a SmolLM2 LoRA step).
The packed variants take gate and up side by side in one array, packed (..., 2F) = [gate | up], which is what
one product with the gate and up weights stacked gives (nn/mlp.py SwiGLU), and the backward returns the two
gradients side by side in the same layout, ready for one product with the stacked weights.

Phi is written with erfc rather than (1 + erf) / 2 so that it keeps its relative precision for
negative x (1 + erf(x) cancels to 0 long before Phi underflows). `gelu_backward` takes x, not
a saved Phi: recomputing costs no memory. Any shape; the output has
x's shape and dtype (float32 or float64).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc

from minifm.kernels._backend import compiled


def _check_float(x, name: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * erfc(-x / math.sqrt(2.0))


def gelu_reference(x: np.ndarray) -> np.ndarray:
    """x * Phi(x), elementwise, in x's dtype."""
    _check_float(x, "x")
    return (x * _normal_cdf(x)).astype(x.dtype, copy=False)


def gelu_backward_reference(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dy * (Phi(x) + x phi(x)), elementwise, in x's dtype."""
    _check_pair(x, dy)
    density = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return (dy * (_normal_cdf(x) + x * density)).astype(x.dtype, copy=False)


def gelu_with_derivative_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x * Phi(x), Phi(x) + x phi(x)), elementwise, in x's dtype: the output and its derivative."""
    _check_float(x, "x")
    cdf = _normal_cdf(x)
    density = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return (x * cdf).astype(x.dtype, copy=False), (cdf + x * density).astype(x.dtype, copy=False)


def _check_pair(x, dy) -> None:
    _check_float(x, "x")
    _check_float(dy, "dy")
    if x.shape != dy.shape:
        raise ValueError(f"dy shape {dy.shape} must equal x shape {x.shape}")
    if x.dtype != dy.dtype:
        raise TypeError(f"dy dtype {dy.dtype} must equal x dtype {x.dtype}")


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU of x; the compiled kernel when available."""
    kernel = compiled("activations")
    if kernel is None:
        return gelu_reference(x)
    _check_float(x, "x")
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    kernel.gelu_forward(flat, out)
    return out.reshape(x.shape)


def gelu_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Gradient of exact GELU at x times dy; the compiled kernel when available."""
    kernel = compiled("activations")
    if kernel is None:
        return gelu_backward_reference(x, dy)
    _check_pair(x, dy)
    flat_x = np.ascontiguousarray(x).reshape(-1)
    flat_dy = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty_like(flat_x)
    kernel.gelu_backward(flat_x, flat_dy, dx)
    return dx.reshape(x.shape)


def gelu_with_derivative(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gelu(x), d gelu / dx) in one pass; the compiled kernel when available.

    For training: the autograd node keeps the derivative (one more activation-sized array) and its
    backward is dy * derivative, instead of recomputing Phi(x) from x (an erfc and two exps).
    """
    kernel = compiled("activations")
    if kernel is None:
        return gelu_with_derivative_reference(x)
    _check_float(x, "x")
    flat = np.ascontiguousarray(x).reshape(-1)
    out, dydx = np.empty_like(flat), np.empty_like(flat)
    kernel.gelu_forward_with_derivative(flat, out, dydx)
    return out.reshape(x.shape), dydx.reshape(x.shape)


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow warnings: exp(-|x|) only, split by the sign of x."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def silu_mul_reference(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up = (gate * sigmoid(gate)) * up, elementwise with broadcasting, in gate's dtype."""
    _check_float(gate, "gate")
    _check_float(up, "up")
    return (gate * _stable_sigmoid(gate) * up).astype(gate.dtype, copy=False)


def silu_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up; the compiled kernel for arrays of one shape and dtype, else the reference."""
    kernel = compiled("activations")
    if kernel is None or not isinstance(gate, np.ndarray) or not isinstance(up, np.ndarray) \
            or gate.shape != up.shape or gate.dtype != up.dtype or gate.dtype not in (np.float32, np.float64):
        return silu_mul_reference(gate, up)
    flat_gate = np.ascontiguousarray(gate).reshape(-1)
    flat_up = np.ascontiguousarray(up).reshape(-1)
    out = np.empty_like(flat_gate)
    kernel.silu_mul_forward(flat_gate, flat_up, out)
    return out.reshape(gate.shape)


def silu_mul_backward_reference(gate: np.ndarray, up: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d_gate, d_up) of silu(gate) * up for the upstream gradient grad; arrays of one shape."""
    _check_float(gate, "gate")
    _check_float(up, "up")
    s = _stable_sigmoid(gate)
    d_up = grad * (gate * s)
    d_gate = grad * up * (s * (1 + gate * (1 - s)))
    return d_gate.astype(gate.dtype, copy=False), d_up.astype(gate.dtype, copy=False)


def silu_mul_backward(gate: np.ndarray, up: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d_gate, d_up) of silu(gate) * up; the compiled one-pass kernel when the three arrays share one shape and
    dtype, else the reference."""
    kernel = compiled("activations")
    same = all(isinstance(a, np.ndarray) and a.shape == gate.shape and a.dtype == gate.dtype for a in (up, grad))
    if kernel is None or not isinstance(gate, np.ndarray) or not same or gate.dtype not in (np.float32, np.float64):
        return silu_mul_backward_reference(gate, up, grad)
    flat_gate = np.ascontiguousarray(gate).reshape(-1)  # (n,)
    flat_up = np.ascontiguousarray(up).reshape(-1)  # (n,)
    flat_grad = np.ascontiguousarray(grad).reshape(-1)  # (n,)
    d_gate, d_up = np.empty_like(flat_gate), np.empty_like(flat_gate)  # (n,) each
    kernel.silu_mul_backward(flat_gate, flat_up, flat_grad, d_gate, d_up)
    return d_gate.reshape(gate.shape), d_up.reshape(gate.shape)


def _halves(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gate, up): the two halves of packed's last axis, (..., F) views each."""
    if packed.ndim < 1 or packed.shape[-1] % 2:
        raise ValueError(f"packed must hold gate and up side by side on its last axis (an even size), got shape "
                         f"{packed.shape}")
    hidden = packed.shape[-1] // 2
    return packed[..., :hidden], packed[..., hidden:]


def silu_mul_packed_reference(packed: np.ndarray) -> np.ndarray:
    """silu(gate) * up for packed (..., 2F) = [gate | up]; (..., F)."""
    return silu_mul_reference(*_halves(packed))


def silu_mul_packed_backward_reference(packed: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """[d_gate | d_up] (..., 2F) for packed (..., 2F) = [gate | up] and the output's gradient grad (..., F)."""
    gate, up = _halves(packed)
    return np.concatenate(silu_mul_backward_reference(gate, up, grad), axis=-1)


def _packed_rows(packed: np.ndarray) -> np.ndarray:
    """packed as C-contiguous (N, 2F) rows (a copy only when it is not contiguous)."""
    return np.ascontiguousarray(packed).reshape(math.prod(packed.shape[:-1]), packed.shape[-1])


def silu_mul_packed(packed: np.ndarray) -> np.ndarray:
    """silu(gate) * up for packed (..., 2F) = [gate | up]; the compiled kernel for float32 / float64."""
    _check_float(packed, "packed")
    gate, _ = _halves(packed)
    kernel = compiled("activations")
    if kernel is None:
        return silu_mul_packed_reference(packed)
    rows = _packed_rows(packed)  # (N, 2F)
    out = np.empty((rows.shape[0], gate.shape[-1]), dtype=packed.dtype)  # (N, F)
    kernel.silu_mul_packed_forward(rows, out)
    return out.reshape(gate.shape)


def silu_mul_packed_backward(packed: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """[d_gate | d_up] (..., 2F) of silu_mul_packed for the output's gradient grad (..., F), in one pass."""
    _check_float(packed, "packed")
    gate, _ = _halves(packed)
    if not isinstance(grad, np.ndarray) or grad.shape != gate.shape:
        raise ValueError(f"grad must have the output's shape {gate.shape}, got {np.shape(grad)}")
    kernel = compiled("activations")
    if kernel is None:
        return silu_mul_packed_backward_reference(packed, grad)
    rows = _packed_rows(packed)  # (N, 2F)
    grad_rows = np.ascontiguousarray(grad, dtype=packed.dtype).reshape(rows.shape[0], gate.shape[-1])  # (N, F)
    d_packed = np.empty_like(rows)  # (N, 2F)
    kernel.silu_mul_packed_backward(rows, grad_rows, d_packed)
    return d_packed.reshape(packed.shape)
