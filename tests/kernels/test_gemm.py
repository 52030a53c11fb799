"""Row-block products (minifm/kernels/gemm.py, csrc/gemm.pyx): the kernel equals NumPy's product on
hypothesis-drawn shapes, layouts, dtypes and block counts; each block is exactly one product of its
rows; the bits do not depend on the thread count; the block rule; threads.matmul routes the tiny
model's products here and keeps NumPy's BLAS on one thread; bad operands are named."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_helpers import compiled_path
from minifm.kernels import gemm, threads
from minifm.kernels._backend import _load


@pytest.fixture(scope="module")
def kernel():
    """The compiled module with NumPy's BLAS bound (threads binds it when it first looks for the libraries)."""
    with compiled_path("gemm") as module:
        threads._blas()
        if not module.bound():
            pytest.skip("NumPy's BLAS exports no sgemm/dgemm with 64-bit integers")
        threads._state().set_numpy_blas(1)  # the kernel's contract: NumPy's BLAS on one thread
        yield module


def _operand(rng, rows, cols, dtype, transposed):
    """A (rows, cols) array: C-ordered, or the transpose of a C-ordered (cols, rows) one."""
    if transposed:
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return rng.standard_normal((rows, cols)).astype(dtype)


@given(m=st.integers(1, 90), k=st.integers(0, 40), n=st.integers(1, 40), dtype=st.sampled_from([np.float32, np.float64]),
       a_transposed=st.booleans(), b_transposed=st.booleans(), blocks=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_the_kernel_equals_the_numpy_product(kernel, m, k, n, dtype, a_transposed, b_transposed, blocks, seed):
    """With and without a bias: the bias is the same float addition as `out += bias` afterwards, bit for bit."""
    rng = np.random.default_rng(seed)
    a = _operand(rng, m, k, dtype, a_transposed)
    b = _operand(rng, k, n, dtype, b_transposed)
    bias = rng.standard_normal(n).astype(dtype)
    out, out_with_bias = np.full((m, n), np.nan, dtype=dtype), np.full((m, n), np.nan, dtype=dtype)
    kernel.product(a, b, out, min(blocks, m))
    kernel.product(a, b, out_with_bias, min(blocks, m), bias)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance * np.sqrt(max(k, 1)))
    np.testing.assert_allclose(out, gemm.product_reference(a, b), rtol=tolerance, atol=tolerance * np.sqrt(max(k, 1)))
    out += bias
    np.testing.assert_array_equal(out_with_bias, out)


@pytest.mark.parametrize("blocks", [2, 3, 8])
def test_each_block_is_one_product_of_its_rows(kernel, rng, blocks):
    """Block i of out is bit for bit the product of a's rows i m // blocks .. (i + 1) m // blocks - 1 alone."""
    a = rng.standard_normal((300, 64)).astype(np.float32)
    weight = rng.standard_normal((96, 64)).astype(np.float32)
    out = np.empty((300, 96), dtype=np.float32)
    kernel.product(a, weight.T, out, blocks)
    for block in range(blocks):
        first, last = block * 300 // blocks, (block + 1) * 300 // blocks
        alone = np.empty((last - first, 96), dtype=np.float32)
        kernel.product(a[first:last], weight.T, alone, 1)
        np.testing.assert_array_equal(out[first:last], alone)


def test_the_bits_do_not_depend_on_the_thread_count(kernel, rng):
    """The tiny model's products (1024 rows; x @ W.T, g @ W, g.T @ x) on one and on two threads."""
    parallel = _load("parallel")
    x = rng.standard_normal((1024, 64)).astype(np.float32)
    grad = rng.standard_normal((1024, 256)).astype(np.float32)
    weight = rng.standard_normal((256, 64)).astype(np.float32)
    results = {}
    saved = parallel.num_threads()
    try:
        for count in (1, 2):
            parallel.set_num_threads(count)
            results[count] = [gemm.compiled_product(x, weight.T), gemm.compiled_product(grad, weight),
                              gemm.compiled_product(grad.T, x)]
    finally:
        parallel.set_num_threads(saved)
    for one, two in zip(results[1], results[2]):
        np.testing.assert_array_equal(one, two)


