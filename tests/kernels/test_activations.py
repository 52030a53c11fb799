"""GELU kernel: compiled == reference (float64 tightly, float32 to about one ulp of the float64 truth),
NaN/inf behaviour, the multi-block parallel path, finite differences of the derivative, and torch.
SwiGLU's gate silu(gate) * up: compiled == reference, the same tails and NaN, and torch."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernel_helpers import central_difference, compiled_path
from minifm.kernels import activations as act


@st.composite
def activations_arrays(draw):
    """Float arrays of 0-3 axes (sizes 0-30) with values in [-30, 30]: the tails where Phi underflows included."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=30))
    return draw(hnp.arrays(dtype, shape, elements=st.floats(-30, 30, width=32)))


def _assert_close_to_truth(result, truth, dtype):
    """float64: 1e-12 relative; float32: 4e-7 relative to the float64 truth plus the smallest normal."""
    if dtype == np.float64:
        np.testing.assert_allclose(result, truth, rtol=1e-12, atol=1e-300)
    else:
        np.testing.assert_allclose(result, truth, rtol=4e-7, atol=float(np.finfo(np.float32).tiny) * 4)


@given(x=activations_arrays(), seed=st.integers(0, 2**31 - 1))
def test_compiled_matches_the_float64_reference(x, seed):
    dy = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
    truth = act.gelu_reference(x.astype(np.float64))
    truth_grad = act.gelu_backward_reference(x.astype(np.float64), dy.astype(np.float64))
    with compiled_path("activations"):
        y = act.gelu(x)
        dx = act.gelu_backward(x, dy)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert dx.shape == x.shape and dx.dtype == x.dtype
    _assert_close_to_truth(y, truth, x.dtype)
    # the derivative's two terms cancel near x = -0.75, so the error is relative to |dy| not to dx
    tolerance = 1e-12 if x.dtype == np.float64 else 6e-7
    np.testing.assert_allclose(dx, truth_grad, rtol=tolerance, atol=tolerance * float(np.max(np.abs(dy), initial=0)))


