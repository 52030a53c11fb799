"""Reductions and shape ops: forward equals NumPy, gradient equals central differences (float64)."""
import numpy as np
import pytest
from autograd_testing import GRAD_EXAMPLES, check_forward_and_grad, leaf
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import logsumexp as scipy_logsumexp
from strategies import autograd_arrays, autograd_nonscalar_shapes, autograd_shapes, distinct_arrays

import minifm as mf
from minifm.autograd import gradcheck


def _axis_choices(ndim):
    """None, a single axis (possibly negative) or a tuple of distinct axes."""
    if ndim == 0:
        return st.just(None)
    single = st.integers(-ndim, ndim - 1)
    several = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)
    return st.one_of(st.none(), single, several)


REDUCTIONS = {
    "sum": (lambda x, axis, keep: x.sum(axis=axis, keepdims=keep), np.sum, autograd_arrays),
    "mean": (lambda x, axis, keep: x.mean(axis=axis, keepdims=keep), np.mean, autograd_arrays),
    "var": (lambda x, axis, keep: x.var(axis=axis, keepdims=keep), np.var, autograd_arrays),
    "max": (lambda x, axis, keep: x.max(axis=axis, keepdims=keep), np.max, distinct_arrays),
    "min": (lambda x, axis, keep: x.min(axis=axis, keepdims=keep), np.min, distinct_arrays),
    "logsumexp": (lambda x, axis, keep: x.logsumexp(axis=axis, keepdims=keep), scipy_logsumexp, autograd_arrays),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_shapes, keepdims=st.booleans())
def test_reduction_matches_numpy_and_finite_differences(name, data, shape, keepdims):
    op, reference, strategy = REDUCTIONS[name]
    axis = data.draw(_axis_choices(len(shape)))
    x = data.draw(strategy(shape))
    check_forward_and_grad(
        lambda t: op(t, axis, keepdims), lambda a: reference(a, axis=axis, keepdims=keepdims), x, atol=1e-9
    )


def test_max_and_min_split_the_gradient_over_ties():
    x = mf.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)


def test_logsumexp_handles_minus_infinity_rows():
    x = mf.tensor([[-np.inf, -np.inf], [0.0, -np.inf]], requires_grad=True)
    out = x.logsumexp(axis=1)
    np.testing.assert_allclose(out.numpy(), [-np.inf, 0.0])
    out[1].backward()
    np.testing.assert_array_equal(x.grad, [[0, 0], [1, 0]])


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes)
def test_reshape_transpose_swapaxes_squeeze_unsqueeze(data, shape):
    x = data.draw(autograd_arrays(shape))
    ndim = len(shape)
    permutation = data.draw(st.permutations(range(ndim)))
    check_forward_and_grad(lambda t: t.reshape(-1), lambda a: a.reshape(-1), x)
    check_forward_and_grad(lambda t: t.transpose(*permutation), lambda a: a.transpose(permutation), x)
    check_forward_and_grad(lambda t: t.T, lambda a: a.T, x)
    axis1, axis2 = data.draw(st.integers(-ndim, ndim - 1)), data.draw(st.integers(-ndim, ndim - 1))
    check_forward_and_grad(lambda t: t.swapaxes(axis1, axis2), lambda a: np.swapaxes(a, axis1, axis2), x)
    new_axis = data.draw(st.integers(-ndim - 1, ndim))
    check_forward_and_grad(lambda t: t.unsqueeze(new_axis), lambda a: np.expand_dims(a, new_axis), x)
    check_forward_and_grad(lambda t: t.squeeze(), lambda a: np.squeeze(a), x)


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_shapes)
def test_broadcast_to_sums_gradient_back(data, shape):
    x = data.draw(autograd_arrays(shape))
    target = data.draw(hnp.broadcastable_shapes(shape, min_dims=len(shape), max_dims=len(shape) + 2, max_side=3))
    target = np.broadcast_shapes(shape, target)
    check_forward_and_grad(lambda t: t.broadcast_to(target), lambda a: np.broadcast_to(a, target), x)


