"""Elementwise ops: forward equals the NumPy expression, gradient equals central differences (float64),
on hypothesis-drawn shapes with broadcasting and size-1 axes."""
import math

import numpy as np
import pytest
from autograd_testing import GRAD_EXAMPLES, check_forward_and_grad
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import erf
from strategies import (
    autograd_arrays, autograd_shapes, broadcast_pairs, off_grid_arrays, positive_arrays,
)

import minifm as mf
import minifm.functional as F
from minifm.autograd import ops


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name -> (minifm op, NumPy reference, strategy for one input of a given shape)
UNARY = {
    "neg": (lambda x: -x, lambda x: -x, autograd_arrays),
    "exp": (lambda x: x.exp(), np.exp, autograd_arrays),
    "log": (lambda x: x.log(), np.log, positive_arrays),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, positive_arrays),
    "abs": (lambda x: abs(x), np.abs, off_grid_arrays),
    "tanh": (lambda x: x.tanh(), np.tanh, autograd_arrays),
    "sigmoid": (lambda x: x.sigmoid(), _sigmoid, autograd_arrays),
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0), off_grid_arrays),
    "gelu_erf": (F.gelu, lambda x: x * 0.5 * (1 + erf(x / math.sqrt(2))), autograd_arrays),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        autograd_arrays,
    ),
    "silu": (F.silu, lambda x: x * _sigmoid(x), autograd_arrays),
    "softplus": (F.softplus, lambda x: np.log1p(np.exp(x)), autograd_arrays),
    "softplus_beta": (
        lambda x: F.softplus(x, beta=2.0, threshold=3.0),
        lambda x: np.where(2 * x > 3.0, x, np.log1p(np.exp(2 * x)) / 2),
        lambda shape: off_grid_arrays(shape, offset=0.1),  # keeps 2x off the threshold 3
    ),
    "clip": (lambda x: x.clip(-0.45, 1.05), lambda x: np.clip(x, -0.45, 1.05), off_grid_arrays),
    "clip_min_only": (lambda x: mf.clip(x, min=0.3), lambda x: np.maximum(x, 0.3), off_grid_arrays),
    "square": (lambda x: x**2, lambda x: x**2, autograd_arrays),
    "pow_scalar": (lambda x: x**1.5, lambda x: x**1.5, positive_arrays),
    "rpow": (lambda x: 2.0**x, lambda x: 2.0**x, autograd_arrays),
    "scalar_arith": (lambda x: 3 - 2 * x / 4 + 1, lambda x: 3 - 2 * x / 4 + 1, autograd_arrays),
    "rdiv": (lambda x: 1.5 / x, lambda x: 1.5 / x, positive_arrays),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_shapes)
def test_unary_op_matches_numpy_and_finite_differences(name, data, shape):
    op, reference, strategy = UNARY[name]
    x = data.draw(strategy(shape))
    check_forward_and_grad(op, reference, x)


# name -> (minifm op, NumPy reference, strategy for a, strategy for b)
BINARY = {
    "add": (lambda a, b: a + b, np.add, autograd_arrays, autograd_arrays),
    "sub": (lambda a, b: a - b, np.subtract, autograd_arrays, autograd_arrays),
    "mul": (lambda a, b: a * b, np.multiply, autograd_arrays, autograd_arrays),
    "div": (lambda a, b: a / b, np.divide, autograd_arrays, positive_arrays),
    "pow_tensor_exponent": (lambda a, b: a**b, np.power, positive_arrays, autograd_arrays),
    "maximum": (mf.maximum, np.maximum, off_grid_arrays, lambda s: off_grid_arrays(s, offset=0.0)),
    "minimum": (mf.minimum, np.minimum, off_grid_arrays, lambda s: off_grid_arrays(s, offset=0.0)),
    "silu_mul": (ops.silu_mul, lambda g, u: g * _sigmoid(g) * u, autograd_arrays, autograd_arrays),  # SwiGLU's gate
}


@pytest.mark.parametrize("name", sorted(BINARY))
@GRAD_EXAMPLES
@given(data=st.data(), shapes=broadcast_pairs)
def test_binary_op_broadcasts_and_matches_finite_differences(name, data, shapes):
    op, reference, strategy_a, strategy_b = BINARY[name]
    shape_a, shape_b = shapes.input_shapes
    a, b = data.draw(strategy_a(shape_a)), data.draw(strategy_b(shape_b))
    check_forward_and_grad(op, reference, a, b)


@GRAD_EXAMPLES
@given(data=st.data(), shapes=broadcast_pairs)
def test_where_routes_gradient_by_condition(data, shapes):
    shape_a, shape_b = shapes.input_shapes
    a, b = data.draw(autograd_arrays(shape_a)), data.draw(autograd_arrays(shape_b))
    condition = data.draw(off_grid_arrays(shapes.result_shape)) > 0
    check_forward_and_grad(lambda x, y: mf.where(condition, x, y), lambda x, y: np.where(condition, x, y), a, b)


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_shapes)
def test_masked_fill_blocks_gradient_of_filled_entries(data, shape):
    x = data.draw(autograd_arrays(shape))
    mask = data.draw(off_grid_arrays(shape)) > 0
    check_forward_and_grad(lambda t: t.masked_fill(mask, -7.0), lambda t: np.where(mask, -7.0, t), x)


def test_nondifferentiable_point_conventions_follow_torch():
    """relu'(0) = 0, abs'(0) = 0, clip passes gradient at its bounds, max/min split ties in half."""
    x = mf.tensor([0.0, -1.0, 2.0], requires_grad=True)
    (x.relu().sum() + abs(x).sum() + x.clip(-1.0, 2.0).sum()).backward()
    np.testing.assert_array_equal(x.grad, [0 + 0 + 1, 0 - 1 + 1, 1 + 1 + 1])
    a = mf.tensor([1.0, 2.0], requires_grad=True)
    b = mf.tensor([1.0, 3.0], requires_grad=True)
    mf.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.5, 0.0])
    np.testing.assert_array_equal(b.grad, [0.5, 1.0])


def test_pow_conventions_at_zero_base_and_zero_exponent():
    base = mf.tensor([0.0, 2.0], requires_grad=True, dtype=np.float64)
    exponent = mf.tensor([0.0, 3.0], requires_grad=True, dtype=np.float64)
    (base**exponent).sum().backward()
    np.testing.assert_allclose(base.grad, [0.0, 12.0])
    np.testing.assert_allclose(exponent.grad, [0.0, 8.0 * np.log(2.0)])


def test_softplus_and_sigmoid_do_not_overflow_at_extremes():
    x = mf.tensor([-1000.0, 0.0, 1000.0], requires_grad=True, dtype=np.float64)
    with np.errstate(over="raise"):
        y = ops.softplus(x) + ops.sigmoid(x)
    np.testing.assert_allclose(y.numpy(), [0.0, np.log(2) + 0.5, 1001.0])
