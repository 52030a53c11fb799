"""Properties of the graph and of backward(): accumulation, no mutation, freeing, depth, no_grad, gradcheck."""
import numpy as np
import pytest

import minifm as mf
import minifm.functional as F
from minifm.autograd import Function, GradcheckError, gradcheck


def test_reused_node_accumulates_both_contributions():
    x = mf.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = x * 2  # y is consumed three times below
    (y * y + y + y.exp()).sum().backward()
    expected = 2 * (2 * y.numpy() + 1 + np.exp(y.numpy()))
    np.testing.assert_allclose(x.grad, expected, rtol=1e-6)


def test_diamond_graph_and_retain_grad_on_intermediate():
    x = mf.tensor([0.5, 1.5], requires_grad=True, dtype=np.float64)
    hidden = x.tanh()
    hidden.retain_grad()
    out = (hidden.sigmoid() * hidden.exp()).sum()
    out.backward()
    s, e = 1 / (1 + np.exp(-np.tanh(x.numpy()))), np.exp(np.tanh(x.numpy()))
    d_hidden = s * (1 - s) * e + s * e
    np.testing.assert_allclose(hidden.grad, d_hidden)
    np.testing.assert_allclose(x.grad, d_hidden * (1 - np.tanh(x.numpy()) ** 2))


def test_grads_accumulate_across_backward_calls_until_zeroed():
    x = mf.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None


def test_inputs_and_upstream_gradient_are_never_mutated(rng):
    a_values, b_values = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    a = mf.tensor(a_values, requires_grad=True, dtype=np.float64)
    b = mf.tensor(b_values, requires_grad=True, dtype=np.float64)
    upstream = rng.standard_normal((3, 4))
    upstream_copy = upstream.copy()
    out = (a + b) * 1.0 + a.reshape(3, 4) + F.softmax(a) + a[:, ::-1]
    out.backward(upstream)
    np.testing.assert_array_equal(upstream, upstream_copy)
    np.testing.assert_array_equal(a.numpy(), a_values)
    np.testing.assert_array_equal(b.numpy(), b_values)
    # the leaf gradient is its own array, not a view of the caller's grad
    assert not np.shares_memory(a.grad, upstream) and not np.shares_memory(b.grad, upstream)


def test_freed_graph_raises_on_second_backward_and_retained_graph_does_not():
    x = mf.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
    retained = (x.exp() * x).sum()
    retained.backward(retain_graph=True)
    first = x.grad.copy()
    retained.backward()
    np.testing.assert_allclose(x.grad - first, first - 2 * x.numpy())  # the second pass added the same again


def test_shared_subgraph_freed_by_first_backward_raises_for_the_second_consumer():
    x = mf.tensor([1.0], requires_grad=True)
    hidden = x.exp()
    first, second = hidden * 2, hidden * 3
    first.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        second.sum().backward()


def test_chain_of_ten_thousand_ops_has_no_recursion_limit():
    x = mf.tensor([1.0], requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001**10_000], rtol=1e-9)


def test_no_graph_is_recorded_under_no_grad_in_both_forms():
    x = mf.tensor([1.0, 2.0], requires_grad=True)
    with mf.no_grad():
        y = x * 2
        with mf.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None

    @mf.no_grad()
    def called():
        return F.softmax(x * 3), mf.is_grad_enabled()

    @mf.no_grad
    def bare():
        return x.exp()

    out, enabled = called()
    assert not out.requires_grad and not enabled and not bare().requires_grad
    assert mf.is_grad_enabled()  # restored
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_inputs_without_requires_grad_get_no_grad_and_detach_cuts_the_graph():
    x = mf.tensor([1.0, 2.0], requires_grad=True)
    constant = mf.tensor([3.0, 4.0])
    (x * constant + x.detach() * 5).sum().backward()
    assert constant.grad is None
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.x = x
            return x * x

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.x  # should be 2 x

    x = mf.tensor([0.5, -1.0], requires_grad=True)
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(WrongSquare.apply, x)
    assert not gradcheck(WrongSquare.apply, x, raise_exception=False)
    assert x.dtype == np.float32 and x.grad is None  # gradcheck works on float64 copies


