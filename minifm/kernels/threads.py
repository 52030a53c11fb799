"""How many threads minifm's two thread pools use, and when an operation is big enough to use them.

A training step runs on two kinds of worker threads: the OpenMP threads of the Cython kernels
(csrc/*.pyx, libgomp) and the pthreads of OpenBLAS, which NumPy's `@` calls for large Linear layers
(scipy's own OpenBLAS also runs the attention kernel's tile products). A parallel operation
finishes only when its slowest thread does: waking a worker costs tens of microseconds on an idle
machine, but up to a scheduler time slice (milliseconds) when another process holds the core, and
an OpenBLAS worker that has just finished keeps spinning on its core for a while (about 2^28
cycles) where it competes with everyone else. On a 2-core machine beside one other busy process,
two threads made a training step 1.6-4.5x and a 20-step pretrain 2.2x slower than one thread
(docs/performance.md, "Threads under load"), while idle they gained ~2% at most.

The default policy, chosen from those measurements:

  * the kernels' OpenMP loops use one thread per core that other processes leave free
    (`kernel_threads_for_load`): the CPU time the other processes took on this process's cores is
    measured from /proc/stat minus this process's own CPU time, over windows of
    `LOAD_CHECK_SECONDS`, and a core counts as taken from half a core's use on. The first decision
    uses the 1-minute load average. The check runs from `matmul` and the attention kernel's calls
    (both happen in every model step), at most once per window, and costs one clock read per call
    between checks. A kernel gives the same bits on any number of threads (rows, heads and blocks
    are split, never a reduction), so following the load changes speed, never results;
  * BLAS products use a fixed thread count (`default_blas_threads`): one thread on a machine with at
    most two usable cores, all usable cores above that (there a product of at least
    `GEMM_PARALLEL_FLOPS` runs on them, smaller ones on one). OpenBLAS gives different bits for one
    and two threads, so its count never follows the load: the same run gives the same weights on a
    busy or an idle machine, and a resumed run continues bit-for-bit;
  * the OpenMP wait policy is PASSIVE after a spin of about 0.1 ms (OMP_WAIT_POLICY and libgomp's
    GOMP_SPINCOUNT, set in minifm.kernels._backend before the runtime starts): an idle kernel thread
    polls briefly, so the next kernel a few tens of microseconds later finds it awake, then sleeps
    instead of spinning against BLAS, the main thread and other processes;
  * a product that runs on one BLAS thread (all of them on a machine with at most two cores, those
    below GEMM_PARALLEL_FLOPS above that) and is big enough to split goes to the row-block kernel
    (minifm/kernels/gemm.py): blocks of its output rows, each one single-threaded call of NumPy's
    OpenBLAS, shared among the kernels' OpenMP threads, so it uses the cores the load leaves free
    without OpenBLAS's spinning workers. The blocks depend on the shapes and on the machine's usable
    cores (`row_block_limit`: at most two blocks per core, as blocks cost a little on one thread),
    never on the threads in use: the same bits under any load (a count of one the user fixes runs
    products whole, see below);
  * products of a few rows with a Linear layer's weight (`a @ W.T`, at most matvec.MAX_ROWS rows:
    KV-cached decoding) are not BLAS products: `matmul` sends them to the matvec kernel
    (minifm/kernels/matvec.py), which runs on the kernels' OpenMP threads and so follows the load.
    Such a product is bound by memory bandwidth, which a second core raises (measured 1.3-1.5x on
    the 2-core machine, docs/performance.md "Real model: SmolLM2-135M"), and the kernel gives the
    same bits on any thread count, so using both cores costs no reproducibility;
  * the OpenBLAS inside scipy (which the attention kernel calls from its OpenMP threads, tile by
    tile) runs on one thread while a kernel runs (`single_threaded_scipy_blas`), so pools never nest.

Overrides: MINIFM_NUM_THREADS=N (or `set_num_threads(N)`) fixes both pools to N threads, with
large products on N BLAS threads and no load following: MINIFM_NUM_THREADS=1 is the fully
single-threaded run, and its products are not cut into row blocks (each block costs a little, and one
thread gains nothing from them), so its bits may differ from a run on more threads. On a machine with
at most two cores the products stay on one BLAS thread for any N, cut into row blocks shared by the N
kernel threads (`fixed_blas_threads`): faster there, and a run gives the same bits on any N >= 2 as
with the default budget. OMP_NUM_THREADS=N does the same (the OpenMP runtime and OpenBLAS read it too);
OPENBLAS_NUM_THREADS caps the BLAS threads; OMP_WAIT_POLICY replaces the default wait (and its spin),
GOMP_SPINCOUNT its spin.

The BLAS libraries are found and driven with threadpoolctl. Its context managers cost too much for
a per-product switch (measured on the 2-core machine: `threadpool_limits` ~3 ms, as it scans the
loaded libraries each time; `ThreadpoolController.limit` ~40 us; an 8 x 64 @ 64 x 64 product ~8 us),
so the libraries are looked up once and `matmul` calls the NumPy library's `set_num_threads`
(~4 us) only when a product needs another thread count than the previous product: NumPy's
OpenBLAS is left on the count the last minifm product used, never above the BLAS threads chosen
above. `single_threaded_scipy_blas` restores scipy's count on exit, except when minifm's BLAS runs
on one thread (the default on 2 cores): then scipy's OpenBLAS is left on one thread, because
raising its count again after every attention call made KV-cached generation beside a busy process
1.2-2x slower than on one thread (docs/performance.md, "Threads under load").
Simplifications: NumPy's and scipy's OpenBLAS are told apart by their file paths (a wheel bundles
each under its own package directory; one system library serves both); where threadpoolctl finds
no BLAS it can drive, BLAS threading is left alone and `matmul` is plain `np.matmul`; without
/proc/stat (not Linux) the kernels keep the first decision; the load is followed in the thread that
calls minifm (OpenMP's thread count is a per-thread setting).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np
from threadpoolctl import ThreadpoolController

from minifm.kernels import gemm as gemm_kernel
from minifm.kernels import matvec as matvec_kernel
from minifm.kernels._backend import _load

# A matrix product below this many floating-point operations (2 m k n) runs on one BLAS thread.
# At ~90 GFLOP/s per core (AVX-512 OpenBLAS) 5e7 FLOP is ~0.55 ms of work: enough to pay for waking a
# second thread on an idle machine (tens of microseconds), while every product of the benchmark's
# tiny model (at most 2 x 1024 x 64 x 256 = 3.4e7) stays serial.
GEMM_PARALLEL_FLOPS = 5e7

# Below this many rows, a @ b with b a transposed (Fortran-ordered) matrix is computed as (b^T a^T)^T.
FEW_ROWS = 32

# The kernels' thread count follows the load measured over windows of this many seconds.
LOAD_CHECK_SECONDS = 0.5

# Machines with at most this many usable cores run BLAS products on one thread by default.
SERIAL_BLAS_MAX_CORES = 2


# ------------------------------------------------------------------------------ the decisions


def kernel_threads_for_load(usable_cores: int, busy_elsewhere: float) -> int:
    """OpenMP threads for the kernels when other processes keep `busy_elsewhere` cores busy (an
    average over a recent window): one per core they leave free, at least one. A core counts as
    taken once they use half of it: a thread that must share a core holds up every parallel loop."""
    taken = int(max(0.0, busy_elsewhere) + 0.5)
    return max(1, min(usable_cores, usable_cores - taken))


def default_blas_threads(usable_cores: int) -> int:
    """BLAS threads for large products when the user fixed none: 1 on machines with at most
    SERIAL_BLAS_MAX_CORES usable cores (there two threads gained ~2% at most idle and lost 1.6-4.5x
    beside one busy process), every usable core above that."""
    return 1 if usable_cores <= SERIAL_BLAS_MAX_CORES else usable_cores


def fixed_blas_threads(threads: int, usable_cores: int) -> int:
    """BLAS threads for large products when the user fixed `threads` (MINIFM_NUM_THREADS,
    set_num_threads): `threads`, except on a machine with at most SERIAL_BLAS_MAX_CORES usable cores
    when the row-block kernel has its BLAS. There every product runs in row blocks on the kernels'
    `threads` threads, each block one single-threaded BLAS call: on two threads the small and medium
    training steps ran 1.27x and 1.11x faster than with OpenBLAS's own two threads, whose worker polls
    its core for a long while after each product, where the kernels' second thread needs it
    (docs/performance.md, "The benchmark's turns"). A run then gives the same bits on any count from two on
    as with the default budget (one fixed thread runs products whole: row_block_limit)."""
    if usable_cores <= SERIAL_BLAS_MAX_CORES and gemm_kernel.blas_bound():
        return 1
    return threads


def row_block_limit(usable_cores: int, fixed_threads: int | None = None) -> int:
    """The most row blocks the gemm kernel cuts a product into on a machine with `usable_cores` cores, or for
    the thread count the user fixed (`fixed_threads`, counted up to the cores): 1 for one, else the largest
    power of two up to two per core and gemm's MAX_BLOCKS. Two per core, because a woken thread starts late
    (tens of microseconds) and takes whatever blocks are left; not more, because each block costs a little
    on one thread (a block packs the right-hand operand again: the tiny model's step ran 2.5% slower on one
    thread with 4 blocks than with 1). The count never follows the threads in use (the load): the bits
    don't either. A user's fixed count of one thread is the exception that changes them (OpenBLAS gives
    other bits for about 5% of shapes when a product is cut into blocks); two or more give the bits of the
    default budget."""
    cores = usable_cores if fixed_threads is None else min(usable_cores, fixed_threads)
    if cores <= 1:
        return 1
    limit = 1
    while 2 * limit <= min(2 * cores, gemm_kernel.MAX_BLOCKS):
        limit *= 2
    return limit


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), or the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def requested_threads(environ=os.environ) -> int | None:
    """The thread count the user fixed with MINIFM_NUM_THREADS (or else OMP_NUM_THREADS), or None."""
    for name in ("MINIFM_NUM_THREADS", "OMP_NUM_THREADS"):
        text = environ.get(name, "").strip()
        if not text:
            continue
        first = text.split(",")[0]  # OpenMP allows a list, one count per nesting level
        if not first.isdigit() or int(first) < 1:
            raise ValueError(f"{name} must be a positive integer, got {text!r}")
        return int(first)
    return None


class _CpuMeter:
    """Cores kept busy by other processes: the busy time of this process's CPUs in /proc/stat
    minus this process's own CPU time, between two readings, divided by the wall time between them."""

    def __init__(self, cpus: set[int]):
        self.cpus = {f"cpu{cpu}" for cpu in cpus}
        self.ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        """(wall seconds, busy CPU seconds of our CPUs, this process's CPU seconds), or None."""
        try:
            with open("/proc/stat") as stat:
                lines = stat.read().splitlines()
        except OSError:
            return None
        busy_ticks = 0
        for line in lines:
            fields = line.split()
            if fields and fields[0] in self.cpus:
                # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy
                values = [int(v) for v in fields[1:9]]
                busy_ticks += sum(values) - values[3] - values[4]
        own = os.times()
        return time.monotonic(), busy_ticks / self.ticks_per_second, own.user + own.system

    def busy_elsewhere(self) -> float | None:
        """Other processes' average use of our CPUs, in cores, since the previous call."""
        now = self._read()
        if now is None or self.last is None:
            return None
        wall, busy, own = (a - b for a, b in zip(now, self.last))
        self.last = now
        return max(0.0, busy - own) / wall if wall > 0 else None


