# cython: language_level=3
"""Cython twin of minifm/kernels/gemm.py (reference: product_reference): out = a @ b as independent
blocks of out's rows, each block one single-threaded call of NumPy's BLAS, the blocks shared among the kernels'
OpenMP threads.

    out[r0:r1, :] = a[r0:r1, :] @ b          for each row block [r0, r1)

Why not OpenBLAS's own threads: a worked OpenBLAS thread keeps spinning on its core after the product
(about 2^28 cycles), where it competes with the next operation and with every other process; the
kernels' OpenMP threads poll ~0.1 ms, then sleep (minifm/kernels/_backend.py), and follow the machine's load
(minifm/kernels/threads.py). The number of blocks is chosen from the shapes and the machine's block
limit alone (minifm.kernels.gemm.row_blocks, threads.row_block_limit), never from the threads in use,
so the bits are the same however many threads take the blocks: each row of out is
computed by one BLAS call whose operands do not depend on the threads. The blocks are handed out
dynamically: the calling thread starts on the first block at once, a woken thread (tens of
microseconds later) takes what is left; in the tiny model's step this made the products' gain on two
threads 0.87-0.93x of the time without blocks against 0.93x with a static split.

Layouts: a and b may each be row-major (C order) or a transposed row-major matrix (Fortran order, as
W.T of a Linear layer's weight W, or x.T in a weight gradient): BLAS's transpose flags read both in
place, no copy. out is C-contiguous. float32 (sgemm) and float64 (dgemm).

Which BLAS: NumPy's own OpenBLAS, whose functions minifm.kernels.gemm.bind_blas looks up at run time and
binds here (not scipy's, which csrc/_blas.pxd links at build time): a product split here and one left to
NumPy's `@` then come from one library, and on the 2-core AMD host NumPy's build (OpenBLAS 0.3.31)
ran these shapes 1.1-1.9x faster per core than scipy's (0.3.30). Simplification: only a BLAS with
64-bit integers (NumPy's wheels ship one) is bound; with another, the kernel is not used.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uintptr_t

cimport _common as vec
from _common cimport real

# Serial cost of one floating-point operation in nanoseconds (BLAS on one core runs these products at
# ~45-65 GFLOP/s on the 2-core AMD host), for the threading decision.
cdef double NS_PER_FLOP = 0.02

# The BLAS behind NumPy, bound at run time (bind): its Fortran sgemm/dgemm with 64-bit integers.
ctypedef void (*sgemm64_t)(const char* trans_a, const char* trans_b, const int64_t* m, const int64_t* n,
                           const int64_t* k, const float* alpha, const float* a, const int64_t* lda,
                           const float* b, const int64_t* ldb, const float* beta, float* c,
                           const int64_t* ldc) noexcept nogil
ctypedef void (*dgemm64_t)(const char* trans_a, const char* trans_b, const int64_t* m, const int64_t* n,
                           const int64_t* k, const double* alpha, const double* a, const int64_t* lda,
                           const double* b, const int64_t* ldb, const double* beta, double* c,
                           const int64_t* ldc) noexcept nogil

cdef sgemm64_t _sgemm = NULL
cdef dgemm64_t _dgemm = NULL


def bind(uintptr_t sgemm_address, uintptr_t dgemm_address):
    """Use the sgemm and dgemm at these addresses (Fortran interface, 64-bit integers: NumPy's OpenBLAS)."""
    global _sgemm, _dgemm
    if sgemm_address == 0 or dgemm_address == 0:
        raise ValueError("bind: null function address")
    _sgemm = <sgemm64_t>sgemm_address
    _dgemm = <dgemm64_t>dgemm_address


def bound():
    """True once bind() has given the kernel its BLAS."""
    return _sgemm != NULL and _dgemm != NULL


cdef inline void _gemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, const real* a, int64_t lda,
                       const real* b, int64_t ldb, real* c, int64_t ldc) noexcept nogil:
    """Row-major C (m x n) = op(A) op(B), as csrc/_blas.pxd's gemm does it (operands swapped for the
    column-major BLAS), with the bound library's 64-bit integers."""
    cdef real one = 1, zero = 0
    if real is float:
        _sgemm(&trans_b, &trans_a, &n, &m, &k, &one, b, &ldb, a, &lda, &zero, c, &ldc)
    else:
        _dgemm(&trans_b, &trans_a, &n, &m, &k, &one, b, &ldb, a, &lda, &zero, c, &ldc)


