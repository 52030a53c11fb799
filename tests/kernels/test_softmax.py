"""Softmax / log-softmax kernels: compiled == reference, stability, finite differences, torch."""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernel_helpers import central_difference, compiled_path, rtol_for
from minifm.kernels import softmax as sm

FAMILIES = [
    ("softmax", sm.softmax, sm.softmax_reference, sm.softmax_backward, sm.softmax_backward_reference),
    ("log_softmax", sm.log_softmax, sm.log_softmax_reference, sm.log_softmax_backward, sm.log_softmax_backward_reference),
]


@st.composite
def logits_with_holes(draw):
    """Float arrays (1-3 axes) with entries in [-60, 60] and some entries (even whole rows) at -inf."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40))
    x = draw(hnp.arrays(dtype, shape, elements=st.floats(-60, 60, width=32)))
    holes = draw(hnp.arrays(np.bool_, shape, elements=st.booleans())) & draw(st.booleans())
    return np.where(holes, -np.inf, x).astype(dtype)


@pytest.mark.parametrize("name, forward, forward_ref, backward, backward_ref", FAMILIES)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=logits_with_holes(), seed=st.integers(0, 2**31 - 1))
def test_compiled_matches_reference(name, forward, forward_ref, backward, backward_ref, x, seed):
    with compiled_path("softmax"):
        rtol = rtol_for(x.dtype)
        y, y_ref = forward(x), forward_ref(x)
        assert y.dtype == x.dtype and y.shape == x.shape
        finite = np.isfinite(y_ref)
        np.testing.assert_array_equal(np.isfinite(y), finite)
        np.testing.assert_array_equal(y[~finite], y_ref[~finite])  # -inf exactly where the reference has it
        scale = 1.0 if name == "softmax" else max(1.0, float(np.max(np.abs(y_ref[finite]), initial=0.0)))
        np.testing.assert_allclose(y[finite], y_ref[finite], rtol=rtol, atol=rtol * scale)
        dy = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
        dx, dx_ref = backward(y_ref, dy), backward_ref(y_ref, dy)
        assert dx.dtype == x.dtype
        atol = 10 * rtol * max(1.0, float(np.abs(dy).sum(axis=-1).max()))
        np.testing.assert_allclose(dx, dx_ref, rtol=rtol, atol=atol)


def test_nasty_rows_are_stable(kernel_path):
    x = np.array(
        [
            [-np.inf, -np.inf, 2.0, -np.inf],  # one finite entry
            [1e4, -1e4, 1e4 - 1.0, 0.0],  # huge magnitudes
            [-1e4, -1e4, -1e4, -1e4],  # huge and equal
            [-np.inf, -np.inf, -np.inf, -np.inf],  # nothing at all
        ]
    )
    for dtype in (np.float32, np.float64):
        xs = x.astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y, logy = sm.softmax(xs), sm.log_softmax(xs)
        np.testing.assert_array_equal(y[0], [0, 0, 1, 0])
        e = 1 / (1 + np.exp(-1.0))
        np.testing.assert_allclose(y[1], [e, 0, 1 - e, 0], rtol=rtol_for(dtype))
        np.testing.assert_allclose(y[2], [0.25] * 4, rtol=rtol_for(dtype))
        np.testing.assert_array_equal(y[3], [0, 0, 0, 0])
        assert np.isneginf(logy[3]).all() and np.isneginf(logy[0, [0, 1, 3]]).all() and logy[0, 2] == 0
        ulp_at_1e4 = 1e4 * np.finfo(dtype).eps  # x - lse loses what rounding lse near 1e4 loses
        np.testing.assert_allclose(logy[1, [0, 2]], np.log([e, 1 - e]), rtol=1e-5, atol=4 * ulp_at_1e4)
        assert not np.isnan(y).any() and not np.isnan(logy).any()


def test_nan_input_gives_nan_row_not_silence(kernel_path):
    x = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    y = sm.softmax(x)
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()


@pytest.mark.parametrize("name, forward, forward_ref, backward, backward_ref", FAMILIES)
def test_gradient_matches_central_differences(kernel_path, name, forward, forward_ref, backward, backward_ref, rng):
    x = rng.standard_normal((3, 7)) * 3
    dy = rng.standard_normal((3, 7))
    numeric = central_difference(lambda z: float(np.sum(forward(z) * dy)), x.copy())
    np.testing.assert_allclose(backward(forward(x), dy), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("vocab", [1, 50257])
def test_wide_and_single_rows_match_reference(vocab, rng):
    x = (rng.standard_normal((3, vocab)) * 5).astype(np.float32)
    with compiled_path("softmax"):
        np.testing.assert_allclose(sm.softmax(x), sm.softmax_reference(x), rtol=1e-5, atol=1e-10)
        np.testing.assert_allclose(sm.log_softmax(x), sm.log_softmax_reference(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name, forward, forward_ref, backward, backward_ref", FAMILIES)
def test_matches_torch(kernel_path, name, forward, forward_ref, backward, backward_ref, rng):
    torch = pytest.importorskip("torch", reason="torch is the oracle for softmax semantics")
    x = rng.standard_normal((4, 5, 33)) * 4
    dy = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.softmax(xt, -1) if name == "softmax" else torch.log_softmax(xt, -1)
    yt.backward(torch.tensor(dy))
    y = forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backward(y, dy), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_bad_input_is_named(kernel_path):
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        sm.softmax(np.arange(4))
    with pytest.raises(ValueError, match="dy shape"):
        sm.softmax_backward(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(TypeError, match="dy dtype"):
        sm.log_softmax_backward(np.ones((2, 3)), np.ones((2, 3), dtype=np.float32))
