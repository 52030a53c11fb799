"""One thread budget for minifm's two thread pools, and when an operation is big enough to use it.

A training step runs on two pools of worker threads: the OpenMP threads of the Cython kernels
(csrc/*.pyx, libgomp) and the pthreads of OpenBLAS, which NumPy's `@` calls for every Linear layer.
On a machine with few cores (the team's has 2), letting each pool start all its threads for every
operation is slow in two ways:

  * a parallel operation finishes only when its slowest thread does. Waking a worker costs tens of
    microseconds on an idle machine, and up to a scheduler time slice (milliseconds) when other
    processes hold the cores, so a 100-microsecond GEMM run on two threads can take 4 ms;
  * a worker that has just finished keeps spinning on its core for a while (OpenBLAS's default
    timeout is about 2^28 cycles), where it competes with the main thread and the other pool.

The policy here, measured in docs/performance.md ("Training step"):

  * one budget, `num_threads()` (OpenMP's thread count: OMP_NUM_THREADS, or the cores), that
    `set_num_threads(n)` changes for both pools;
  * a matrix product runs on one BLAS thread unless it has at least `GEMM_PARALLEL_FLOPS`
    floating-point operations (`matmul` below; the kernels' own loops have the same kind of
    threshold, about a millisecond of serial work, in csrc/_common.pxd `minifm_threads_for`);
  * on a machine that other processes keep busy, any fork-join costs up to a scheduler time slice
    per operation, and one thread is fastest: OMP_NUM_THREADS=1 (or `set_num_threads(1)`) sets the
    whole budget to one;
  * the OpenBLAS inside scipy (which the attention kernel calls from its OpenMP threads, tile by
    tile) runs on one thread while a kernel runs (`single_threaded_scipy_blas`), so the two pools
    never nest;
  * the OpenMP wait policy defaults to PASSIVE (set in minifm.kernels._backend before the runtime
    starts): an idle kernel thread sleeps at once instead of spinning against BLAS.

The OpenBLAS libraries are found among the shared objects the process has loaded (Linux's
/proc/self/maps) and driven through their thread-count functions with ctypes; per-call changes use
`openblas_set_num_threads_local` (OpenBLAS >= 0.3.27), which affects the calling thread only.
Simplification: where no OpenBLAS is found (another BLAS, another OS) BLAS threading is left alone
and `matmul` is plain `np.matmul`.
"""
from __future__ import annotations

import contextlib
import ctypes
import os

import numpy as np

from minifm.kernels._backend import _load

# A matrix product below this many floating-point operations (2 m k n) runs on one BLAS thread.
# At ~90 GFLOP/s per core (AVX-512 OpenBLAS on the team's machine) 5e7 FLOP is ~0.55 ms of work:
# enough to pay for waking a second thread on an idle machine (tens of microseconds), while every
# product of the benchmark's tiny model (at most 2 x 1024 x 64 x 256 = 3.4e7) stays serial.
GEMM_PARALLEL_FLOPS = 5e7


class _OpenBLAS:
    """ctypes handle on one loaded OpenBLAS library's thread-count functions."""

    def __init__(self, path: str):
        self.path = path
        lib = ctypes.CDLL(path)
        self._set_global = self._get_global = None
        for suffix in ("64_", "", "_64"):
            for prefix in ("scipy_openblas", "openblas"):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None and self._set_global is None:
                    self._set_global, self._get_global = setter, getter
        if self._set_global is None:
            raise OSError(f"{path} has no openblas_set_num_threads")
        self._set_global.argtypes, self._set_global.restype = [ctypes.c_int], None
        self._get_global.argtypes, self._get_global.restype = [], ctypes.c_int
        self._set_local = getattr(lib, "openblas_set_num_threads_local", None)
        if self._set_local is not None:
            self._set_local.argtypes, self._set_local.restype = [ctypes.c_int], ctypes.c_int

    def get(self) -> int:
        return int(self._get_global())

    def set(self, threads: int) -> None:
        self._set_global(int(threads))

    def set_local(self, threads: int) -> int:
        """Thread count for the calling thread only (0 = follow the global one); returns the previous."""
        if self._set_local is None:
            previous = self.get()
            self.set(threads if threads > 0 else previous)
            return previous
        return int(self._set_local(int(threads)))