def test_reference_is_the_erf_formula_where_it_does_not_cancel(rng):
    x = rng.uniform(-3, 6, size=200)
    erf = np.vectorize(math.erf)
    np.testing.assert_allclose(act.gelu_reference(x), x * 0.5 * (1 + erf(x / math.sqrt(2))), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_blocks_on_the_parallel_path_match(dtype, rng):
    x = (rng.standard_normal(300_001) * 4).astype(dtype)  # ~37 blocks of 8192, not a multiple of the block
    dy = rng.standard_normal(x.shape).astype(dtype)
    with compiled_path("activations"):
        y, dx = act.gelu(x), act.gelu_backward(x, dy)
    _assert_close_to_truth(y, act.gelu_reference(x.astype(np.float64)), dtype)
    grad_truth = act.gelu_backward_reference(x.astype(np.float64), dy.astype(np.float64))
    tolerance = 1e-12 if dtype == np.float64 else 6e-7
    np.testing.assert_allclose(dx, grad_truth, rtol=tolerance, atol=tolerance * float(np.abs(dy).max()))


def _every_float32_between(low: float, high: float) -> np.ndarray:
    """Every float32 value in [low, high] (low < high, same sign), in order."""
    bits = np.array([low, high], dtype=np.float32).view(np.int32)
    return np.arange(bits.min(), bits.max() + 1, dtype=np.int32).view(np.float32)


def test_float32_gelu_on_every_float_of_its_hardest_ranges():
    """csrc/_gelu.h computes in float32; its error peaks (checked over all of [-30, 30]) deep in the tail
    near x = -10.9, near x = -1.2 where 1 / (1 + z/2) is most sensitive, and near 0 where P(t) is
    evaluated farthest from its centre. Every float there, against the float64 truth."""
    x = np.concatenate([_every_float32_between(-11.0, -10.75), _every_float32_between(-1.25, -1.125),
                        _every_float32_between(1.3e-3, 1.35e-3), -_every_float32_between(1.3e-3, 1.35e-3)])
    with compiled_path("activations"):
        y, dydx = act.gelu_with_derivative(x)
    truth, truth_dydx = act.gelu_with_derivative_reference(x.astype(np.float64))
    _assert_close_to_truth(y, truth, np.float32)
    np.testing.assert_allclose(dydx, truth_dydx, rtol=0, atol=1.5e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_inputs_follow_the_reference(dtype, kernel_path):
    x = np.array([np.nan, np.inf, -np.inf, -1e30, 1e30, 0.0, -0.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf * 0 in the reference
        y = act.gelu(x)
        dx = act.gelu_backward(x, np.ones_like(x))
    np.testing.assert_array_equal(np.isnan(y), [True, False, True, False, False, False, False])
    assert y[1] == np.inf
    np.testing.assert_allclose(y[3:], np.array([0, 1e30, 0, 0], dtype=dtype), rtol=1e-7, atol=0)
    np.testing.assert_array_equal(np.isnan(dx), [True, True, True, False, False, False, False])
    np.testing.assert_allclose(dx[3:], [0, 1, 0.5, 0.5], rtol=1e-7, atol=0)


def test_backward_matches_finite_differences_in_float64(kernel_path, rng):
    x = rng.uniform(-5, 5, size=(3, 7))
    dy = rng.standard_normal(x.shape)
    numeric = central_difference(lambda values: float(np.sum(act.gelu(values) * dy)), x.copy())
    np.testing.assert_allclose(act.gelu_backward(x, dy), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_gelu(dtype, kernel_path, rng):
    torch = pytest.importorskip("torch", reason="torch is the oracle for GELU semantics")
    x = (rng.standard_normal((64, 33)) * 3).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.gelu(tx)
    out.backward(torch.tensor(dy))
    tolerance = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(act.gelu(x), out.detach().numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(act.gelu_backward(x, dy), tx.grad.numpy(), rtol=tolerance, atol=tolerance)


def test_bad_inputs_raise_clear_errors(kernel_path):
    with pytest.raises(TypeError, match="x must be float32 or float64, got dtype int64"):
        act.gelu(np.arange(3))
    with pytest.raises(TypeError, match="x must be a numpy array"):
        act.gelu([1.0, 2.0])
    with pytest.raises(ValueError, match=r"dy shape \(2,\) must equal x shape \(3,\)"):
        act.gelu_backward(np.zeros(3), np.zeros(2))
    with pytest.raises(TypeError, match="dy dtype float32 must equal x dtype float64"):
        act.gelu_backward(np.zeros(3), np.zeros(3, dtype=np.float32))


@given(x=activations_arrays(), seed=st.integers(0, 2**31 - 1))
def test_output_with_derivative_matches_the_float64_reference(x, seed):
    """gelu_with_derivative: the same output as gelu, and dy * derivative as accurate as gelu_backward."""
    dy = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
    truth_grad = act.gelu_backward_reference(x.astype(np.float64), dy.astype(np.float64))
    with compiled_path("activations"):
        y, dydx = act.gelu_with_derivative(x)
        np.testing.assert_array_equal(y, act.gelu(x))
    assert dydx.shape == x.shape and dydx.dtype == x.dtype
    tolerance = 1e-12 if x.dtype == np.float64 else 6e-7
    np.testing.assert_allclose(dy * dydx, truth_grad, rtol=tolerance,
                               atol=tolerance * float(np.max(np.abs(dy), initial=0)))


def test_reference_output_with_derivative_is_output_and_backward(rng):
    x = rng.uniform(-8, 8, size=(5, 9))
    y, dydx = act.gelu_with_derivative_reference(x)
    np.testing.assert_array_equal(y, act.gelu_reference(x))
    np.testing.assert_allclose(dydx, act.gelu_backward_reference(x, np.ones_like(x)), rtol=1e-15, atol=1e-300)


# ------------------------------------------------------------------------------------------ silu(gate) * up


@given(gate=activations_arrays(), seed=st.integers(0, 2**31 - 1))
def test_silu_mul_compiled_matches_the_float64_reference(gate, seed):
    up = np.random.default_rng(seed).standard_normal(gate.shape).astype(gate.dtype)
    truth = act.silu_mul_reference(gate.astype(np.float64), up.astype(np.float64))
    with compiled_path("activations"):
        out = act.silu_mul(gate, up)
    assert out.shape == gate.shape and out.dtype == gate.dtype
    if gate.dtype == np.float64:
        np.testing.assert_allclose(out, truth, rtol=1e-13, atol=1e-300)
    else:
        np.testing.assert_allclose(out, truth, rtol=4e-7, atol=float(np.finfo(np.float32).tiny) * 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_mul_tails_nan_and_many_blocks(dtype, kernel_path, rng):
    gate = np.array([-1e30, -800.0, -100.0, -1.0, 0.0, 1.0, 100.0, 800.0, np.nan], dtype=dtype)
    up = np.full(gate.shape, 3.0, dtype=dtype)
    out = act.silu_mul(gate, up)
    np.testing.assert_array_equal(out[[0, 1, 4]], [0.0, 0.0, 0.0])  # exp overflows: silu -> -0
    np.testing.assert_allclose(out[[3, 5, 6, 7]], 3.0 * np.array([-1 / (1 + math.e), 1 / (1 + 1 / math.e), 100.0, 800.0]),
                               rtol=1e-6)
    assert abs(out[2]) < 1e-30 and np.isnan(out[8])
    big_gate = rng.standard_normal(200_000).astype(dtype) * 4  # several kernel blocks, the parallel path
    big_up = rng.standard_normal(200_000).astype(dtype)
    np.testing.assert_allclose(act.silu_mul(big_gate, big_up), act.silu_mul_reference(big_gate, big_up),
                               rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-30)


@given(gate=activations_arrays(), seed=st.integers(0, 2**31 - 1))
def test_silu_mul_backward_compiled_matches_the_float64_reference(gate, seed):
    rng = np.random.default_rng(seed)
    up, grad = (rng.standard_normal(gate.shape).astype(gate.dtype) for _ in range(2))
    truth_gate, truth_up = act.silu_mul_backward_reference(*(a.astype(np.float64) for a in (gate, up, grad)))
    with compiled_path("activations"):
        d_gate, d_up = act.silu_mul_backward(gate, up, grad)
    assert d_gate.shape == d_up.shape == gate.shape and d_gate.dtype == d_up.dtype == gate.dtype
    rtol = 1e-13 if gate.dtype == np.float64 else 4e-7
    # silu'(g) = s + g s (1 - s) crosses zero near g = -1.28, where its two terms cancel: there the error is
    # a few ulps of the terms (|s| <= 1), i.e. absolute in units of |grad * up|, not relative to the result
    scale = np.abs(grad.astype(np.float64) * up)
    assert np.all(np.abs(d_gate - truth_gate) <= rtol * np.abs(truth_gate) + rtol * scale + 1e-300)
    np.testing.assert_allclose(d_up, truth_up, rtol=rtol, atol=float(np.finfo(gate.dtype).tiny) * 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_mul_backward_tails_nan_many_blocks_and_torch(dtype, kernel_path, rng):
    torch = pytest.importorskip("torch")
    gate = np.array([-1e30, -800.0, -1.0, 0.0, 1.0, 100.0, 800.0, np.nan], dtype=dtype)
    ones = np.ones_like(gate)
    d_gate, d_up = act.silu_mul_backward(gate, 2 * ones, ones)
    np.testing.assert_array_equal(d_gate[:2], [0.0, 0.0])  # s = 0 below exp's overflow point
    np.testing.assert_array_equal(d_up[:2], [0.0, 0.0])
    np.testing.assert_allclose(d_up[[3, 5, 6]], [0.0, 100.0, 800.0], rtol=1e-6)
    np.testing.assert_allclose(d_gate[[3, 5, 6]], [1.0, 2.0, 2.0], rtol=1e-6)  # silu'(0) = 1/2, silu' -> 1
    assert np.isnan(d_gate[7]) and np.isnan(d_up[7])
    gate, up, grad = (rng.standard_normal((160, 1536)).astype(dtype) * 3 for _ in range(3))  # many blocks
    gate_t, up_t = torch.tensor(gate, requires_grad=True), torch.tensor(up, requires_grad=True)
    (torch.nn.functional.silu(gate_t) * up_t).backward(torch.tensor(grad))
    d_gate, d_up = act.silu_mul_backward(gate, up, grad)
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(d_up, up_t.grad.numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(d_gate, gate_t.grad.numpy(), rtol=tolerance, atol=tolerance * 10)


@given(gate=activations_arrays(), seed=st.integers(0, 2**31 - 1))
def test_silu_mul_packed_compiled_matches_the_unpacked_kernels(gate, seed):
    """[gate | up] side by side in one array: the packed kernels give the same bits as the flat ones."""
    gate = gate.reshape(1) if gate.ndim == 0 else gate  # packing needs a last axis
    rng = np.random.default_rng(seed)
    up, grad = (rng.standard_normal(gate.shape).astype(gate.dtype) for _ in range(2))
    packed = np.concatenate([gate, up], axis=-1)  # (..., 2F)
    with compiled_path("activations"):
        out = act.silu_mul_packed(packed)
        d_packed = act.silu_mul_packed_backward(packed, grad)
        np.testing.assert_array_equal(out, act.silu_mul(gate, up))
        np.testing.assert_array_equal(d_packed, np.concatenate(act.silu_mul_backward(gate, up, grad), axis=-1))
    assert out.shape == gate.shape and d_packed.shape == packed.shape and d_packed.dtype == gate.dtype
    rtol = 1e-13 if gate.dtype == np.float64 else 4e-7
    np.testing.assert_allclose(out, act.silu_mul_packed_reference(packed), rtol=rtol, atol=1e-30)


def test_silu_mul_packed_rejects_odd_widths_and_wrong_gradients():
    with pytest.raises(ValueError, match=r"even size.*\(2, 5\)"):
        act.silu_mul_packed(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"grad must have the output's shape \(2, 3\), got \(2, 6\)"):
        act.silu_mul_packed_backward(np.zeros((2, 6), np.float32), np.zeros((2, 6), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_mul_matches_torch(dtype, kernel_path, rng):
    torch = pytest.importorskip("torch")
    gate, up = (rng.standard_normal((64, 1536)).astype(dtype) * 3 for _ in range(2))
    theirs = (torch.nn.functional.silu(torch.tensor(gate)) * torch.tensor(up)).numpy()
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(act.silu_mul(gate, up), theirs, rtol=tolerance, atol=tolerance)
