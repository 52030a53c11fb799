"""Thread policy (minifm/kernels/threads.py): size-dependent BLAS threads give the same products,
the budget is validated and applied to both pools, the kernels' thread count follows the measured
load (decided from injected load values here: no timing), user overrides win, and the OpenMP wait
policy defaults to PASSIVE without overriding a user's choice."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS, as the attention kernel does)
from hypothesis import given
from hypothesis import strategies as st

from minifm.kernels import threads
from minifm.kernels._backend import _load


@pytest.fixture
def restore_budget():
    """Give the test a fresh policy and put the session's back afterwards."""
    saved = threads._policy
    threads._policy = None
    yield
    threads._policy = saved
    if saved is not None:
        saved.blas_threads_now = None
        saved.apply()


class FixedLoad:
    """Stands in for the CPU meter: other processes keep `cores` cores busy."""

    def __init__(self, cores):
        self.cores = cores

    def busy_elsewhere(self):
        return self.cores


@pytest.mark.parametrize("threshold", [0.0, float("inf")], ids=["parallel", "serial"])
@given(m=st.integers(1, 70), k=st.integers(1, 70), n=st.integers(1, 70), transpose=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_matmul_equals_float64_product_on_either_thread_count(threshold, m, k, n, transpose, dtype):
    rng = np.random.default_rng(m * 10007 + k * 101 + n)
    a = rng.standard_normal((k, m) if transpose else (m, k)).astype(dtype)
    a = a.T if transpose else a  # a non-contiguous (m, k) view when transposed
    b = rng.standard_normal((k, n)).astype(dtype)
    saved = threads.GEMM_PARALLEL_FLOPS
    threads.GEMM_PARALLEL_FLOPS = threshold
    try:
        result = threads.matmul(a, b)
    finally:
        threads.GEMM_PARALLEL_FLOPS = saved
    expected = a.astype(np.float64) @ b.astype(np.float64)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    assert result.dtype == dtype and result.shape == (m, n)
    np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance * np.sqrt(k))


@pytest.mark.parametrize("rows", [1, 8, threads.FEW_ROWS, threads.FEW_ROWS + 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_rows_times_a_transposed_matrix(rng, rows, dtype):
    """x @ W^T with few rows (KV-cached decoding) takes the (W x^T)^T route: same values, C order."""
    x = rng.standard_normal((rows, 48)).astype(dtype)
    weight = rng.standard_normal((130, 48)).astype(dtype)  # (out, in), so weight.T is Fortran-ordered
    result = threads.matmul(x, weight.T)
    assert result.shape == (rows, 130) and result.dtype == dtype and result.flags.c_contiguous
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result, x.astype(np.float64) @ weight.T.astype(np.float64), rtol=tolerance,
                               atol=tolerance * np.sqrt(48))


def test_large_product_crosses_the_threshold_and_still_matches(rng):
    a = rng.standard_normal((300, 300)).astype(np.float32)
    b = rng.standard_normal((300, 400)).astype(np.float32)
    assert 2 * 300 * 300 * 400 >= threads.GEMM_PARALLEL_FLOPS
    np.testing.assert_allclose(threads.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


def test_gemm_threads_is_one_below_the_threshold_and_the_blas_count_above():
    assert threads.gemm_threads(2, 2, 2) == 1
    side = int(np.ceil((threads.GEMM_PARALLEL_FLOPS / 2) ** (1 / 3))) + 1
    assert threads.gemm_threads(side, side, side) == threads.blas_threads()


@pytest.mark.parametrize("cores, busy, expected", [
    (2, 0.0, 2), (2, 0.3, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1), (2, 5.0, 1), (2, -0.1, 2),
    (1, 0.0, 1), (8, 1.0, 7), (8, 2.4, 6), (8, 20.0, 1),
])
def test_kernel_threads_leave_the_cores_other_processes_use(cores, busy, expected):
    assert threads.kernel_threads_for_load(cores, busy) == expected


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (3, 3), (8, 8)])
def test_blas_runs_on_one_thread_on_small_machines(cores, expected):
    assert threads.default_blas_threads(cores) == expected


@pytest.mark.parametrize("environ, expected", [
    ({}, None), ({"MINIFM_NUM_THREADS": "3"}, 3), ({"OMP_NUM_THREADS": "2"}, 2), ({"OMP_NUM_THREADS": "4,2"}, 4),
    ({"MINIFM_NUM_THREADS": "1", "OMP_NUM_THREADS": "2"}, 1), ({"MINIFM_NUM_THREADS": " "}, None),
])
def test_requested_threads_reads_the_overrides(environ, expected):
    assert threads.requested_threads(environ) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_override_is_named(value):
    with pytest.raises(ValueError, match="MINIFM_NUM_THREADS must be a positive integer"):
        threads.requested_threads({"MINIFM_NUM_THREADS": value})


