"""matmul (1-D, 2-D, batched, broadcast batch axes), the fused linear layer and the embedding gather."""
import numpy as np
import pytest
from autograd_testing import GRAD_EXAMPLES, check_forward_and_grad
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import autograd_arrays

import minifm as mf
import minifm.functional as F


@st.composite
def matmul_shapes(draw):
    """Two shapes NumPy's matmul accepts: 1-D vectors, matrices, and batch axes that broadcast."""
    n, k, m = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=2)).input_shapes
    shape_a = (k,) if draw(st.booleans()) else (*batch_a, n, k)
    shape_b = (k,) if draw(st.booleans()) else (*batch_b, k, m)
    return shape_a, shape_b


@GRAD_EXAMPLES
@given(data=st.data(), shapes=matmul_shapes())
def test_matmul_follows_numpy_semantics(data, shapes):
    a, b = data.draw(autograd_arrays(shapes[0])), data.draw(autograd_arrays(shapes[1]))
    check_forward_and_grad(lambda x, y: x @ y, np.matmul, a, b)


@pytest.mark.parametrize("shape_a, shape_b", [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((4, 2, 3), (3,)),
                                              ((3,), (4, 3, 2)), ((2, 1, 2, 3), (5, 3, 2)), ((2, 2, 3), (3, 4))])
def test_matmul_edge_shapes(rng, shape_a, shape_b):
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    check_forward_and_grad(mf.matmul, np.matmul, a, b)


@GRAD_EXAMPLES
@given(data=st.data(), batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), sizes=st.tuples(
    st.integers(1, 3), st.integers(1, 3)), bias=st.booleans())
def test_linear_is_x_times_weight_transposed_plus_bias(data, batch, sizes, bias):
    in_features, out_features = sizes
    x = data.draw(autograd_arrays((*batch, in_features)))
    weight = data.draw(autograd_arrays((out_features, in_features)))
    if bias:
        b = data.draw(autograd_arrays((out_features,)))
        check_forward_and_grad(F.linear, lambda x, w, b: x @ w.T + b, x, weight, b)
    else:
        check_forward_and_grad(F.linear, lambda x, w: x @ w.T, x, weight)


@GRAD_EXAMPLES
@given(data=st.data(), ids_shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), vocab=st.integers(1, 4))
def test_embedding_gathers_rows_and_scatter_adds(data, ids_shape, vocab):
    ids = data.draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, vocab - 1)))
    weight = data.draw(autograd_arrays((vocab, 3)))
    check_forward_and_grad(lambda w: F.embedding(ids, w), lambda w: w[ids], weight)
    table = mf.tensor(weight, requires_grad=True, dtype=np.float64)
    F.embedding(mf.tensor(ids), table).sum().backward()
    counts = np.bincount(ids.ravel(), minlength=vocab)
    np.testing.assert_allclose(table.grad, np.repeat(counts[:, None], 3, axis=1))


@pytest.mark.parametrize("ids_shape", [(0,), (2, 0), (16, 64)])
def test_embedding_backward_sums_like_add_at(rng, ids_shape):
    """The grouped (sort + reduceat) backward equals np.add.at's scatter-add, also for no ids at all."""
    vocab, dim = 37, 5
    ids = rng.integers(0, vocab, size=ids_shape)
    table = mf.tensor(rng.standard_normal((vocab, dim)), requires_grad=True, dtype=np.float64)
    upstream = rng.standard_normal((*ids_shape, dim))
    F.embedding(mf.tensor(ids), table).backward(upstream)
    expected = np.zeros((vocab, dim))
    np.add.at(expected, ids.ravel(), upstream.reshape(-1, dim))
    np.testing.assert_allclose(table.grad, expected, rtol=1e-12, atol=1e-12)
