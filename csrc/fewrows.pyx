# cython: language_level=3
"""Cython twin of minifm/kernels/fewrows.py (reference: fewrows_reference).

Products of a few float32 input rows (1..MAX_ROWS, the batch of KV-cached decoding) with row-major
weight matrices that sit in the caches (a small model's layers and output head):

    out_i[m, n] = sum_k x[m, k] * weights_i[n, k]        x (M, K), weights_i (N_i, K), out_i (M, N_i)

Why not BLAS or the matvec kernel: measured on the busy 2-core machine (one thread, best of 40),
OpenBLAS took 5-14x one row's time for 2-8 rows of the 8 x 256 @ 256 x 8192 output head (GEMM packs
its operands on each call, where one row takes the GEMV route), and the matvec kernel (csrc/matvec.pyx), which
reduces a 32-lane partial sum for every (row, input) pair, took 15-26 us against GEMV's 5-9 us for a
256 x 256 weight and one row.
Here a tile of R weight rows times G input rows (R * G <= 8: four rows for one input, four rows for
two, two rows for three or four) keeps R * G 8-float vector sums in registers and loads R + G vectors
per R * G multiply-adds; inputs beyond four go in further groups (GCC/Clang vector extensions: AVX
where the build targets it, SSE pairs otherwise).

Summation order of every output, fixed by K alone (not by M, the tile, the grouping or the thread
count): one vector sum over the 8-float chunks in order (each step one fused multiply-add where the
target has FMA, spelt out so the compiler cannot contract some tiles and not others), its lanes added
as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), then the K mod 8 last products one at a time.
Each output is computed by one thread, so results are the same on any number of threads, whether a
weight comes alone or with others, and whether an input row comes alone or in a batch.
Threads: the budget's count when the weights of one call hold at least `parallel_bytes` bytes.
"""
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

cdef enum:
    ROWS_PER_BLOCK = 8  # weight rows per unit of work handed to a thread

cdef extern from *:
    """
    #if MINIFM_OPENMP
    #include <omp.h>
    static int minifm_fewrows_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int minifm_fewrows_max_threads(void) { return 1; }
    #endif
    """
    int max_threads "minifm_fewrows_max_threads"() noexcept nogil

cdef extern from "_fewrows.h":
    void fewrows_rows "minifm_fewrows_rows"(const float* x, Py_ssize_t batch, Py_ssize_t n, const float* w,
                                             Py_ssize_t first, Py_ssize_t last, float* out,
                                             Py_ssize_t n_out) noexcept nogil


def fewrows_many(const float[:, ::1] x, tuple weights, tuple outs, Py_ssize_t parallel_bytes):
    """outs[i][:] = x @ weights[i]^T for x (M, K), weights[i] (N_i, K), outs[i] (M, N_i): float32,
    C-contiguous. Runs on the OpenMP budget's threads when the weights hold at least parallel_bytes
    bytes, else on one."""
    cdef Py_ssize_t count = len(weights), batch = x.shape[0], width = x.shape[1]
    cdef Py_ssize_t matrix, block, first_row, total_blocks = 0, weight_bytes = 0
    cdef const float[:, ::1] weight
    cdef float[:, ::1] out
    cdef int threads
    if len(outs) != count:
        raise ValueError(f"got {count} weights but {len(outs)} outputs")
    if count == 0 or batch == 0 or width == 0:
        raise ValueError("fewrows_many needs at least one weight, one input row and one input column")
    cdef const float** weight_data = <const float**>malloc(count * sizeof(float*))
    cdef float** out_data = <float**>malloc(count * sizeof(float*))
    cdef Py_ssize_t* sizes = <Py_ssize_t*>malloc(count * sizeof(Py_ssize_t))
    cdef Py_ssize_t* first_block = <Py_ssize_t*>malloc((count + 1) * sizeof(Py_ssize_t))  # of each weight
    if weight_data == NULL or out_data == NULL or sizes == NULL or first_block == NULL:
        free(weight_data)
        free(out_data)
        free(sizes)
        free(first_block)
        raise MemoryError()
    try:
        for matrix in range(count):
            weight = weights[matrix]
            out = outs[matrix]
            if weight.shape[1] != width or weight.shape[0] == 0:
                raise ValueError(f"weights[{matrix}] has shape {tuple(weight.shape)[:2]}, expected (N > 0, {width})")
            if out.shape[0] != batch or out.shape[1] != weight.shape[0]:
                raise ValueError(f"outs[{matrix}] has shape {tuple(out.shape)[:2]}, expected {(batch, weight.shape[0])}")
            weight_data[matrix] = &weight[0, 0]
            out_data[matrix] = &out[0, 0]
            sizes[matrix] = weight.shape[0]
            first_block[matrix] = total_blocks
            total_blocks += (weight.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
            weight_bytes += weight.shape[0] * width * sizeof(float)
        first_block[count] = total_blocks
        threads = max_threads() if weight_bytes >= parallel_bytes else 1
        with nogil:
            for block in prange(total_blocks, schedule="static", num_threads=threads):
                matrix = 0
                while block >= first_block[matrix + 1]:
                    matrix = matrix + 1  # (not +=, which prange would read as a reduction)
                first_row = ROWS_PER_BLOCK * (block - first_block[matrix])
                fewrows_rows(&x[0, 0], batch, width, weight_data[matrix], first_row,
                             min(first_row + ROWS_PER_BLOCK, sizes[matrix]), out_data[matrix], sizes[matrix])
    finally:
        free(weight_data)
        free(out_data)
        free(sizes)
        free(first_block)
