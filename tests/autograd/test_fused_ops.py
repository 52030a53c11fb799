"""Fused Functions (softmax, log_softmax, cross_entropy, layer_norm, rms_norm, dropout): forward equals the
NumPy formula, gradient equals central differences in float64. Kernel-backed ones run on both kernel paths
(the compiled path's gradients must equal the reference path's, which are gradchecked)."""
import numpy as np
import pytest
from autograd_testing import GRAD_EXAMPLES, check_forward_and_grad, check_on_kernel_path, leaf
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import softmax as scipy_softmax
from strategies import autograd_arrays, autograd_nonscalar_shapes

import minifm as mf
import minifm.functional as F
from minifm.autograd import gradcheck


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes)
def test_softmax_family_any_axis(kernel_path, kind, data, shape):
    x = data.draw(autograd_arrays(shape, -4, 4))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    op = getattr(F, kind)
    reference = scipy_softmax if kind == "softmax" else scipy_log_softmax
    check_on_kernel_path(kernel_path, lambda t: op(t, axis=axis), lambda a: reference(a, axis=axis), x)


def _cross_entropy_reference(logits, targets, ignore_index, label_smoothing, reduction):
    """torch's definition written out in NumPy."""
    log_probs = scipy_log_softmax(logits, axis=-1)
    vocab = logits.shape[-1]
    keep = targets != ignore_index
    safe = np.where(keep, targets, 0)
    nll = -np.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
    smooth = -log_probs.sum(axis=-1) / vocab
    losses = np.where(keep, (1 - label_smoothing) * nll + label_smoothing * smooth, 0.0)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / keep.sum()


@GRAD_EXAMPLES
@given(data=st.data(), batch=hnp.array_shapes(min_dims=1, max_dims=2, max_side=3), vocab=st.integers(1, 4),
       label_smoothing=st.sampled_from([0.0, 0.1, 0.5]), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy(kernel_path, data, batch, vocab, label_smoothing, reduction):
    logits = data.draw(autograd_arrays((*batch, vocab), -4, 4))
    targets = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, vocab - 1)))
    ignored = data.draw(hnp.arrays(bool, batch))
    ignored.flat[0] = False  # at least one row counts, so the mean is defined
    targets = np.where(ignored, -100, targets)
    check_on_kernel_path(
        kernel_path,
        lambda t: F.cross_entropy(t, targets, label_smoothing=label_smoothing, reduction=reduction),
        lambda a: _cross_entropy_reference(a, targets, -100, label_smoothing, reduction), logits,
    )


def test_cross_entropy_custom_ignore_index_and_all_ignored_mean_is_nan(kernel_path):
    logits = leaf(np.zeros((2, 3)))
    loss = F.cross_entropy(logits, np.array([1, 1]), ignore_index=1)
    assert np.isnan(loss.item())  # torch gives NaN too: a mean over no rows
    total = F.cross_entropy(logits, np.array([1, 2]), ignore_index=1, reduction="sum")
    np.testing.assert_allclose(total.item(), np.log(3))


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes, affine=st.booleans())
def test_layer_norm(data, shape, affine):
    x = data.draw(autograd_arrays(shape))
    features = shape[-1]

    def reference(a, w=None, b=None):
        normalized = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5)
        return normalized * w + b if w is not None else normalized

    if affine:
        w, b = data.draw(autograd_arrays((features,))), data.draw(autograd_arrays((features,)))
        check_forward_and_grad(F.layer_norm, reference, x, w, b, atol=1e-8)
    else:
        check_forward_and_grad(F.layer_norm, reference, x, atol=1e-8)


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes, affine=st.booleans())
def test_rms_norm(data, shape, affine):
    x = data.draw(autograd_arrays(shape))

    def reference(a, w=None):
        normalized = a / np.sqrt((a * a).mean(-1, keepdims=True) + 1e-6)
        return normalized * w if w is not None else normalized

    if affine:
        w = data.draw(autograd_arrays((shape[-1],)))
        check_forward_and_grad(F.rms_norm, reference, x, w, atol=1e-8)
    else:
        check_forward_and_grad(F.rms_norm, reference, x, atol=1e-8)


def test_dropout_is_seeded_inverted_and_identity_in_eval(rng):
    x = leaf(rng.standard_normal((50, 40)))
    first = F.dropout(x, 0.3, True, np.random.default_rng(7))
    second = F.dropout(x, 0.3, True, np.random.default_rng(7))
    np.testing.assert_array_equal(first.numpy(), second.numpy())  # same seed, same mask
    kept = first.numpy() != 0
    np.testing.assert_allclose(first.numpy()[kept], x.numpy()[kept] / 0.7)  # survivors scaled by 1/(1-p)
    assert abs(kept.mean() - 0.7) < 0.05  # 2000 Bernoulli(0.7) draws: 5 sigma is about 0.05
    assert F.dropout(x, 0.3, training=False) is x
    assert F.dropout(x, 0.0, True, rng) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0, True, rng).numpy(), 0)
    assert gradcheck(lambda t: F.dropout(t, 0.5, True, np.random.default_rng(3)), leaf(rng.standard_normal((3, 4))))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_saved_gradient_survives_repeated_and_scaled_backward(reduction, kernel_path, rng):
    """The loss hands its saved (N, V) gradient out without a copy when the upstream grad is 1:
    a second backward through the retained graph and a scaled loss must still see it unchanged."""
    logits = mf.tensor(rng.standard_normal((6, 5)), requires_grad=True)
    targets = np.array([0, 4, -100, 2, 2, 1])
    loss = F.cross_entropy(logits, targets, reduction=reduction)
    loss.backward(retain_graph=True)
    first = logits.grad.copy()
    loss.backward(retain_graph=True)
    np.testing.assert_allclose(logits.grad, 2 * first, rtol=1e-12)
    logits.grad = None
    (loss * 3.0).backward()
    np.testing.assert_allclose(logits.grad, 3 * first, rtol=1e-12)
    probabilities = np.exp(logits.data) / np.exp(logits.data).sum(axis=1, keepdims=True)
    expected = probabilities - np.eye(5)[np.where(targets < 0, 0, targets)]
    expected[targets < 0] = 0
    expected /= 5 if reduction == "mean" else 1
    np.testing.assert_allclose(first, expected, rtol=1e-10, atol=1e-12)