def _loaded_openblas() -> dict[str, _OpenBLAS]:
    """The OpenBLAS libraries loaded in this process, keyed 'numpy' (the one behind `@`) or 'scipy'."""
    found: dict[str, _OpenBLAS] = {}
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return found
    for path in paths:
        owner = "numpy" if "numpy" in path else "scipy" if "scipy" in path else "numpy"
        if owner in found:
            continue
        try:
            found[owner] = _OpenBLAS(path)
        except OSError:
            continue
    return found


_libraries: dict[str, _OpenBLAS] | None = None


def _openblas(owner: str) -> _OpenBLAS | None:
    """The numpy or scipy OpenBLAS handle (looked up once scipy's BLAS is loaded), or None."""
    global _libraries
    if _libraries is None or (owner == "scipy" and "scipy" not in _libraries):
        if owner == "scipy":
            import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's OpenBLAS)
        _libraries = _loaded_openblas()
        if "scipy" not in _libraries and "numpy" in _libraries:
            _libraries["scipy"] = _libraries["numpy"]  # one shared system OpenBLAS
    return _libraries.get(owner)


def _initial_budget() -> int:
    parallel = _load("parallel")
    if parallel is not None:
        return max(1, int(parallel.num_threads()))
    numpy_blas = _openblas("numpy")
    return numpy_blas.get() if numpy_blas is not None else max(1, os.cpu_count() or 1)


_budget: int | None = None


def num_threads() -> int:
    """Threads minifm uses for one big operation (the kernels' OpenMP loops and BLAS alike)."""
    global _budget
    if _budget is None:
        _budget = _initial_budget()
    return _budget


def set_num_threads(threads: int) -> None:
    """Set the budget for both pools: OpenMP's thread count and the OpenBLAS behind NumPy."""
    global _budget
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    _budget = int(threads)
    parallel = _load("parallel")
    if parallel is not None:
        parallel.set_num_threads(_budget)
    numpy_blas = _openblas("numpy")
    if numpy_blas is not None:
        numpy_blas.set(_budget)
    global _blas_limit
    _blas_limit = _budget


_blas_limit: int | None = None  # NumPy's OpenBLAS thread count as the user left it (OPENBLAS_NUM_THREADS)


def gemm_threads(m: int, k: int, n: int) -> int:
    """BLAS threads for an (m, k) @ (k, n) product: 1 below GEMM_PARALLEL_FLOPS, else the budget
    (never more than the OpenBLAS behind NumPy was started with)."""
    if 2.0 * m * k * n < GEMM_PARALLEL_FLOPS:
        return 1
    return max(1, min(num_threads(), _numpy_blas_limit()))


def _numpy_blas_limit() -> int:
    global _blas_limit
    if _blas_limit is None:
        numpy_blas = _openblas("numpy")
        _blas_limit = numpy_blas.get() if numpy_blas is not None else num_threads()
    return _blas_limit


# Below this many rows, a @ b with b a transposed (Fortran-ordered) matrix is computed as (b^T a^T)^T.
FEW_ROWS = 32


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, C-contiguous. OpenBLAS is slow for a few rows times a transposed matrix, which is the
    Linear layer's x @ W^T in KV-cached decoding (8 x 128 @ 128 x 2048: ~170 us, against ~90 us for
    (W @ x^T)^T, which reads W in its own row-major order); larger products are left to a @ b."""
    if a.shape[0] <= FEW_ROWS and b.flags.f_contiguous and not b.flags.c_contiguous:
        return np.ascontiguousarray((b.T @ a.T).T)
    return a @ b


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D arrays, on as many BLAS threads as its size earns (see gemm_threads)."""
    numpy_blas = _openblas("numpy")
    if numpy_blas is None:
        return _product(a, b)
    wanted = gemm_threads(a.shape[0], a.shape[1], b.shape[1])
    if wanted == _numpy_blas_limit():
        return _product(a, b)  # the library's own setting already (e.g. a budget of 1): no ctypes calls
    previous = numpy_blas.set_local(wanted)
    try:
        return _product(a, b)
    finally:
        numpy_blas.set_local(previous)


@contextlib.contextmanager
def single_threaded_scipy_blas():
    """Run the block with scipy's OpenBLAS on one thread.

    The attention kernel calls small BLAS products from inside its own OpenMP threads; an OpenBLAS
    that also spread each tile over threads would oversubscribe the cores. Uses the global setting
    because the calls come from OpenMP threads that Python cannot reach.
    """
    scipy_blas = _openblas("scipy")
    if scipy_blas is None:
        yield
        return
    previous = scipy_blas.get()
    if previous == 1:
        yield
        return
    scipy_blas.set(1)
    try:
        yield
    finally:
        scipy_blas.set(previous)
