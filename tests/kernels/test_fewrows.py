"""fewrows kernel (x @ W^T for a few float32 rows): compiled == NumPy reference on drawn shapes (widths
with and without a tail of K mod 8 values, every tile shape of 1..16 input rows, odd weight sizes), the
same bits whether an input row comes alone or in a batch (the summation order depends on K only), and
torch's F.linear agrees. The same bits on one and two threads and whether a weight comes alone or with
others, and bad arguments: tests/kernels/test_matvec.py (fewrows shares matvec's compiled module and checks)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import require
from kernel_helpers import compiled_path
from minifm.kernels import fewrows


@st.composite
def fewrows_cases(draw):
    """(x (M, K), [W_i (N_i, K)]) float32 with M in 1..MAX_ROWS, K in 1..70 or 250..270, 1-3 weights of
    1..45 rows (not multiples of the kernel's 2 or 4 rows a tile, nor of its 8 rows a thread block)."""
    rows = draw(st.integers(1, fewrows.MAX_ROWS))
    width = draw(st.integers(1, 70) | st.integers(250, 270))
    sizes = draw(st.lists(st.integers(1, 45), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    x = rng.standard_normal((rows, width)).astype(np.float32)
    weights = [rng.standard_normal((size, width)).astype(np.float32) for size in sizes]
    return x, weights


def _tolerance(width):
    return 1e-5 * np.sqrt(width) * 4


@given(case=fewrows_cases())
def test_compiled_matches_reference(case):
    x, weights = case
    expected = fewrows.fewrows_reference(x, weights)
    exact = [x.astype(np.float64) @ weight.T.astype(np.float64) for weight in weights]
    with compiled_path("matvec"):
        assert fewrows.applies(x, weights) and all(fewrows.applies(x, weight) for weight in weights)
        result = fewrows.fewrows_many(x, weights)
    for ours, truth, precise, weight in zip(result, expected, exact, weights):
        assert ours.dtype == np.float32 and ours.shape == (x.shape[0], weight.shape[0]) and ours.flags.c_contiguous
        tolerance = _tolerance(x.shape[1])
        np.testing.assert_allclose(ours, truth, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(ours, precise, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("width", [256, 263])
def test_a_row_has_the_same_bits_alone_or_in_any_batch(width, rng):
    """Row m of a batch of 11 (two groups of four inputs and one of three) equals the same input alone and
    in batches of two; 263 leaves a tail in every dot product. (The same bits on one and two threads:
    tests/kernels/test_matvec.py, for both entry points of the compiled module.)"""
    x = rng.standard_normal((11, width)).astype(np.float32)
    weights = [rng.standard_normal((rows, width)).astype(np.float32) for rows in (1031, 193, 7)]
    with compiled_path("matvec"):
        batch = fewrows.fewrows_many(x, weights)
        alone = [np.concatenate([fewrows.fewrows(x[m:m + 1], weight) for m in range(x.shape[0])])
                 for weight in weights]
        pairs = [np.concatenate([fewrows.fewrows(x[m:m + 2], weight) for m in range(0, 10, 2)]
                                + [fewrows.fewrows(x[10:], weight)]) for weight in weights]
    for run in (alone, pairs):
        for ours, first in zip(run, batch):
            np.testing.assert_array_equal(ours, first)


def test_does_not_apply_outside_its_cases(rng):
    x = rng.standard_normal((2, 8)).astype(np.float32)
    weight = rng.standard_normal((5, 8)).astype(np.float32)
    assert not fewrows.applies(rng.standard_normal((fewrows.MAX_ROWS + 1, 8)).astype(np.float32), weight)
    assert not fewrows.applies(x.astype(np.float64), weight.astype(np.float64))  # float32 only
    assert not fewrows.applies(x, weight.astype(np.float64))  # mixed dtypes
    assert not fewrows.applies(x, np.asfortranarray(weight))  # not row-major
    assert not fewrows.applies(x.tolist(), weight) and not fewrows.applies(x, weight.tolist())  # not arrays
    assert not fewrows.applies(x, np.ones((0, 8), np.float32))  # empty weight
    # where it does not apply, fewrows_many is the reference's product
    np.testing.assert_array_equal(fewrows.fewrows(x, np.asfortranarray(weight)), x @ weight.T)


def test_matches_torch_linear(kernel_path, rng):
    torch = require("torch")
    x = rng.standard_normal((8, 256)).astype(np.float32)
    weight = rng.standard_normal((8192, 256)).astype(np.float32)
    ours = fewrows.fewrows(x, weight)
    theirs = torch.nn.functional.linear(torch.tensor(x), torch.tensor(weight)).numpy()
    tolerance = _tolerance(256)
    np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance)
