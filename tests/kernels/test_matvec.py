"""matvec kernel (few-row products x @ W^T): compiled == NumPy reference on drawn shapes, the same bits on
one and two threads and whether a weight comes alone or with others (also for fewrows, the module's other
entry point), threads.matmul / matmul_weights
route the Linear layer's decoding products to it, torch's F.linear agrees, bad arguments are named (by
the references' check and by both entry points of the compiled module, matvec_many and fewrows_many)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import require
from kernel_helpers import compiled_path
from minifm.kernels import decode_step, fewrows, matvec, threads


@st.composite
def matvec_cases(draw):
    """(x (M, K), [W_i (N_i, K)]) with M in 1..MAX_ROWS, K in 1..70 or 1020..1100 (the kernel reads rows of
    at least 1024 values four at a time), 1-3 weights of 1..45 rows."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rows, width = draw(st.integers(1, matvec.MAX_ROWS)), draw(st.integers(1, 70) | st.integers(1020, 1100))
    sizes = draw(st.lists(st.integers(1, 45), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    x = rng.standard_normal((rows, width)).astype(dtype)
    weights = [rng.standard_normal((size, width)).astype(dtype) for size in sizes]
    return x, weights


def _tolerance(dtype, width):
    return (1e-5 if dtype == np.float32 else 1e-13) * np.sqrt(width) * 4


@given(case=matvec_cases())
def test_compiled_matches_reference(case):
    x, weights = case
    expected = matvec.matvec_reference(x, weights)
    with compiled_path("matvec"):
        assert matvec.applies(x, weights) and all(matvec.applies(x, weight) for weight in weights)
        result = matvec.matvec_many(x, weights)
    for ours, truth, weight in zip(result, expected, weights):
        assert ours.dtype == x.dtype and ours.shape == (x.shape[0], weight.shape[0]) and ours.flags.c_contiguous
        tolerance = _tolerance(x.dtype, x.shape[1])
        np.testing.assert_allclose(ours, truth, rtol=tolerance, atol=tolerance)


# (products of several weights, product of one, input rows, weight sizes, PARALLEL_BYTES) of the compiled
# module's two entry points: matvec_many (through matvec) and fewrows_many (through fewrows)
ENTRIES = {"matvec": (matvec.matvec_many, matvec.matvec, 3, (576, 193, 64), matvec.PARALLEL_BYTES),
           "fewrows": (fewrows.fewrows_many, fewrows.fewrows, 11, (1031, 193, 7), fewrows.PARALLEL_BYTES)}


@pytest.mark.parametrize("entry, dtype, width", [("matvec", np.float32, 577), ("matvec", np.float32, 1030),
                                                 ("matvec", np.float64, 577), ("matvec", np.float64, 1030),
                                                 ("fewrows", np.float32, 256), ("fewrows", np.float32, 263)])
def test_same_bits_on_any_thread_count_and_alone_or_together(entry, dtype, width, rng):
    """Large enough weights (over PARALLEL_BYTES) that two threads split them. matvec: rows of 577 values
    are read one at a time, of 1030 four at a time, and 193 rows leave a short last block; fewrows: 11
    input rows (two groups of four and one of three), blocks of 8 weight rows; 577, 1030 and 263 leave a
    tail in every dot product."""
    many, one, rows, sizes, parallel_bytes = ENTRIES[entry]
    x = rng.standard_normal((rows, width)).astype(dtype)
    weights = [rng.standard_normal((size, width)).astype(dtype) for size in sizes]
    assert sum(w.nbytes for w in weights) >= parallel_bytes
    previous = threads.num_threads()
    runs = []  # one list of outputs per (thread count, together or alone)
    try:
        with compiled_path("matvec"):
            for count in (1, 2):
                threads.set_num_threads(count)
                runs.append(many(x, weights))
                runs.append([one(x, weight) for weight in weights])
    finally:
        threads.set_num_threads(previous)
    for run in runs[1:]:
        for ours, first in zip(run, runs[0]):
            np.testing.assert_array_equal(ours, first)


@pytest.mark.parametrize("rows", [1, 4, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_matmul_routes_a_transposed_weight_here(rows, dtype, rng):
    """threads.matmul(x, W.T) with at most MAX_ROWS rows is the kernel's product, bit for bit;
    matmul_weights gives the same bits as one matmul per weight, kernel or not."""
    x = rng.standard_normal((rows, 40)).astype(dtype)
    weights = [rng.standard_normal((size, 40)).astype(dtype) for size in (24, 8)]
    with compiled_path("matvec"):
        single = [threads.matmul(x, weight.T) for weight in weights]
        together = threads.matmul_weights(x, weights)
        for ours, theirs in zip(together, single):
            np.testing.assert_array_equal(ours, theirs)
        if rows <= matvec.MAX_ROWS:
            for ours, weight in zip(single, weights):
                np.testing.assert_array_equal(ours, matvec.matvec(x, weight))
    for ours, weight in zip(single, weights):
        np.testing.assert_allclose(ours, x @ weight.T, rtol=_tolerance(dtype, 40), atol=_tolerance(dtype, 40))


def test_reference_path_keeps_blas(rng):
    """With the kernels forced to NumPy, matvec does not apply and matmul is BLAS's product."""
    from minifm.kernels import _backend

    x, weight = rng.standard_normal((1, 16)), rng.standard_normal((8, 16))
    previous = _backend.reference_forced()
    _backend.use_reference(True)
    try:
        assert not matvec.applies(x, weight)
        np.testing.assert_array_equal(threads.matmul(x, weight.T), np.ascontiguousarray((weight @ x.T).T))
    finally:
        _backend.use_reference(previous)


def test_does_not_apply_outside_its_cases(rng):
    x = rng.standard_normal((2, 8)).astype(np.float32)
    weight = rng.standard_normal((5, 8)).astype(np.float32)
    assert not matvec.applies(rng.standard_normal((matvec.MAX_ROWS + 1, 8)).astype(np.float32), weight)
    assert not matvec.applies(x, weight.astype(np.float64))  # mixed dtypes
    assert not matvec.applies(x, np.asfortranarray(weight))  # not row-major
    assert not matvec.applies(x.tolist(), weight) and not matvec.applies(x, weight.tolist())  # not arrays
    assert not matvec.applies(x.astype(np.int64), weight.astype(np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_linear(dtype, kernel_path, rng):
    torch = require("torch")
    x = rng.standard_normal((2, 576)).astype(dtype)
    weight = rng.standard_normal((1536, 576)).astype(dtype)
    ours = matvec.matvec(x, weight)
    theirs = torch.nn.functional.linear(torch.tensor(x), torch.tensor(weight)).numpy()
    tolerance = _tolerance(dtype, 576)
    np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("reference, dtypes", [(matvec.matvec_reference, "float32 or float64"),
                                               (fewrows.fewrows_reference, "float32")])
def test_bad_arguments_are_named(reference, dtypes):
    """The references' shared check (matvec.check_operands), for matvec and fewrows."""
    x = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match=r"weights\[0\] must be a 2-D array with 4 columns"):
        reference(x, [np.ones((3, 5), np.float32)])
    with pytest.raises(TypeError, match=r"weights\[1\] dtype float64 must equal x dtype float32"):
        reference(x, [np.ones((3, 4), np.float32), np.ones((3, 4))])
    with pytest.raises(TypeError, match=f"x must be a 2-D {dtypes} numpy array"):
        reference(np.ones(4, np.float32), [np.ones((3, 4), np.float32)])


@pytest.mark.parametrize("entry", ["matvec_many", "fewrows_many"])
def test_compiled_entries_name_bad_arguments(entry):
    """Both entry points of the compiled module share one table of weights and its checks."""
    x = np.ones((1, 4), np.float32)
    with compiled_path("matvec") as kernel:
        products = getattr(kernel, entry)
        with pytest.raises(ValueError, match=r"outs\[0\] has shape \(1, 2\), expected \(1, 3\)"):
            products(x, (np.ones((3, 4), np.float32),), (np.empty((1, 2), np.float32),), 0)
        with pytest.raises(ValueError, match="got 1 weights but 0 outputs"):
            products(x, (np.ones((3, 4), np.float32),), (), 0)
        with pytest.raises(ValueError, match=r"weights\[0\] has shape \(3, 5\), expected \(N > 0, 4\)"):
            products(x, (np.ones((3, 5), np.float32),), (np.empty((1, 3), np.float32),), 0)
        with pytest.raises(ValueError, match=f"{entry} needs at least one weight"):
            products(x, (), (), 0)


@given(width=st.integers(1, 70) | st.integers(570, 600), sizes=st.lists(st.integers(1, 45), min_size=1, max_size=3),
       seed=st.integers(0, 2**31 - 1))
def test_one_float32_row_is_decode_steps_streaming_product(width, sizes, seed):
    """The compiled matvec kernel on one float32 input row runs the shared streaming kernel
    (csrc/_stream_dot.pxd): the bits of decode_step.matvec for each weight, alone or several in one call."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, width)).astype(np.float32)  # (1, K)
    weights = [rng.standard_normal((size, width)).astype(np.float32) for size in sizes]  # (N_i, K) each
    with compiled_path("matvec") as kernel, compiled_path("decode_step"):
        together = tuple(np.empty((1, weight.shape[0]), dtype=np.float32) for weight in weights)  # (1, N_i)
        kernel.matvec_many(x, tuple(weights), together, matvec.PARALLEL_BYTES)
        for ours, weight in zip(together, weights):
            np.testing.assert_array_equal(ours[0], decode_step.matvec(x[0], weight))
