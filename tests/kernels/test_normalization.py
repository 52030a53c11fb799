"""LayerNorm kernel: compiled == reference (float64 tightly, float32 to a few ulps), with and without
weight/bias, the multi-thread path, empty inputs, NaN propagation, and torch's layer_norm."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernel_helpers import compiled_path, rtol_for
from minifm.kernels import normalization as norm
from minifm.kernels import threads


@st.composite
def layer_norm_cases(draw):
    """(x (N, D), weight or None, bias or None, grad (N, D)) with N in 0..12, D in 1..40, offset rows.

    Rows are kept away from constant (std > 0.1): there 1 / std is ~300 and the float32 reference's
    own rounding of the mean (the kernel sums in double) dominates any comparison.
    """
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rows, features = draw(st.integers(0, 12)), draw(st.integers(1, 40))
    values = st.floats(-10, 10, width=32)
    x = draw(hnp.arrays(dtype, (rows, features), elements=values)) + dtype(draw(st.sampled_from([0.0, 50.0])))
    assume(features == 1 or np.all(x.std(axis=1) > 0.1))
    weight = draw(st.none() | hnp.arrays(dtype, (features,), elements=values))
    bias = draw(st.none() | hnp.arrays(dtype, (features,), elements=values))
    grad = draw(hnp.arrays(dtype, (rows, features), elements=values))
    return x, weight, bias, grad


def _assert_close(result, expected, dtype, scale=1.0):
    rtol = rtol_for(dtype) * (10 if dtype == np.float32 else 1)
    np.testing.assert_allclose(result, expected, rtol=rtol, atol=rtol * scale)


@given(case=layer_norm_cases())
def test_compiled_matches_reference(case):
    x, weight, bias, grad = case
    expected = norm.layer_norm_forward_reference(x, weight, bias, 1e-5)
    with compiled_path("normalization"):
        out, xhat, inv_std = norm.layer_norm_forward(x, weight, bias, 1e-5)
        dx, dweight, dbias = norm.layer_norm_backward(grad, xhat, inv_std, weight, weight is not None, bias is not None)
    expected_grads = norm.layer_norm_backward_reference(grad, *expected[1:], weight, weight is not None,
                                                        bias is not None)
    weight_size = 1.0 if weight is None else float(np.max(np.abs(weight), initial=1.0))
    scale = float(np.max(np.abs(grad), initial=1.0)) * weight_size
    for result, truth in zip((out, xhat, inv_std), expected):
        assert result.dtype == x.dtype
        _assert_close(result, truth, x.dtype, scale=float(np.max(np.abs(truth), initial=1.0)))
    _assert_close(dx, expected_grads[0], x.dtype, scale=scale * float(np.max(inv_std, initial=1.0)))
    for result, truth in zip((dweight, dbias), expected_grads[1:]):
        assert (result is None) == (truth is None)
        if result is not None:
            _assert_close(result, truth, x.dtype, scale=scale * max(1, x.shape[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_rows_match_reference(dtype, rng):
    """Enough rows (4096 x 512) for the kernel to use every thread of the budget."""
    x = rng.standard_normal((4096, 512)).astype(dtype)
    weight, bias = rng.standard_normal(512).astype(dtype), rng.standard_normal(512).astype(dtype)
    grad = rng.standard_normal((4096, 512)).astype(dtype)
    expected = norm.layer_norm_forward_reference(x, weight, bias)
    expected_grads = norm.layer_norm_backward_reference(grad, *expected[1:], weight)
    previous = threads.num_threads()
    threads.set_num_threads(2)
    try:
        with compiled_path("normalization"):
            out, xhat, inv_std = norm.layer_norm_forward(x, weight, bias)
            grads = norm.layer_norm_backward(grad, xhat, inv_std, weight)
    finally:
        threads.set_num_threads(previous)
    _assert_close(out, expected[0], dtype, scale=10.0)
    for result, truth in zip(grads, expected_grads):
        _assert_close(result, truth, dtype, scale=float(np.abs(truth).max()))


def test_nan_row_stays_nan_and_others_are_untouched(kernel_path):
    x = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0]], dtype=np.float32)
    out, _, _ = norm.layer_norm_forward(x)
    assert np.all(np.isnan(out[1]))
    np.testing.assert_allclose(out[0], [-1.2247434, 0.0, 1.2247434], rtol=1e-5)


def test_bad_arguments_are_named(kernel_path):
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        norm.layer_norm_forward(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        norm.layer_norm_forward(np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        norm.layer_norm_forward(np.ones((2, 3), dtype=np.float32), np.ones(4, dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_layer_norm(dtype, kernel_path, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((64, 48)).astype(dtype) * 3 + 1
    weight, bias = rng.standard_normal(48).astype(dtype), rng.standard_normal(48).astype(dtype)
    grad = rng.standard_normal((64, 48)).astype(dtype)
    out, xhat, inv_std = norm.layer_norm_forward(x, weight, bias)
    dx, dweight, dbias = norm.layer_norm_backward(grad, xhat, inv_std, weight)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    ty = torch.nn.functional.layer_norm(tx, (48,), tw, tb, 1e-5)
    ty.backward(torch.tensor(grad))
    tolerance = 2e-5 if dtype == np.float32 else 1e-11
    for ours, theirs in ((out, ty), (dx, tx.grad), (dweight, tw.grad), (dbias, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=tolerance, atol=tolerance * 10)


# ------------------------------------------------------------------------------------------ RMSNorm


@st.composite
def rms_norm_cases(draw):
    """(x (N, D), weight or None) with N in 0..12, D in 1..40 (rows not all zero)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rows, features = draw(st.integers(0, 12)), draw(st.integers(1, 40))
    values = st.floats(-10, 10, width=32)
    x = draw(hnp.arrays(dtype, (rows, features), elements=values))
    assume(np.all(np.abs(x).max(axis=1, initial=1.0) > 0.1))
    weight = draw(st.none() | hnp.arrays(dtype, (features,), elements=values))
    return x, weight


@given(case=rms_norm_cases(), want_xhat=st.booleans())
def test_rms_norm_compiled_matches_reference(case, want_xhat):
    x, weight = case
    expected = norm.rms_norm_forward_reference(x, weight, 1e-5, want_xhat)
    with compiled_path("normalization"):
        result = norm.rms_norm_forward(x, weight, 1e-5, want_xhat)
    assert (result[1] is None) == (not want_xhat)
    for ours, truth in zip(result, expected):
        if truth is not None:
            assert ours.dtype == x.dtype
            _assert_close(ours, truth, x.dtype, scale=float(np.max(np.abs(truth), initial=1.0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rms_norm_matches_torch(dtype, kernel_path, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((64, 576)).astype(dtype) * 3 + 1
    weight = rng.standard_normal(576).astype(dtype)
    out, _, _ = norm.rms_norm_forward(x, weight, 1e-5)
    theirs = torch.nn.functional.rms_norm(torch.tensor(x), (576,), torch.tensor(weight), 1e-5).numpy()
    tolerance = 2e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(out, theirs, rtol=tolerance, atol=tolerance * 10)