def test_gradcheck_handles_non_contiguous_inputs():
    x = mf.tensor(np.arange(6.0).reshape(2, 3).T, requires_grad=True, dtype=np.float64)
    assert gradcheck(lambda t: (t * t).sum(axis=0), x)


def test_backward_function_returning_wrong_count_or_shape_is_reported():
    class TooMany(Function):
        @staticmethod
        def forward(ctx, x):
            return x.copy()

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    class WrongShape(Function):
        @staticmethod
        def forward(ctx, x):
            return x.copy()

        @staticmethod
        def backward(ctx, grad):
            return grad[:1]

    x = mf.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="TooMany.backward returned 2 gradients for 1 inputs"):
        TooMany.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"shape \(1,\) for an input of shape \(2,\)"):
        WrongShape.apply(x).sum().backward()


def test_non_finite_leaf_gradient_raises_naming_the_op_unless_disabled():
    x = mf.tensor([0.0, 1.0], requires_grad=True)
    with np.errstate(divide="ignore"):
        with pytest.raises(FloatingPointError, match=r"shape \(2,\).*Sqrt"):
            x.sqrt().sum().backward()
        previous = mf.autograd.set_check_finite(False)
        try:
            x.sqrt().sum().backward()
        finally:
            mf.autograd.set_check_finite(previous)
    assert np.isinf(x.grad[0])
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        (x * 2).backward(np.array([np.nan, 1.0]))


# ------------------------------------------------ slice gradients (GetItem's SliceGradient, engine._add_pending)


def test_slices_of_one_node_sum_into_its_gradient_as_dense_gradients_would(rng):
    """q, k, v slices of a stacked projection, overlapping slices, an integer index and a direct use of the
    node, against the same gradient built by hand."""
    values = rng.standard_normal((5, 9))
    weights = [rng.standard_normal(shape) for shape in [(5, 3), (5, 3), (5, 3), (5, 4), (9,), (5, 9)]]
    x = mf.tensor(values, requires_grad=True, dtype=np.float64)
    h = x * 1.0  # an inner node: its gradient is what the engine accumulates
    q, k, v = h[:, 0:3], h[:, 3:6], h[:, 6:9]
    loss = ((q * weights[0]).sum() + (k * weights[1]).sum() + (v * weights[2]).sum()
            + (h[:, 2:6] * weights[3]).sum() + (h[1] * weights[4]).sum() + (h * weights[5]).sum())
    loss.backward()
    expected = weights[5].copy()
    expected[:, 0:3] += weights[0]
    expected[:, 3:6] += weights[1]
    expected[:, 6:9] += weights[2]
    expected[:, 2:6] += weights[3]
    expected[1] += weights[4]
    np.testing.assert_allclose(x.grad, expected, rtol=1e-15, atol=1e-15)


def test_slice_gradients_never_write_into_a_gradient_a_backward_returned(rng):
    """h is used whole (Add's backward hands the caller's array on as h's gradient) and sliced: the slices
    are added into a copy, and the caller's array stays as it was, whichever arrives first."""
    for slices_first in (False, True):
        x = mf.tensor(rng.standard_normal((4, 6)), requires_grad=True, dtype=np.float64)
        h = x.reshape(4, 6)
        sliced = h[:, :3].sum(axis=1, keepdims=True) + h[:, 3:].sum(axis=1, keepdims=True)  # (4, 1)
        total = (sliced + h) if slices_first else (h + sliced)
        upstream = rng.standard_normal((4, 6))
        upstream_copy = upstream.copy()
        total.backward(upstream)
        np.testing.assert_array_equal(upstream, upstream_copy)
        np.testing.assert_allclose(x.grad, upstream + upstream.sum(axis=1, keepdims=True), rtol=1e-14)


def test_a_sliced_leaf_gets_a_whole_checked_gradient_in_its_dtype(rng):
    x = mf.tensor(rng.standard_normal((3, 4)), requires_grad=True, dtype=np.float32)
    (x[:, 1:3].astype(np.float64) * 2.0).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.shape == (3, 4)
    np.testing.assert_array_equal(x.grad, np.array([[0, 2, 2, 0]] * 3, dtype=np.float32))
    y = mf.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    with np.errstate(invalid="ignore"), pytest.raises(FloatingPointError,
                                                      match=r"leaf tensor of shape \(3, 4\), coming from GetItem"):
        (y[:, :2] * np.inf).sum().backward()
