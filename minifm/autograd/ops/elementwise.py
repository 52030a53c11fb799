"""Elementwise Functions: arithmetic with NumPy broadcasting, and the pointwise nonlinearities.

Each binary op's backward undoes broadcasting with `unbroadcast`. The Functions share one form on
purpose (forward saves what the derivative needs, backward returns each input's share): each
states its own derivative in full, next to its forward. Conventions where the derivative
is not defined follow PyTorch: relu'(0) = 0, abs'(0) = 0, clip passes gradient on the closed
interval [min, max], maximum/minimum split the gradient equally on ties.
"""
from __future__ import annotations

import math

import numpy as np

from minifm.autograd.function import Function, unbroadcast
from minifm.kernels import activations as activation_kernels


def _shape_of(x) -> tuple[int, ...]:
    return np.shape(x)


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.dtype)


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape_of(a), _shape_of(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        return (
            unbroadcast(grad, shape_a) if ctx.needs_input_grad[0] else None,
            unbroadcast(grad, shape_b) if ctx.needs_input_grad[1] else None,
        )


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape_of(a), _shape_of(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        return (
            unbroadcast(grad, shape_a) if ctx.needs_input_grad[0] else None,
            unbroadcast(-grad, shape_b) if ctx.needs_input_grad[1] else None,
        )


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.a, ctx.b
        return (
            unbroadcast(grad * b, _shape_of(a)) if ctx.needs_input_grad[0] else None,
            unbroadcast(grad * a, _shape_of(b)) if ctx.needs_input_grad[1] else None,
        )


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return np.divide(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.a, ctx.b
        grad_a = unbroadcast(grad / b, _shape_of(a)) if ctx.needs_input_grad[0] else None
        grad_b = unbroadcast(-grad * a / (b * b), _shape_of(b)) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return np.negative(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    """base ** exponent; d/d(base) = e * base^(e-1), d/d(exponent) = out * log(base).

    Conventions (torch's): where the exponent is 0 the base gets gradient 0 (not 0 * base^-1 = NaN at
    base 0); where the base is 0 and the exponent is >= 0 the exponent gets gradient 0; a negative
    base gives the exponent a NaN gradient (log of a negative number), which backward reports.
    """

    @staticmethod
    def forward(ctx, base, exponent):
        out = np.power(base, exponent)
        ctx.base, ctx.exponent, ctx.out = base, exponent, out
        return out

    @staticmethod
    def backward(ctx, grad):
        base, exponent, out = ctx.base, ctx.exponent, ctx.out
        grad_base = grad_exponent = None
        if ctx.needs_input_grad[0]:
            with np.errstate(divide="ignore", invalid="ignore"):
                local = exponent * np.power(base, exponent - 1)
            local = np.where(exponent == 0, np.zeros((), dtype=local.dtype), local)
            grad_base = unbroadcast(grad * local, _shape_of(base))
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_base = np.log(base)
            log_base = np.where((base == 0) & (exponent >= 0), np.zeros((), dtype=log_base.dtype), log_base)
            with np.errstate(invalid="ignore"):
                local = out * log_base
            local = np.where((base == 0) & (exponent >= 0), np.zeros((), dtype=local.dtype), local)
            grad_exponent = unbroadcast(grad * local, _shape_of(exponent))
        return grad_base, grad_exponent


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.out = np.exp(x)
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.out


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.x


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.out = np.sqrt(x)
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        return grad / (2 * ctx.out)


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.sign = np.sign(x)
        return np.abs(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.sign


class Clip(Function):
    @staticmethod
    def forward(ctx, x, low, high):
        ctx.inside = np.ones(x.shape, dtype=bool)
        if low is not None:
            ctx.inside &= x >= low
        if high is not None:
            ctx.inside &= x <= high
        return np.clip(x, low, high)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.inside, None, None


def _selection_backward(ctx, grad, a_selected: np.ndarray):
    """maximum / minimum: the gradient goes to the operand that was selected, half to each on ties."""
    a, b = ctx.a, ctx.b
    share_a = (a_selected + 0.5 * (a == b)).astype(grad.dtype)
    return (
        unbroadcast(grad * share_a, _shape_of(a)) if ctx.needs_input_grad[0] else None,
        unbroadcast(grad * (1 - share_a), _shape_of(b)) if ctx.needs_input_grad[1] else None,
    )


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx, grad):
        return _selection_backward(ctx, grad, ctx.a > ctx.b)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return np.minimum(a, b)

    @staticmethod
    def backward(ctx, grad):
        return _selection_backward(ctx, grad, ctx.a < ctx.b)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.out = np.tanh(x)
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        return grad * (1 - ctx.out * ctx.out)


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow warnings for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.out = _stable_sigmoid(x)
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.out * (1 - ctx.out)


class Relu(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.positive = x > 0
        return np.where(ctx.positive, x, 0).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.positive


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class Gelu(Function):
    """GELU: x * Phi(x) exactly (erf), or the tanh approximation used by GPT-2 (approximate="tanh")."""

    @staticmethod
    def forward(ctx, x, approximate="none"):
        ctx.x, ctx.approximate = x, approximate
        if approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
            ctx.t = np.tanh(inner)
            return (0.5 * x * (1 + ctx.t)).astype(x.dtype, copy=False)
        if ctx.needs_input_grad and ctx.needs_input_grad[0]:
            # training: one fused pass also yields dy/dx, so backward is a single multiply
            out, ctx.dydx = activation_kernels.gelu_with_derivative(x)
            return out
        return activation_kernels.gelu(x)  # fused kernel

    @staticmethod
    def backward(ctx, grad):
        x = ctx.x
        if ctx.approximate == "tanh":
            t = ctx.t
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            local = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner
            return (grad * local).astype(grad.dtype, copy=False)
        dydx = getattr(ctx, "dydx", None)
        if dydx is None:  # forward ran without needing the gradient: recompute Phi(x) from x
            return activation_kernels.gelu_backward(x, np.asarray(grad, dtype=x.dtype))
        return np.asarray(grad, dtype=x.dtype) * dydx


class Silu(Function):
    """SiLU / swish: x * sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.x, ctx.s = x, _stable_sigmoid(x)
        return x * ctx.s

    @staticmethod
    def backward(ctx, grad):
        s = ctx.s
        return grad * (s * (1 + ctx.x * (1 - s)))


class SiluMul(Function):
    """silu(gate) * up in one node (SwiGLU's gate): the forward is one fused pass
    (minifm.kernels.activations.silu_mul), and so is the backward when the operands share a shape
    (silu_mul_backward); with s = sigmoid(gate), backward:
    d gate = grad * up * s * (1 + gate * (1 - s)),   d up = grad * gate * s."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.gate, ctx.up = gate, up
        return activation_kernels.silu_mul(gate, up)

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.gate, ctx.up
        if gate.shape == up.shape == grad.shape:
            return activation_kernels.silu_mul_backward(gate, up, np.asarray(grad, dtype=gate.dtype))  # one pass
        s = _stable_sigmoid(gate)  # broadcasting operands: the NumPy formulas, then unbroadcast
        d_gate = d_up = None
        if ctx.needs_input_grad[0]:
            d_gate = unbroadcast(grad * up * (s * (1 + gate * (1 - s))), _shape_of(gate))
        if ctx.needs_input_grad[1]:
            d_up = unbroadcast(grad * (gate * s), _shape_of(up))
        return d_gate, d_up


class SiluMulPacked(Function):
    """silu(gate) * up with gate and up side by side in one array, packed (..., 2F) = [gate | up]: what one
    product with SwiGLU's two weights stacked gives. Backward returns [d_gate | d_up] (..., 2F) in the same
    layout, so one product with the stacked weights gives the input's gradient (kernels/activations.py)."""

    @staticmethod
    def forward(ctx, packed):
        ctx.packed = packed
        return activation_kernels.silu_mul_packed(packed)

    @staticmethod
    def backward(ctx, grad):
        return activation_kernels.silu_mul_packed_backward(ctx.packed, np.asarray(grad, dtype=ctx.packed.dtype))


class Softplus(Function):
    """log(1 + exp(beta x)) / beta, linear above `threshold` like torch.nn.functional.softplus."""

    @staticmethod
    def forward(ctx, x, beta=1.0, threshold=20.0):
        scaled = beta * x
        ctx.linear = scaled > threshold
        ctx.s = _stable_sigmoid(scaled)
        soft = np.logaddexp(0, scaled) / beta
        return np.where(ctx.linear, x, soft).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        return grad * np.where(ctx.linear, 1, ctx.s).astype(grad.dtype, copy=False)


class Where(Function):
    """where(condition, a, b): gradient flows to a where condition holds, to b elsewhere."""

    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.condition = np.asarray(condition, dtype=bool)
        ctx.shapes = (_shape_of(a), _shape_of(b))
        return np.where(ctx.condition, a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        zero = np.zeros((), dtype=grad.dtype)
        return (
            None,
            unbroadcast(np.where(ctx.condition, grad, zero), shape_a) if ctx.needs_input_grad[1] else None,
            unbroadcast(np.where(ctx.condition, zero, grad), shape_b) if ctx.needs_input_grad[2] else None,
        )
