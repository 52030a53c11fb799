"""Adam / AdamW update kernel: compiled == reference over several steps (float64 tightly, float32 to
a few ulps), Adam's coupled and AdamW's decoupled weight decay, and the reference fallback for
arrays the kernel does not take (strided, mixed dtypes)."""
import numpy as np
import pytest

from kernel_helpers import compiled_path
from minifm.kernels import adam


def _run(update, dtype, decoupled, weight_decay, rng, steps=5, grad_view=False):
    """Apply `steps` updates to a (33, 7) parameter with fresh random gradients; returns (w, m, v)."""
    weight = rng.standard_normal((33, 7)).astype(dtype)
    exp_avg, exp_avg_sq = np.zeros_like(weight), np.zeros_like(weight)
    for step in range(1, steps + 1):
        grad = rng.standard_normal((7, 33)).astype(dtype).T if grad_view else rng.standard_normal((33, 7)).astype(dtype)
        update(weight, grad, exp_avg, exp_avg_sq, step, 0.01, 0.9, 0.99, 1e-8, weight_decay, decoupled)
    return weight, exp_avg, exp_avg_sq


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decoupled, weight_decay", [(True, 0.1), (False, 0.1), (True, 0.0)])
@pytest.mark.parametrize("grad_view", [False, True])
def test_compiled_matches_reference(dtype, decoupled, weight_decay, grad_view):
    expected = _run(adam.adam_update_reference, dtype, decoupled, weight_decay, np.random.default_rng(0),
                    grad_view=grad_view)
    with compiled_path("adam"):
        result = _run(adam.adam_update, dtype, decoupled, weight_decay, np.random.default_rng(0), grad_view=grad_view)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    for ours, theirs in zip(result, expected):
        assert ours.dtype == dtype
        # FMA contraction may round a multiply-add once instead of twice: ulp-sized differences
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * float(np.abs(theirs).max()))


def test_mixed_dtypes_take_the_reference():
    """A float64 gradient on a float32 parameter is not the kernel's case; the result stays float32."""
    with compiled_path("adam"):
        weight = np.ones((4, 3), dtype=np.float32)
        exp_avg, exp_avg_sq = np.zeros_like(weight), np.zeros_like(weight)
        adam.adam_update(weight, np.full((4, 3), 0.5), exp_avg, exp_avg_sq, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, True)
    assert weight.dtype == np.float32
    np.testing.assert_allclose(weight, 0.9, rtol=1e-6)  # the first step moves by lr * sign(grad)