def _basic_index(draw, shape):
    """A tuple mixing ints, slices, None and an optional Ellipsis valid for `shape`."""
    parts = []
    for size in shape:
        kind = draw(st.sampled_from(["int", "slice", "none_then_slice"]))
        if kind == "int":
            parts.append(draw(st.integers(-size, size - 1)))
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-size, size)))
            stop = draw(st.one_of(st.none(), st.integers(-size, size)))
            step = draw(st.sampled_from([None, 1, 2, -1]))
            parts.append(slice(start, stop, step))
        else:
            parts.extend([None, slice(None)])
    if parts and draw(st.booleans()):
        parts[-1] = Ellipsis  # the Ellipsis stands for the remaining axis
    return tuple(parts)


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes)
def test_getitem_basic_indexing(data, shape):
    x = data.draw(autograd_arrays(shape))
    index = _basic_index(data.draw, shape)
    check_forward_and_grad(lambda t: t[index], lambda a: a[index], x)


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes)
def test_getitem_integer_arrays_scatter_add_repeated_indices(data, shape):
    x = data.draw(autograd_arrays(shape))
    picks = data.draw(hnp.arrays(np.int64, st.integers(1, 5), elements=st.integers(-shape[0], shape[0] - 1)))
    check_forward_and_grad(lambda t: t[picks], lambda a: a[picks], x)
    check_forward_and_grad(lambda t: t[mf.tensor(picks)], lambda a: a[picks], x)  # a Tensor index
    check_forward_and_grad(lambda t: t[list(picks)], lambda a: a[list(picks)], x)
    if len(shape) >= 2:
        second = data.draw(hnp.arrays(np.int64, picks.shape, elements=st.integers(0, shape[1] - 1)))
        check_forward_and_grad(lambda t: t[picks, second], lambda a: a[picks, second], x)
        check_forward_and_grad(lambda t: t[..., 0], lambda a: a[..., 0], x)


def test_getitem_repeated_index_accumulates():
    x = mf.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[np.array([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0])


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes)
def test_getitem_boolean_mask(data, shape):
    x = data.draw(autograd_arrays(shape))
    mask = data.draw(hnp.arrays(bool, shape))
    check_forward_and_grad(lambda t: t[mask], lambda a: a[mask], x)
    row_mask = mask.reshape(shape[0], -1)[:, 0]
    check_forward_and_grad(lambda t: t[row_mask], lambda a: a[row_mask], x)


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes, count=st.integers(1, 3))
def test_concatenate_stack_split(data, shape, count):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    arrays = []
    for _ in range(count):
        piece_shape = list(shape)
        piece_shape[axis] = data.draw(st.integers(1, 3))
        arrays.append(data.draw(autograd_arrays(tuple(piece_shape))))
    check_forward_and_grad(lambda *ts: mf.concatenate(list(ts), axis=axis), lambda *a: np.concatenate(a, axis=axis),
                           *arrays)
    same = [data.draw(autograd_arrays(shape)) for _ in range(count)]
    stack_axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check_forward_and_grad(lambda *ts: mf.stack(list(ts), axis=stack_axis), lambda *a: np.stack(a, axis=stack_axis),
                           *same)
    whole = np.concatenate(arrays, axis=axis)
    boundaries = list(np.cumsum([a.shape[axis] for a in arrays])[:-1])
    for i in range(count):
        check_forward_and_grad(lambda t, i=i: mf.split(t, boundaries, axis=axis)[i],
                               lambda a, i=i: np.split(a, boundaries, axis=axis)[i], whole)
    sections = whole.shape[axis]
    check_forward_and_grad(lambda t: mf.split(t, sections, axis=axis)[-1],
                           lambda a: np.split(a, sections, axis=axis)[-1], whole)


@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes)
def test_pad(data, shape):
    x = data.draw(autograd_arrays(shape))
    widths = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in shape)
    check_forward_and_grad(lambda t: mf.pad(t, widths, value=1.5),
                           lambda a: np.pad(a, widths, constant_values=1.5), x)


def test_split_pieces_accumulate_into_one_gradient():
    x = mf.tensor(np.arange(6.0), requires_grad=True, dtype=np.float64)
    first, second, third = mf.split(x, 3)
    (first * 1 + second * 2 + third * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [1, 1, 2, 2, 3, 3])
    assert gradcheck(lambda t: mf.concatenate(mf.split(t, [1, 4])[::-1]), leaf(np.arange(6.0)))


def test_zero_size_arrays_flow_through_forward_and_backward():
    empty = mf.zeros(0, 3, requires_grad=True, dtype=np.float64)
    full = mf.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, dtype=np.float64)
    inner_empty = mf.zeros(2, 0, requires_grad=True, dtype=np.float64)
    product = inner_empty @ mf.zeros(0, 3, dtype=np.float64)  # (2, 3) of zeros: an empty sum
    joined = mf.concatenate([empty, full], axis=0)  # (2, 3)
    loss = (joined * 2).sum() + product.sum() + (empty.exp() * 3).sum() + full[2:].sum()
    loss.backward()
    np.testing.assert_array_equal(product.numpy(), np.zeros((2, 3)))
    assert empty.grad.shape == (0, 3) and inner_empty.grad.shape == (2, 0)
    np.testing.assert_array_equal(full.grad, np.full((2, 3), 2.0))
