"""One thread budget for minifm's thread pools, and when an operation is big enough to use it.

A training step runs on two kinds of worker threads: the OpenMP threads of the Cython kernels
(csrc/*.pyx, libgomp) and the pthreads of OpenBLAS, which NumPy's `@` calls for every Linear layer
(scipy's own OpenBLAS also runs the attention kernel's tile products). On a machine with few cores
(a 2-core machine in docs/performance.md), letting each pool start all its threads for every
operation is slow in two ways:

  * a parallel operation finishes only when its slowest thread does. Waking a worker costs tens of
    microseconds on an idle machine, and up to a scheduler time slice (milliseconds) when other
    processes hold the cores, so a 100-microsecond GEMM run on two threads can take 4 ms;
  * a worker that has just finished keeps spinning on its core for a while (OpenBLAS's default
    timeout is about 2^28 cycles), where it competes with the main thread and the other pool.

The policy here, measured in docs/performance.md ("Training step"):

  * one budget, `num_threads()` (OpenMP's thread count: OMP_NUM_THREADS, or the cores), that
    `set_num_threads(n)` changes for the kernels' OpenMP loops and the OpenBLAS behind NumPy;
  * a matrix product runs on one BLAS thread unless it has at least `GEMM_PARALLEL_FLOPS`
    floating-point operations (`matmul` below; the kernels' own loops have the same kind of
    threshold, about a millisecond of serial work, `minifm_threads_for` in csrc/_common.pxd.tp);
  * on a machine that other processes keep busy, any fork-join costs up to a scheduler time slice
    per operation, and one thread is fastest: OMP_NUM_THREADS=1 (or `set_num_threads(1)`) sets the
    whole budget to one;
  * the OpenBLAS inside scipy (which the attention kernel calls from its OpenMP threads, tile by
    tile) runs on one thread while a kernel runs (`single_threaded_scipy_blas`), so the two pools
    never nest;
  * the OpenMP wait policy defaults to PASSIVE (set in minifm.kernels._backend before the runtime
    starts): an idle kernel thread sleeps at once instead of spinning against BLAS.

The BLAS libraries are found and driven with threadpoolctl. Its context managers cost too much for
a per-product switch (measured on the 2-core machine: `threadpool_limits` ~3 ms, as it scans the
loaded libraries each time; `ThreadpoolController.limit` ~40 us; an 8 x 64 @ 64 x 64 product ~8 us),
so the libraries are looked up once and `matmul` calls the NumPy library's `set_num_threads`
(~4 us) only when a product needs another thread count than the previous product: NumPy's
OpenBLAS is left on the count the last minifm product used (1, or the budget), never above the
budget. `single_threaded_scipy_blas` restores scipy's count on exit (once per attention call).
Simplification: NumPy's and scipy's OpenBLAS are told apart by their file paths (a wheel bundles
each under its own package directory; one system library serves both); where threadpoolctl finds
no BLAS it can drive, BLAS threading is left alone and `matmul` is plain `np.matmul`.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
from threadpoolctl import ThreadpoolController

from minifm.kernels._backend import _load

# A matrix product below this many floating-point operations (2 m k n) runs on one BLAS thread.
# At ~90 GFLOP/s per core (AVX-512 OpenBLAS) 5e7 FLOP is ~0.55 ms of work: enough to pay for waking a
# second thread on an idle machine (tens of microseconds), while every product of the benchmark's
# tiny model (at most 2 x 1024 x 64 x 256 = 3.4e7) stays serial.
GEMM_PARALLEL_FLOPS = 5e7

# Below this many rows, a @ b with b a transposed (Fortran-ordered) matrix is computed as (b^T a^T)^T.
FEW_ROWS = 32


class _BlasLibraries:
    """threadpoolctl's controllers of the BLAS libraries behind NumPy and scipy, found once.

    `numpy` and `scipy` are threadpoolctl LibControllers (or None when not found); they are the same
    object when one library serves both. scipy's library is loaded only when something imports
    scipy.linalg (the attention kernel does), so it is looked for again until found after that.
    """

    def __init__(self):
        self.numpy = self.scipy = None
        self._scanned_with_scipy_blas = False
        self.scan()

    def scan(self) -> None:
        self._scanned_with_scipy_blas = "scipy.linalg.cython_blas" in sys.modules
        blas = ThreadpoolController().select(user_api="blas").lib_controllers
        self.numpy = _owned_by(blas, "numpy")
        self.scipy = _owned_by(blas, "scipy")
        if len(blas) == 1:  # one system library behind both
            self.numpy = self.scipy = blas[0]

    def scipy_blas(self):
        if self.scipy is None and not self._scanned_with_scipy_blas and "scipy.linalg.cython_blas" in sys.modules:
            self.scan()
        return self.scipy


def _owned_by(controllers: list, package: str):
    """The controller whose library file lies under `package`'s directory (or its wheel's .libs)."""
    for controller in controllers:
        parts = controller.filepath.replace("\\", "/").split("/")
        if package in parts or f"{package}.libs" in parts:
            return controller
    return None


_libraries: _BlasLibraries | None = None


def _blas() -> _BlasLibraries:
    global _libraries
    if _libraries is None:
        _libraries = _BlasLibraries()
    return _libraries


def _initial_budget() -> int:
    parallel = _load("parallel")
    if parallel is not None:
        return max(1, int(parallel.num_threads()))
    numpy_blas = _blas().numpy
    return numpy_blas.get_num_threads() if numpy_blas is not None else max(1, os.cpu_count() or 1)


_budget: int | None = None
_blas_limit: int | None = None  # the most threads NumPy's BLAS may use (OPENBLAS_NUM_THREADS, or the budget)
_blas_threads_now: int | None = None  # NumPy's BLAS thread count as minifm last set or found it


def num_threads() -> int:
    """Threads minifm uses for one big operation (the kernels' OpenMP loops and BLAS alike)."""
    global _budget
    if _budget is None:
        _budget = _initial_budget()
    return _budget


def set_num_threads(threads: int) -> None:
    """Set the budget for both pools: OpenMP's thread count and the OpenBLAS behind NumPy."""
    global _budget, _blas_limit, _blas_threads_now
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    _budget = int(threads)
    parallel = _load("parallel")
    if parallel is not None:
        parallel.set_num_threads(_budget)
    numpy_blas = _blas().numpy
    if numpy_blas is not None:
        numpy_blas.set_num_threads(_budget)
    _blas_limit = _blas_threads_now = _budget


def _numpy_blas_limit() -> int:
    global _blas_limit, _blas_threads_now
    if _blas_limit is None:
        numpy_blas = _blas().numpy
        _blas_limit = numpy_blas.get_num_threads() if numpy_blas is not None else num_threads()
        _blas_threads_now = _blas_limit
    return _blas_limit


def gemm_threads(m: int, k: int, n: int) -> int:
    """BLAS threads for an (m, k) @ (k, n) product: 1 below GEMM_PARALLEL_FLOPS, else the budget
    (never more than the OpenBLAS behind NumPy was started with)."""
    if 2.0 * m * k * n < GEMM_PARALLEL_FLOPS:
        return 1
    return max(1, min(num_threads(), _numpy_blas_limit()))


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, C-contiguous. OpenBLAS is slow for a few rows times a transposed matrix, which is the
    Linear layer's x @ W^T in KV-cached decoding (8 x 128 @ 128 x 2048: ~170 us, against ~90 us for
    (W @ x^T)^T, which reads W in its own row-major order); larger products are left to a @ b."""
    if a.shape[0] <= FEW_ROWS and b.flags.f_contiguous and not b.flags.c_contiguous:
        return np.ascontiguousarray((b.T @ a.T).T)
    return a @ b


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D arrays, on as many BLAS threads as its size earns (see gemm_threads)."""
    global _blas_threads_now
    numpy_blas = _blas().numpy
    if numpy_blas is None:
        return _product(a, b)
    wanted = gemm_threads(a.shape[0], a.shape[1], b.shape[1])
    if wanted != _blas_threads_now:
        numpy_blas.set_num_threads(wanted)
        _blas_threads_now = wanted
    return _product(a, b)


@contextlib.contextmanager
def single_threaded_scipy_blas():
    """Run the block with scipy's OpenBLAS on one thread.

    The attention kernel calls small BLAS products from inside its own OpenMP threads; an OpenBLAS
    that also spread each tile over threads would oversubscribe the cores. Uses the library's global
    setting because the calls come from OpenMP threads that Python cannot reach.
    """
    scipy_blas = _blas().scipy_blas()
    if scipy_blas is None:
        yield
        return
    previous = scipy_blas.get_num_threads()
    if previous == 1:
        yield
        return
    scipy_blas.set_num_threads(1)
    try:
        yield
    finally:
        scipy_blas.set_num_threads(previous)