cdef int64_t _operand_layout(str name, Py_ssize_t row_stride, Py_ssize_t column_stride, Py_ssize_t item,
                             char* trans) except -1:
    """BLAS's (transpose flag, leading dimension) for a 2-D operand with these byte strides: 'N' and the row
    stride for row-major memory, 'T' and the column stride for the transpose of a row-major matrix."""
    if column_stride == item and row_stride > 0 and row_stride % item == 0:
        trans[0] = b"N"
        return row_stride // item
    if row_stride == item and column_stride > 0 and column_stride % item == 0:
        trans[0] = b"T"
        return column_stride // item
    raise ValueError(f"{name} must have rows or columns of contiguous elements, got byte strides "
                     f"({row_stride}, {column_stride})")


cdef inline void _add_bias(real* rows, Py_ssize_t count, Py_ssize_t n, const real* bias) noexcept nogil:
    """rows[r, j] += bias[j] for `count` consecutive rows of n elements (while the block is still in cache)."""
    cdef Py_ssize_t r, j
    cdef real* row
    for r in range(count):
        row = rows + r * n
        for j in range(n):
            row[j] += bias[j]


def product(const real[:, :] a, const real[:, :] b, real[:, ::1] out, Py_ssize_t blocks,
            const real[::1] bias=None):
    """out[:] = a @ b (+ bias on every row) for a (M, K), b (K, N), out (M, N), bias (N,) or None, out's M
    rows split into `blocks` blocks of near-equal height (block i: rows i M // blocks to (i + 1) M // blocks),
    one BLAS call each, the block's bias added right after it by the same thread (the same float additions
    as `out += bias` afterwards, without a second pass over out).

    The caller keeps the bound BLAS on one thread (minifm.kernels.threads.matmul does).
    """
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1], item = sizeof(real)
    cdef Py_ssize_t block, first, last
    cdef const real* bias_values = NULL
    cdef char trans_a, trans_b
    cdef int64_t lda, ldb
    if not bound():
        raise RuntimeError("product: no BLAS bound (minifm.kernels.gemm.bind_blas binds NumPy's)")
    if b.shape[0] != k:
        raise ValueError(f"b has {b.shape[0]} rows, a has {k} columns")
    if out.shape[0] != m or out.shape[1] != n:
        raise ValueError(f"out has shape {(out.shape[0], out.shape[1])}, expected {(m, n)}")
    if blocks < 1 or blocks > max(m, 1):
        raise ValueError(f"blocks must be in [1, {max(m, 1)}], got {blocks}")
    if bias is not None:
        if bias.shape[0] != n:
            raise ValueError(f"bias has {bias.shape[0]} elements, b has {n} columns")
        if n > 0:
            bias_values = &bias[0]
    if m == 0 or n == 0:
        return
    if k == 0:
        out[:, :] = 0
        if bias_values != NULL:
            _add_bias(&out[0, 0], m, n, bias_values)
        return
    lda = _operand_layout("a", a.strides[0], a.strides[1], item, &trans_a)
    ldb = _operand_layout("b", b.strides[0], b.strides[1], item, &trans_b)
    with nogil:
        for block in prange(blocks, schedule="dynamic",
                            num_threads=vec.threads_for(blocks, NS_PER_FLOP * 2.0 * m * k * n)):
            first = block * m // blocks
            last = (block + 1) * m // blocks
            # a's rows first .. last - 1 start at &a[first, 0] in either layout: row-major, they are
            # consecutive rows; transposed, they are consecutive columns of the stored matrix
            _gemm(trans_a, trans_b, last - first, n, k, &a[first, 0], lda, &b[0, 0], ldb, &out[first, 0], n)
            if bias_values != NULL:
                _add_bias(&out[first, 0], last - first, n, bias_values)
