"""Bad input raises a clear error naming the argument and what was seen (shape, dtype, value)."""
import numpy as np
import pytest

import minifm as mf
import minifm.functional as F


def test_shape_mismatches_name_both_shapes():
    a, b = mf.zeros(2, 3), mf.zeros(4)
    for op in (mf.autograd.ops.add, mf.autograd.ops.mul, mf.maximum, mf.autograd.ops.div):
        with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
            op(a, b)
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(4, 5\)"):
        a @ mf.zeros(4, 5)
    with pytest.raises(ValueError, match=r"\(2, 2, 3\) and \(3, 3, 1\)"):
        mf.zeros(2, 2, 3) @ mf.zeros(3, 3, 1)
    with pytest.raises(ValueError, match=r"\(2, 3\) into shape \(4,\)"):
        a.reshape(4)
    with pytest.raises(ValueError, match=r"\(2, 3\), \(2, 2\)"):
        mf.concatenate([a, mf.zeros(2, 2)], axis=0)
    with pytest.raises(ValueError, match=r"\(2, 3\) to \(4, 3\)"):
        a.broadcast_to((4, 3))
    with pytest.raises(ValueError, match=r"mask shape \(3, 3\).*\(2, 3\)"):
        a.masked_fill(np.zeros((3, 3), dtype=bool), 0.0)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*got \(4,\)"):
        F.layer_norm(a, mf.ones(4), mf.zeros(4))
    with pytest.raises(ValueError, match=r"grad has shape \(3,\) but the output has shape \(2, 3\)"):
        (a + mf.zeros(2, 3, requires_grad=True)).backward(np.ones(3))


def test_wrong_dtypes_say_what_was_seen():
    with pytest.raises(TypeError, match="int64"):
        mf.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="<U1"):
        mf.tensor(["a"])
    with pytest.raises(TypeError, match="complex"):
        mf.tensor(np.array([1j]))
    with pytest.raises(IndexError, match="float64"):
        mf.zeros(3)[np.array([0.0, 1.0])]
    with pytest.raises(TypeError, match="targets must be integers, got dtype float32"):
        F.cross_entropy(mf.zeros(2, 3), np.zeros(2, dtype=np.float32))
    with pytest.raises(TypeError, match="embedding ids must be integers, got dtype float64"):
        F.embedding(np.zeros(2), mf.zeros(3, 4))
    with pytest.raises(TypeError, match="mask must be boolean, got dtype int64"):
        mf.zeros(2).masked_fill(np.array([1, 0]), 0.0)
    with pytest.raises(TypeError, match="condition must be boolean"):
        mf.where(np.array([1.0, 0.0]), mf.zeros(2), mf.ones(2))


def test_out_of_range_indices_say_what_was_seen():
    with pytest.raises(IndexError, match=r"shape \(3,\)"):
        mf.zeros(3)[5]
    with pytest.raises(IndexError, match="embedding id 7 is out of range for a table of 3 rows"):
        F.embedding(np.array([0, 7]), mf.zeros(3, 2))
    with pytest.raises(IndexError, match=r"target 9 at position \(1,\) is outside \[0, 3\)"):
        F.cross_entropy(mf.zeros(2, 3), np.array([0, 9]))
    with pytest.raises(ValueError, match="axis 2 is out of range for an array with 2 dimensions"):
        mf.zeros(2, 3).sum(axis=2)
    with pytest.raises(ValueError, match=r"axis 3 is out of range for shape \(2, 3\)"):
        mf.zeros(2, 3).swapaxes(0, 3)
    with pytest.raises(ValueError, match="cannot squeeze axis 1 of size 3"):
        mf.zeros(2, 3).squeeze(1)


def test_backward_on_non_scalar_without_grad_raises():
    x = mf.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar output, got shape \(2,\)"):
        (x * 2).backward()


def test_bad_options_are_named():
    x = mf.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'fast'"):
        F.gelu(x, approximate="fast")
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy(x, np.zeros(2, dtype=np.int64), reduction="avg")
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(x, 1.5, True, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng=numpy.random.Generator, got NoneType"):
        F.dropout(x, 0.5, True)
    with pytest.raises(ValueError, match=r"q \(1, 2, 3\)"):
        F.scaled_dot_product_attention(mf.zeros(1, 2, 3), mf.zeros(1, 2, 3, 4), mf.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="query heads 3 must be a multiple of key/value heads 2"):
        F.scaled_dot_product_attention(mf.zeros(1, 3, 2, 4), mf.zeros(1, 2, 2, 4), mf.zeros(1, 2, 2, 4))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 3\)"):
        F.scaled_dot_product_attention(mf.zeros(1, 2, 2, 4), mf.zeros(1, 2, 2, 4), mf.zeros(1, 2, 2, 4),
                                       attn_mask=np.ones((3, 3), dtype=bool))