# ------------------------------------------------------------------------- the BLAS libraries


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
        if self.numpy is not None:
            gemm_kernel.bind_blas(self.numpy.filepath)

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


# --------------------------------------------------------------------------------- the state


class _Policy:
    """The current thread counts: the kernels' (following the load unless fixed) and BLAS's."""

    def __init__(self):
        self.cores = usable_cores()
        numpy_blas = _blas().numpy
        blas_started_with = numpy_blas.get_num_threads() if numpy_blas is not None else self.cores
        fixed = requested_threads()
        if fixed is None:
            self.follows_load = True
            busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
            self.kernel_threads = kernel_threads_for_load(self.cores, busy)
            # never above what OpenBLAS was started with (OPENBLAS_NUM_THREADS)
            self.blas_threads = max(1, min(default_blas_threads(self.cores), blas_started_with))
            self.row_blocks = row_block_limit(self.cores)
        else:
            self.fix(fixed, blas_limit=blas_started_with)
        self.meter = _CpuMeter(set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                               else set(range(self.cores)))
        self.next_check = time.monotonic() + LOAD_CHECK_SECONDS
        self.blas_threads_now = None  # NumPy's BLAS count as minifm last set it
        self.apply()

    def fix(self, threads: int, blas_limit: int | None = None) -> None:
        """Fix the budget to `threads`, no load following: the kernels' count, BLAS's (fixed_blas_threads, at
        most blas_limit) and the row-block limit that go with it. The caller applies it."""
        self.follows_load = False
        self.kernel_threads = threads
        blas = fixed_blas_threads(threads, self.cores)
        self.blas_threads = blas if blas_limit is None else max(1, min(blas, blas_limit))
        self.row_blocks = row_block_limit(self.cores, threads)

    def apply(self) -> None:
        parallel = _load("parallel")
        if parallel is not None:
            parallel.set_num_threads(self.kernel_threads)
        self.set_numpy_blas(self.blas_threads)

    def set_numpy_blas(self, threads: int) -> None:
        numpy_blas = _blas().numpy
        if numpy_blas is not None and threads != self.blas_threads_now:
            numpy_blas.set_num_threads(threads)
            self.blas_threads_now = threads

    def follow_load(self) -> None:
        """Re-decide the kernels' thread count when a measuring window has passed."""
        now = time.monotonic()
        if not self.follows_load or now < self.next_check:
            return
        self.next_check = now + LOAD_CHECK_SECONDS
        busy = self.meter.busy_elsewhere()
        if busy is None:
            return
        threads = kernel_threads_for_load(self.cores, busy)
        if threads != self.kernel_threads:
            self.kernel_threads = threads
            parallel = _load("parallel")
            if parallel is not None:
                parallel.set_num_threads(threads)