@pytest.mark.parametrize("busy, expected", [(1.0, 1), (0.0, None)])
def test_the_kernels_follow_the_measured_load(restore_budget, monkeypatch, busy, expected):
    """A machine busy elsewhere gets one kernel thread, a free one all usable cores (OpenMP's count too)."""
    monkeypatch.delenv("MINIFM_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    state = threads._state()
    state.follows_load = True
    state.meter = FixedLoad(busy)
    state.next_check = 0.0
    state.follow_load()
    expected = expected or state.cores
    assert threads.num_threads() == expected
    parallel = _load("parallel")
    if parallel is not None:
        assert parallel.num_threads() == expected


def test_a_fixed_count_does_not_follow_the_load(restore_budget):
    threads.set_num_threads(2)
    state = threads._state()
    state.meter = FixedLoad(5.0)
    state.next_check = 0.0
    state.follow_load()
    assert threads.num_threads() == 2 and not threads.follows_load()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2", None])
def test_set_num_threads_rejects_non_positive_integers(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        threads.set_num_threads(bad)


def test_set_num_threads_sets_both_pools(restore_budget):
    threads.set_num_threads(1)
    assert threads.num_threads() == 1
    assert threads.gemm_threads(4096, 4096, 4096) == 1
    parallel = _load("parallel")
    if parallel is not None:
        assert parallel.num_threads() == 1
    numpy_blas = threads._blas().numpy
    if numpy_blas is not None:
        assert numpy_blas.get_num_threads() == 1


def test_matmul_runs_numpy_blas_on_the_count_each_product_earns(rng, restore_budget):
    """matmul switches NumPy's BLAS between 1 thread (small products) and the budget (large ones),
    never above the budget, and only when the count changes."""
    numpy_blas = threads._blas().numpy
    if numpy_blas is None:
        pytest.skip("threadpoolctl found no BLAS behind NumPy")
    threads.set_num_threads(2)
    threads._state().blas_threads = 2  # as on a machine with more cores (see fixed_blas_threads)
    threads.matmul(rng.standard_normal((3, 4)), rng.standard_normal((4, 5)))
    assert numpy_blas.get_num_threads() == 1
    threads.matmul(rng.standard_normal((400, 300)), rng.standard_normal((300, 400)))
    assert numpy_blas.get_num_threads() == threads.gemm_threads(400, 300, 400) == 2


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_single_threaded_scipy_blas(restore_budget, blas_threads):
    """scipy's BLAS runs on one thread inside the block; afterwards its count comes back, unless
    minifm's BLAS runs on one thread anyway (then it stays at one)."""
    scipy_blas = threads._blas().scipy_blas()
    if scipy_blas is None:
        pytest.skip("threadpoolctl found no BLAS behind scipy")
    threads.set_num_threads(blas_threads)
    threads._state().blas_threads = blas_threads  # also 2 on a machine with two cores (see fixed_blas_threads)
    scipy_blas.set_num_threads(2)
    try:
        with threads.single_threaded_scipy_blas():
            assert scipy_blas.get_num_threads() == 1
        assert scipy_blas.get_num_threads() == (1 if blas_threads == 1 else 2)
    finally:
        scipy_blas.set_num_threads(1)


@pytest.mark.parametrize("user_settings", [{}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"},
                                           {"GOMP_SPINCOUNT": "0"}])
def test_openmp_waits_passive_after_a_short_spin_unless_the_user_chose(user_settings):
    """Importing minifm sets PASSIVE and libgomp's spin count before the runtime starts; a user's policy
    keeps both unset (a chosen policy means its own spin), a user's spin count is kept, and OPENMP_DEFAULTS
    names exactly what minifm set."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user_settings)
    code = ("import json, os, minifm.kernels._backend as backend; print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), "
            "os.environ.get('GOMP_SPINCOUNT'), backend.OPENMP_DEFAULTS, backend.OPENMP_SPIN_COUNT]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    policy, spin_count, defaults, spin_default = json.loads(out.stdout)
    if "OMP_WAIT_POLICY" in user_settings:
        assert (policy, spin_count, defaults) == (user_settings["OMP_WAIT_POLICY"], None, {})
    elif "GOMP_SPINCOUNT" in user_settings:
        assert (policy, spin_count, defaults) == ("PASSIVE", "0", {"OMP_WAIT_POLICY": "PASSIVE"})
    else:
        assert (policy, spin_count) == ("PASSIVE", str(spin_default))
        assert defaults == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(spin_default)}
        assert 0 < spin_default <= 10_000  # ~30 ns per round here: a spin of well under a millisecond


@pytest.mark.parametrize("count", ["1", "2"])
def test_minifm_num_threads_fixes_both_pools(count):
    env = dict(os.environ, MINIFM_NUM_THREADS=count)
    code = ("from minifm.kernels import gemm, threads; print(threads.num_threads(), threads.blas_threads(), "
            "threads.follows_load(), threads.usable_cores(), gemm.blas_bound())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    kernel_threads, blas_threads, follows, cores, bound = out.stdout.split()
    row_blocks_instead = int(cores) <= threads.SERIAL_BLAS_MAX_CORES and bound == "True"
    assert (kernel_threads, follows) == (count, "False")
    assert blas_threads == ("1" if row_blocks_instead else count)


@pytest.mark.parametrize("cores, bound, expected", [(1, True, 1), (2, True, 1), (2, False, 4), (3, True, 4),
                                                    (8, True, 4)])
def test_a_fixed_count_keeps_blas_on_one_thread_where_row_blocks_take_the_products(cores, bound, expected,
                                                                                   monkeypatch):
    """With 4 threads fixed, BLAS gets 4, except on <= 2 cores when the row-block kernel has its BLAS."""
    monkeypatch.setattr(threads.gemm_kernel, "blas_bound", lambda: bound)
    assert threads.fixed_blas_threads(4, cores) == expected


def test_on_two_cores_the_bits_follow_neither_the_load_nor_a_fixed_count_of_two(rng, restore_budget, monkeypatch):
    """On a two-core machine a large product runs in row blocks whose count the machine sets: the default budget
    with one or two kernel threads (a busy or an idle machine) and a fixed count of two give the same bits."""
    monkeypatch.delenv("MINIFM_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    state = threads._state()
    state.cores, state.row_blocks = 2, threads.row_block_limit(2)  # the policy's view of the machine (CI's has two cores)
    if not threads.gemm_kernel.blas_bound():
        pytest.skip("NumPy's BLAS exports no sgemm/dgemm with 64-bit integers (or the kernel is not built)")
    a = rng.standard_normal((2048, 128)).astype(np.float32)  # (M, K): a 1e8-FLOP product, above GEMM_PARALLEL_FLOPS
    b = rng.standard_normal((128, 192)).astype(np.float32)  # (K, N)
    results = []
    for busy in (1.0, 0.0):  # the load leaves one kernel thread, then two
        state.follows_load, state.meter, state.next_check = True, FixedLoad(busy), 0.0
        state.follow_load()
        assert threads.num_threads() == 2 - int(busy) and threads.gemm_threads(2048, 128, 192) == 1
        results.append(threads.matmul(a, b))
    threads.set_num_threads(2)
    results.append(threads.matmul(a, b))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_a_fixed_single_thread_runs_each_product_whole(rng, restore_budget):
    """Blocks only cost on one thread (each packs b again), so a fixed count of one keeps products whole:
    NumPy's own product, bit for bit."""
    threads._state().cores = 2
    threads.set_num_threads(1)
    assert threads.row_blocks() == 1
    a = rng.standard_normal((2048, 128)).astype(np.float32)  # (M, K)
    w = rng.standard_normal((192, 128)).astype(np.float32)  # (N, K): a Linear weight, used as w.T
    np.testing.assert_array_equal(threads.matmul(a, w.T), a @ w.T)


def test_a_user_limit_on_openblas_threads_is_respected():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    code = ("from minifm.kernels import threads; "
            "print(threads._blas().numpy is not None, threads.gemm_threads(4096, 4096, 4096))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    found, gemm_threads = out.stdout.split()
    if found != "True":
        pytest.skip("no OpenBLAS found behind NumPy")
    assert gemm_threads == "1"


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 4), (3, 4), (4, 8), (7, 8), (64, 8)])
def test_row_blocks_are_limited_to_a_power_of_two_up_to_two_per_core(cores, expected):
    """The gemm kernel's block limit follows the machine's cores, never the threads in use (so the bits do not)."""
    assert threads.row_block_limit(cores) == expected


@pytest.mark.parametrize("cores, fixed, expected", [(2, 1, 1), (2, 2, 4), (2, 8, 4), (8, 1, 1), (8, 2, 4), (8, 3, 4),
                                                    (8, 16, 8)])
def test_a_fixed_count_limits_the_blocks_as_that_many_cores_would(cores, fixed, expected):
    assert threads.row_block_limit(cores, fixed) == expected