@given(m=st.integers(1, 5000), k=st.integers(1, 600), n=st.integers(1, 600))
def test_row_blocks_is_the_largest_power_of_two_that_keeps_blocks_big_enough(m, k, n):
    blocks = gemm.row_blocks(m, k, n)
    assert blocks in (1, 2, 4, 8) and blocks <= gemm.MAX_BLOCKS
    flops = 2.0 * m * k * n
    if blocks > 1:
        assert flops / blocks >= gemm.BLOCK_FLOPS and m // blocks >= gemm.MIN_BLOCK_ROWS
    if blocks < gemm.MAX_BLOCKS:  # one more halving would break a rule
        assert flops / (2 * blocks) < gemm.BLOCK_FLOPS or m // (2 * blocks) < gemm.MIN_BLOCK_ROWS


def test_matmul_sends_the_tiny_models_products_here_with_numpy_blas_on_one_thread(kernel, rng, monkeypatch):
    calls = []
    real = gemm.compiled_product
    monkeypatch.setattr(gemm, "compiled_product",
                        lambda a, b, max_blocks, bias: calls.append((a.shape, b.shape)) or real(a, b, max_blocks, bias))
    x = rng.standard_normal((1024, 64)).astype(np.float32)
    weight = rng.standard_normal((256, 64)).astype(np.float32)
    result = threads.matmul(x, weight.T)
    assert calls == [((1024, 64), (64, 256))]
    np.testing.assert_array_equal(result, real(x, weight.T, threads._state().row_blocks))
    numpy_blas = threads._blas().numpy
    assert numpy_blas.get_num_threads() == 1
    threads.matmul(x[:40], weight.T)  # 40 rows: one block, NumPy's product
    assert len(calls) == 1


def test_applies_only_to_products_it_can_read_in_place(kernel, rng):
    a = rng.standard_normal((1024, 64)).astype(np.float32)
    b = rng.standard_normal((64, 256)).astype(np.float32)
    assert gemm.applies(a, b) and gemm.applies(a, np.asfortranarray(b))
    assert not gemm.applies(a[:, ::2], b[::2])  # strided both ways
    assert not gemm.applies(a, b.astype(np.float64))  # mixed dtypes
    assert not gemm.applies(a.astype(np.int32), b)
    assert not gemm.applies(a[:40], b)  # too few rows for two blocks
    assert not gemm.applies([[1.0]], b)


def test_bad_operands_are_named(kernel, rng):
    a = rng.standard_normal((64, 8)).astype(np.float32)
    b = rng.standard_normal((8, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"out has shape \(64, 4\), expected \(64, 5\)"):
        kernel.product(a, b, np.empty((64, 4), np.float32), 2)
    with pytest.raises(ValueError, match=r"b has 7 rows, a has 8 columns"):
        kernel.product(a, b[:7], np.empty((64, 5), np.float32), 2)
    with pytest.raises(ValueError, match=r"bias has 4 elements, b has 5 columns"):
        kernel.product(a, b, np.empty((64, 5), np.float32), 2, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"blocks must be in \[1, 64\], got 0"):
        kernel.product(a, b, np.empty((64, 5), np.float32), 0)
    with pytest.raises(ValueError, match=r"a must have rows or columns of contiguous elements, got byte strides \(32, 8\)"):
        kernel.product(a[:, ::2], b[::2], np.empty((64, 5), np.float32), 2)
    with pytest.raises(TypeError, match="b dtype float64 must equal a dtype float32"):
        gemm.product_reference(a, b.astype(np.float64))
    with pytest.raises(ValueError, match=r"inner sizes 8 and 7 differ"):
        gemm.product_reference(a, b[:7])
    with pytest.raises(TypeError, match="a must be a 2-D float32 or float64 numpy array, got int64"):
        gemm.product_reference(np.arange(6).reshape(2, 3), b)


@pytest.mark.parametrize("rows", [1, 3, 40, 1024])
def test_matmul_with_a_bias_is_the_product_plus_the_bias_on_every_path(kernel, rng, rows):
    """matvec (1, 3 rows), NumPy's product (40) and the row blocks (1024): a @ b + bias bit for bit as
    matmul(a, b) followed by `+= bias`."""
    x = rng.standard_normal((rows, 64)).astype(np.float32)
    weight = rng.standard_normal((256, 64)).astype(np.float32)
    bias = rng.standard_normal(256).astype(np.float32)
    expected = threads.matmul(x, weight.T)
    expected += bias
    np.testing.assert_array_equal(threads.matmul(x, weight.T, bias), expected)
    wide_bias = bias.astype(np.float64)  # not the kernel's: matmul adds it afterwards, as `+=` does
    expected = threads.matmul(x, weight.T)
    expected += wide_bias
    np.testing.assert_array_equal(threads.matmul(x, weight.T, wide_bias), expected)