_policy: _Policy | None = None


def _state() -> _Policy:
    global _policy
    if _policy is None:
        _policy = _Policy()
    return _policy


# ------------------------------------------------------------------------------ the public API


def num_threads() -> int:
    """Threads the kernels' parallel loops use now (see the module docstring for how it is chosen)."""
    return _state().kernel_threads


def blas_threads() -> int:
    """Threads a BLAS product of at least GEMM_PARALLEL_FLOPS runs on (a fixed count)."""
    return _state().blas_threads


def row_blocks() -> int:
    """The most row blocks the gemm kernel cuts a product into under this budget (1: products run whole)."""
    return _state().row_blocks


def follows_load() -> bool:
    """True when the kernels' thread count follows the machine's load (no count was fixed)."""
    return _state().follows_load


def follow_load() -> None:
    """Re-decide the kernels' thread count when a measuring window has passed (for kernels that call
    neither matmul nor single_threaded_scipy_blas, which do it themselves)."""
    _state().follow_load()


def set_num_threads(threads: int) -> None:
    """Fix both pools to `threads` (no load following): the kernels' OpenMP loops and large BLAS products
    (these on fixed_blas_threads(threads, cores): in row blocks on the kernels' threads on a machine with
    at most two cores)."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    state = _state()
    state.fix(int(threads))
    state.apply()


def gemm_threads(m: int, k: int, n: int) -> int:
    """BLAS threads for an (m, k) @ (k, n) product: 1 below GEMM_PARALLEL_FLOPS, else blas_threads()."""
    if 2.0 * m * k * n < GEMM_PARALLEL_FLOPS:
        return 1
    return blas_threads()


def _is_transposed_weight(b: np.ndarray) -> bool:
    """True for W.T with W a row-major matrix: the Linear layer's right-hand operand."""
    return b.flags.f_contiguous and not b.flags.c_contiguous


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, C-contiguous. OpenBLAS is slow for a few rows times a transposed matrix, which is the
    Linear layer's x @ W^T in KV-cached decoding (8 x 128 @ 128 x 2048: ~170 us, against ~90 us for
    (W @ x^T)^T, which reads W in its own row-major order); larger products are left to a @ b."""
    if a.shape[0] <= FEW_ROWS and _is_transposed_weight(b):
        return np.ascontiguousarray((b.T @ a.T).T)
    return a @ b


def matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """a @ b for 2-D arrays: the matvec kernel for a few rows times a transposed weight (see the
    module docstring); a product that would run on one BLAS thread (see gemm_threads) in row blocks
    on the kernels' threads when the gemm kernel applies (minifm/kernels/gemm.py); else BLAS on as
    many threads as the product's size earns. With `bias` (b's column count, a's dtype), a @ b + bias on
    every row: the gemm kernel adds it to each block while the block is in cache."""
    state = _state()
    state.follow_load()
    if _is_transposed_weight(b) and matvec_kernel.applies(a, b.T):
        out = matvec_kernel.compiled_products(a, (b.T,))[0]
    else:
        threads = gemm_threads(a.shape[0], a.shape[1], b.shape[1])
        state.set_numpy_blas(threads)
        if threads == 1 and gemm_kernel.applies(a, b, state.row_blocks):
            if _fits_the_rows(bias, b):
                return gemm_kernel.compiled_product(a, b, state.row_blocks, bias)
            out = gemm_kernel.compiled_product(a, b, state.row_blocks)
        else:
            out = _product(a, b)
    if bias is not None:
        out += bias
    return out


def _fits_the_rows(bias, b: np.ndarray) -> bool:
    """True when `bias` is None or a contiguous (N,) array of b's dtype, N = b's column count."""
    return bias is None or (isinstance(bias, np.ndarray) and bias.shape == (b.shape[1],) and bias.dtype == b.dtype
                            and bias.flags.c_contiguous)


def matmul_weights(a: np.ndarray, weights) -> list[np.ndarray]:
    """[matmul(a, W.T) for W in weights], the same numbers; when the matvec kernel takes every
    product, it computes them in one parallel region (q, k, v or gate, up share their input)."""
    if matvec_kernel.applies(a, weights):
        _state().follow_load()
        return matvec_kernel.compiled_products(a, weights)
    return [matmul(a, weight.T) for weight in weights]


@contextlib.contextmanager
def single_threaded_scipy_blas():
    """Run the block with scipy's OpenBLAS on one thread (and the kernels' count following the load).

    The attention kernel calls small BLAS products from inside its own OpenMP threads; an OpenBLAS
    that also spread each tile over threads would oversubscribe the cores. Uses the library's global
    setting because the calls come from OpenMP threads that Python cannot reach.
    """
    state = _state()
    state.follow_load()
    scipy_blas = _blas().scipy_blas()
    if scipy_blas is None:
        yield
        return
    previous = scipy_blas.get_num_threads()
    if previous == 1:
        yield
        return
    scipy_blas.set_num_threads(1)
    if state.blas_threads == 1:  # minifm's BLAS runs on one thread anyway: leave scipy's there
        yield
        return
    try:
        yield
    finally:
        scipy_blas.set_num_threads(previous)
