"""Embedding-gradient kernel: compiled == NumPy reference (np.add.at) bit for bit on drawn ids, widths and
dtypes (repeated ids, ids never used, non-contiguous gradients), against torch's embedding backward, and
bad inputs named."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_helpers import compiled_path
from minifm.kernels import embedding
from oracles import require


@st.composite
def gradient_cases(draw):
    """(ids (N,), grad_rows (N, dim), vocab): ids drawn from a small table, so most repeat."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    vocab, count, dim = draw(st.integers(1, 12)), draw(st.integers(0, 60)), draw(st.integers(1, 17))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    ids = rng.integers(0, vocab, size=count).astype(draw(st.sampled_from([np.int64, np.int32, np.uint8])))
    rows = rng.standard_normal((count, 2 * dim) if draw(st.booleans()) else (count, dim)).astype(dtype)
    return ids, rows[:, :dim], vocab  # every other column of a wider array: a non-contiguous gradient


@given(case=gradient_cases())
def test_compiled_matches_the_reference_bit_for_bit(case):
    ids, rows, vocab = case
    expected = embedding.embedding_backward_reference(ids, rows, vocab)
    with compiled_path("embedding"):
        result = embedding.embedding_backward(ids, rows, vocab)
    assert result.shape == (vocab, rows.shape[1]) and result.dtype == rows.dtype
    np.testing.assert_array_equal(result, expected)


def test_the_reference_sums_each_ids_rows_and_leaves_unused_rows_zero(rng):
    ids = np.array([2, 0, 2, 2])
    rows = rng.standard_normal((4, 3))
    grad = embedding.embedding_backward_reference(ids, rows, 4)
    np.testing.assert_allclose(grad[2], rows[0] + rows[2] + rows[3], rtol=1e-15)
    np.testing.assert_array_equal(grad[0], rows[1])
    np.testing.assert_array_equal(grad[[1, 3]], 0)


def test_matches_torch_embedding_backward(kernel_path, rng):
    torch = require("torch")
    ids = rng.integers(0, 50, size=(16, 64))
    grad = rng.standard_normal((16, 64, 32)).astype(np.float32)
    weight = torch.zeros(50, 32, requires_grad=True)
    torch.nn.functional.embedding(torch.from_numpy(ids), weight).backward(torch.from_numpy(grad))
    result = embedding.embedding_backward(ids.ravel(), grad.reshape(-1, 32), 50)
    np.testing.assert_allclose(result, weight.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_named(kernel_path):
    rows = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="ids must be a 1-D integer array, got float64"):
        embedding.embedding_backward(np.zeros(3), rows, 5)
    with pytest.raises(TypeError, match="grad_rows must be a 2-D float32 or float64 array, got int64"):
        embedding.embedding_backward(np.zeros(3, dtype=np.int64), np.zeros((3, 4), dtype=np.int64), 5)
    with pytest.raises(ValueError, match="grad_rows has 3 rows for 2 ids"):
        embedding.embedding_backward(np.zeros(2, dtype=np.int64), rows, 5)
    with pytest.raises(IndexError, match="id 5 is out of range for a table of 5 rows"):
        embedding.embedding_backward(np.array([0, 5, 1]), rows, 5)
