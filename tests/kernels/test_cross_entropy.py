"""Fused cross-entropy kernel: compiled == reference, finite differences, torch semantics, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernel_helpers import central_difference, compiled_path, rtol_for
from minifm.kernels import cross_entropy as ce


@st.composite
def problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 12))
    vocab = draw(st.integers(1, 70))
    logits = draw(hnp.arrays(dtype, (n, vocab), elements=st.floats(-30, 30, width=32)))
    targets = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, vocab - 1)))
    ignored = draw(hnp.arrays(np.bool_, (n,), elements=st.booleans()))
    ignore_index = draw(st.sampled_from([-100, -1, 10**6]))
    targets = np.where(ignored, ignore_index, targets)
    smoothing = draw(st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0.0, 1.0))
    return logits, targets, ignore_index, smoothing


@given(problems())
def test_compiled_matches_reference(problem):
    logits, targets, ignore_index, smoothing = problem
    with compiled_path("cross_entropy"):
        losses, grad = ce.cross_entropy(logits, targets, ignore_index, smoothing)
    ref_losses, ref_grad = ce.cross_entropy_reference(logits, targets, ignore_index, smoothing)
    rtol = rtol_for(logits.dtype)
    assert losses.dtype == grad.dtype == logits.dtype
    np.testing.assert_allclose(losses, ref_losses, rtol=rtol, atol=rtol * 30)
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol)
    ignored = targets == ignore_index
    assert np.all(losses[ignored] == 0) and np.all(grad[ignored] == 0)


def test_large_vocab_and_extreme_logits_match_reference(rng):
    logits = (rng.standard_normal((4, 50257)) * 3).astype(np.float32)
    logits[1, :] = -1e4
    logits[1, 7] = 1e4
    targets = np.array([5, 7, 50256, -100])
    with compiled_path("cross_entropy"):
        losses, grad = ce.cross_entropy(logits, targets)
    ref_losses, ref_grad = ce.cross_entropy_reference(logits, targets)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
    assert losses[1] == 0.0 and np.isfinite(grad).all()


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradient_matches_central_differences(kernel_path, smoothing, rng):
    logits = rng.standard_normal((4, 6)) * 2
    targets = np.array([0, 5, -100, 3])
    weights = rng.standard_normal(4)  # a weighted sum checks every row's gradient separately
    numeric = central_difference(
        lambda z: float(np.sum(weights * ce.cross_entropy(z, targets, label_smoothing=smoothing, compute_grad=False)[0])),
        logits.copy(),
    )
    _, grad = ce.cross_entropy(logits, targets, label_smoothing=smoothing)
    np.testing.assert_allclose(weights[:, None] * grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("smoothing, ignore_index", [(0.0, -100), (0.1, -100), (0.3, 2)])
def test_matches_torch(kernel_path, smoothing, ignore_index, rng):
    torch = pytest.importorskip("torch", reason="torch is the oracle for cross_entropy semantics")
    logits = rng.standard_normal((9, 11)) * 3
    targets = rng.integers(0, 11, 9)
    targets[[1, 4]] = ignore_index
    xt = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(
        xt, torch.tensor(targets), ignore_index=ignore_index, label_smoothing=smoothing, reduction="none"
    )
    loss_t.sum().backward()
    losses, grad = ce.cross_entropy(logits, targets, ignore_index=ignore_index, label_smoothing=smoothing)
    np.testing.assert_allclose(losses, loss_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_compute_grad_false_returns_none(kernel_path, rng):
    losses, grad = ce.cross_entropy(rng.standard_normal((3, 4)), np.array([0, 1, 2]), compute_grad=False)
    assert grad is None and losses.shape == (3,)


def test_bad_targets_and_arguments_are_named(kernel_path):
    logits = np.zeros((3, 4))
    with pytest.raises(IndexError, match=r"target 4 in row 1"):
        ce.cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(IndexError, match=r"target -3 in row 2"):
        ce.cross_entropy(logits, np.array([0, 1, -3]))
    with pytest.raises(TypeError, match="targets must be integers"):
        ce.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="targets must have shape"):
        ce.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="label_smoothing"):
        ce.cross_entropy(logits, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, V\)"):
        ce.cross_entropy(np.zeros(4), np.array([0]))
    with pytest.raises(ValueError, match=r"V >= 1 classes, got \(1, 0\)"):
        ce.cross_entropy(np.zeros((1, 0)), np.array([-100]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(scale=st.floats(-4, 4).filter(lambda s: abs(s) >= 1e-6), smoothing=st.sampled_from([0.0, 0.1]))
def test_grad_scale_multiplies_only_the_gradient(dtype, scale, smoothing):
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((9, 13)) * 3).astype(dtype)
    targets = rng.integers(0, 13, size=9)
    targets[2] = -100
    with compiled_path("cross_entropy"):
        losses, grad = ce.cross_entropy(logits, targets, label_smoothing=smoothing, grad_scale=scale)
    ref_losses, ref_grad = ce.cross_entropy_reference(logits, targets, label_smoothing=smoothing)
    tolerance = rtol_for(dtype) * 10
    np.testing.assert_allclose(losses, ref_losses, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad, ref_grad * scale, rtol=tolerance, atol=tolerance * abs(scale))
    _, scaled_ref = ce.cross_entropy_reference(logits, targets, label_smoothing=smoothing, grad_scale=scale)
    np.testing.assert_allclose(scaled_ref, ref_grad * scale, rtol=tolerance, atol=tolerance * abs(scale))


def test_grad_scale_must_be_finite(kernel_path):
    with pytest.raises(ValueError, match="grad_scale must be finite, got nan"):
        ce.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), grad_scale=float("nan"))
