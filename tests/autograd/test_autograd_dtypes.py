"""dtype rules: float32 stays float32 (values and gradients), Python scalars do not upcast, constructors."""
import numpy as np
import pytest

import minifm as mf
import minifm.functional as F


@pytest.mark.parametrize("constant", [2, 2.5, np.float64(2.5), np.array(2.5), np.ones(3), np.arange(3), True])
def test_constants_follow_the_float32_tensor(constant):
    x = mf.tensor([1.0, 2.0, 3.0], requires_grad=True)
    results = [x + constant, constant + x, x - constant, constant - x, x * constant, constant * x,
               x / 2.0, 2.0 / (x + 1), x**2, 2**x, mf.maximum(x, constant), mf.minimum(constant, x),
               mf.where(np.array([True, False, True]), x, constant), x.clip(0.0, np.float64(2.0))]
    for y in results:
        assert y.dtype == np.float32, y
    sum(r.sum() for r in results).backward()
    assert x.grad.dtype == np.float32


def test_float32_gradients_stay_float32_through_every_kind_of_op(rng):
    x = mf.randn(2, 3, 4, rng=rng, requires_grad=True)
    w = mf.randn(5, 4, rng=rng, requires_grad=True)
    gain = mf.ones(5, requires_grad=True)
    mixed = mf.tensor(rng.standard_normal(4), requires_grad=True, dtype=np.float64)
    h = F.gelu(F.linear(x, w)) + F.silu(x @ w.T)
    h = F.layer_norm(h, gain, None) + F.rms_norm(h, gain) + F.softmax(h) + F.log_softmax(h, axis=1)
    h = h.var(axis=-1) + h.max(axis=-1) + h.logsumexp(axis=-1) + h[..., ::2].mean(axis=-1)
    loss = F.cross_entropy(mf.stack([h, h], axis=-1), np.zeros((2, 3), dtype=np.int64)) + (x * mixed).sum()
    assert h.dtype == np.float32
    loss.backward()
    for leaf in (x, w, gain):
        assert leaf.grad.dtype == np.float32
    assert mixed.grad.dtype == np.float64


def test_float64_is_kept_and_float32_float64_tensors_promote():
    a = mf.tensor([1.0], dtype=np.float64, requires_grad=True)
    b = mf.tensor([2.0], requires_grad=True)
    out = a * b
    assert out.dtype == np.float64
    out.sum().backward()
    assert a.grad.dtype == np.float64 and b.grad.dtype == np.float32


def test_integer_tensors_with_python_floats_give_float32():
    ids = mf.tensor([1, 2, 3])
    assert ids.dtype == np.int64
    assert (ids * 0.5).dtype == np.float32
    assert (ids + 1).dtype == np.int64


def test_constructors_default_to_float32_and_take_a_generator():
    assert mf.tensor([1.0, 2.0]).dtype == np.float32
    assert mf.tensor(np.zeros(2)).dtype == np.float64  # an explicit float64 array keeps its dtype
    assert mf.tensor(np.zeros(2, dtype=np.float16)).dtype == np.float32
    assert mf.zeros(2, 3).shape == (2, 3) and mf.ones((2, 3)).dtype == np.float32
    assert mf.full((2,), 7.0).numpy().tolist() == [7.0, 7.0]
    first = mf.randn(3, 4, rng=np.random.default_rng(5))
    second = mf.randn(3, 4, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    np.testing.assert_array_equal(first.numpy(), np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32))
    assert mf.rand(2, rng=np.random.default_rng(0)).dtype == np.float32
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        mf.randn(2, rng=3)


def test_tensor_attributes_and_conversions():
    x = mf.tensor([[1.0, 2.0]], requires_grad=True)
    assert x.shape == (1, 2) and x.ndim == 2 and x.dtype == np.float32 and x.requires_grad and x.grad is None
    assert x.sum().item() == 3.0
    assert x.numpy() is x.data
    detached = x.detach()
    assert not detached.requires_grad and np.shares_memory(detached.numpy(), x.numpy())
    with pytest.raises(ValueError, match=r"one element, got shape \(1, 2\)"):
        x.item()
