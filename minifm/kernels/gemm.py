"""Row-block matrix products, for the mid-sized products of training small models: NumPy reference + dispatch.

Compiled twin: csrc/gemm.pyx (module minifm.kernels._gemm).

The math, for a (M, K) and b (K, N), out's rows cut into `row_blocks(M, K, N)` blocks [r0, r1):

    out[r0:r1, :] = a[r0:r1, :] @ b          one single-threaded BLAS product per block

and the blocks shared among the kernels' OpenMP threads. Why, and when it runs: a product of the tiny
model's training step (1024 x 64 @ 64 x 256: 3.4e7 floating-point operations, ~0.6 ms on one core)
is below minifm.kernels.threads.GEMM_PARALLEL_FLOPS, the size from which OpenBLAS's own threads pay
on a machine with more than two cores; and on a machine with at most two, minifm runs OpenBLAS on one
thread for every product, because its workers spin on their cores after each product, against the
next operation and against other processes (measured: torch's step in another process became 2x
slower when they did). The kernels' OpenMP threads sleep after a ~0.1 ms spin and follow the load, so
minifm.kernels.threads.matmul sends here every product for which `applies(a, b)`: float32 or
float64 operands whose rows or columns are contiguous (W.T of a Linear layer's weight, x.T in its
gradient), at least two row blocks, the module built, unless the product is big enough for
OpenBLAS's own threads and those are more than one (threads.gemm_threads).

Bits: the blocks depend on the shapes and the block limit alone (minifm.kernels.threads sets it from the
machine's usable cores, never from the threads in use), so a product gives the same bits under any load and
on any fixed count but one (a fixed single thread gets a limit of 1: no blocks).
They may differ in the last bits from NumPy's `a @ b` (another OpenBLAS build, other block
heights), which is the reference twin here.
"""
from __future__ import annotations

import ctypes

import numpy as np

from minifm.kernels._backend import _load, compiled

# A row block does at least this many floating-point operations (~60-100 us on one core): a thread
# woken for less costs about what it saves.
BLOCK_FLOPS = 4e6

# ... and has at least this many rows: OpenBLAS is slow on a few rows times a transposed matrix
# (minifm.kernels.threads.FEW_ROWS), and each block packs b again.
MIN_BLOCK_ROWS = 32

# At most this many blocks (a power of two). A caller lowers it to two per core (minifm.kernels.threads does):
# on one thread the blocks of a product cost more than one call, measured on the 2-core AMD host: 2 blocks
# +0-2%, 4 blocks +2-5%, 8 blocks +8-15% (each block packs b again).
MAX_BLOCKS = 8

_FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


def row_blocks(m: int, k: int, n: int, max_blocks: int = MAX_BLOCKS) -> int:
    """Blocks of out's rows for an (m, k) @ (k, n) product, from the shapes and `max_blocks` alone: the
    largest power of two up to max_blocks whose blocks keep at least BLOCK_FLOPS and MIN_BLOCK_ROWS rows
    each (1: no split)."""
    flops = 2.0 * m * k * n
    blocks = 1
    while (2 * blocks <= max_blocks and flops / (2 * blocks) >= BLOCK_FLOPS
           and m // (2 * blocks) >= MIN_BLOCK_ROWS):
        blocks *= 2
    return blocks


def _blas_layout(x: np.ndarray) -> bool:
    """True when x's rows or columns are contiguous elements (BLAS reads it in place, transposed or not)."""
    return x.flags.c_contiguous or x.flags.f_contiguous


def applies(a: np.ndarray, b: np.ndarray, max_blocks: int = MAX_BLOCKS) -> bool:
    """True when the compiled module computes a @ b in row blocks, at most max_blocks (see the module docstring)."""
    try:  # (no isinstance checks: this runs before every product; a non-array has no .ndim or .dtype)
        if not (a.ndim == 2 and b.ndim == 2 and a.dtype in _FLOAT_TYPES and b.dtype == a.dtype
                and a.shape[1] == b.shape[0] and a.shape[1] > 0 and b.shape[1] > 0):
            return False
    except AttributeError:
        return False
    kernel = compiled("gemm")
    return (row_blocks(a.shape[0], a.shape[1], b.shape[1], max_blocks) > 1 and _blas_layout(a) and _blas_layout(b)
            and kernel is not None and kernel.bound())


# The names of sgemm and dgemm with 64-bit integers, as BLAS builds export them: NumPy's wheels ship
# OpenBLAS with scipy's prefix and the ILP64 suffix; a plain ILP64 OpenBLAS has the suffix only.
_ILP64_NAMES = (("scipy_sgemm_64_", "scipy_dgemm_64_"), ("sgemm_64_", "dgemm_64_"))


def bind_blas(library_path: str) -> bool:
    """Give the compiled kernel the sgemm and dgemm of the BLAS library at `library_path` (NumPy's:
    minifm.kernels.threads finds it); False when the kernel is not built or the library has no
    64-bit-integer sgemm/dgemm (then `applies` stays False and NumPy's `@` computes every product)."""
    compiled_module = _load("gemm")  # (not `compiled`: binding must not depend on a forced reference path)
    if compiled_module is None:
        return False
    try:
        library = ctypes.CDLL(library_path)  # already loaded by NumPy: the same handle
    except OSError:
        return False
    for sgemm_name, dgemm_name in _ILP64_NAMES:
        sgemm, dgemm = getattr(library, sgemm_name, None), getattr(library, dgemm_name, None)
        if sgemm is not None and dgemm is not None:
            compiled_module.bind(ctypes.cast(sgemm, ctypes.c_void_p).value, ctypes.cast(dgemm, ctypes.c_void_p).value)
            return True
    return False


def blas_bound() -> bool:
    """True when the compiled kernel is built and bind_blas gave it a BLAS (whether or not the NumPy
    reference path is forced for now): products can then run in row blocks."""
    compiled_module = _load("gemm")
    return compiled_module is not None and compiled_module.bound()


def product_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D float arrays a (M, K) and b (K, N) of one dtype: (M, N), C-contiguous."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype not in _FLOAT_TYPES:
            raise TypeError(f"{name} must be a 2-D float32 or float64 numpy array, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    if b.dtype != a.dtype:
        raise TypeError(f"b dtype {b.dtype} must equal a dtype {a.dtype}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a {a.shape} @ b {b.shape}: inner sizes {a.shape[1]} and {b.shape[0]} differ")
    return np.ascontiguousarray(a @ b)  # (M, N)


def compiled_product(a: np.ndarray, b: np.ndarray, max_blocks: int = MAX_BLOCKS, bias: np.ndarray | None = None
                     ) -> np.ndarray:
    """a @ b (+ bias, a contiguous (N,) array of a's dtype, on every row) by the compiled kernel in
    row_blocks(M, K, N, max_blocks) blocks, for callers that checked `applies(a, b, max_blocks)` and keep
    NumPy's BLAS on one thread (minifm.kernels.threads.matmul does both)."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)  # (M, N)
    compiled("gemm").product(a, b, out, row_blocks(a.shape[0], a.shape[1], b.shape[1], max_blocks), bias)
    return out
