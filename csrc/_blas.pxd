# cython: language_level=3
"""Row-major matrix products through BLAS: the one wrapper the kernels call (csrc/attention.pyx's tile
products, csrc/quantized.pyx's prefill tiles, csrc/gemm.pyx's row blocks).

The BLAS is scipy's (scipy.linalg.cython_blas: OpenBLAS in scipy's wheels, 32-bit integers). The
kernels call it from their OpenMP threads, so the caller keeps that library on one thread
(minifm.kernels.threads.single_threaded_scipy_blas): its own thread pool never nests inside ours.
"""
from scipy.linalg.cython_blas cimport sgemm, dgemm

from _common cimport real


cdef inline void gemm(char trans_a, char trans_b, int m, int n, int k, real alpha,
                      const real* a, int lda, const real* b, int ldb, real beta,
                      real* c, int ldc) noexcept nogil:
    """Row-major C (m x n) = alpha * op(A) op(B) + beta * C, where op(X) is X (flag 'N') or X^T ('T').

    BLAS is column-major; a row-major matrix is the transpose of the same memory read column-major,
    so the row-major product C = op(A) op(B) is the column-major product C^T = op(B)^T op(A)^T:
    swap the operands (and m with n) and keep each one's transpose flag. lda, ldb and ldc are BLAS's
    "leading dimensions": here the row strides of the row-major A, B and C, in elements.
    """
    if real is float:
        sgemm(&trans_b, &trans_a, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&trans_b, &trans_a, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
