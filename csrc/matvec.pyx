# cython: language_level=3
"""Cython twin of minifm/kernels/matvec.py (reference: matvec_reference) and of minifm/kernels/fewrows.py
(reference: fewrows_reference).

Products of a few input rows with row-major weight matrices, one output per weight:

    out_i[m, n] = sum_k x[m, k] * weights_i[n, k]        x (M, K), weights_i (N_i, K), out_i (M, N_i)

i.e. out_i = x @ weights_i^T, the Linear layer's product when M is small (KV-cached decoding: M is
the batch size). Two entry points, one per regime, share one table of the weights of a call and one
split of the work: the rows of all the weights of one call (q, k and v, or gate and up, which share
their input) are one range of blocks of rows, split across the OpenMP threads in equal contiguous
parts (one parallel region instead of one per matrix; each thread reads one long run of memory).

matvec_many: weights that stream from memory (float32 or float64, M <= 4). Such a product reads every
weight once and does 2 M flops per weight it reads, so its speed is the memory bandwidth, not the
arithmetic. Each weight row is read from memory once and multiplied with each of the M input rows
while it sits in L1. Rows shorter than WIDE_ROWS values go one at a time through _common.pxd's
dot_lanes (32 running partial sums over consecutive values: the multiply-adds are not one chain of
dependent additions, and the weight is read as one sequential stream); wider rows go four at a time
through dot4 (four sums that share each loaded input value, fewer horizontal additions), the last
rows of a weight that do not fill a block of four through dot_lanes. Measured on the 2-core machine
(GB/s, two threads, medians of 11 interleaved runs): 576-wide rows 9.2-10.9 one at a time vs 8.5-10.1
four at a time; 1536-wide 10.7-11.7 vs 12.7-13.6; 16384-wide 13 vs 18-19.
One float32 input row (M = 1, the decoding case) takes csrc/_stream_dot.pxd's streaming product
instead, the one csrc/decode_step.pyx runs (each thread's rows read as four quarters side by side, four
sequential streams; 1.3-1.5x the rows-one-at-a-time loop above on 576-wide rows, csrc/decode_step.pyx's
module docstring): matvec and decode_step share one float32 matrix-vector kernel for a single row.

fewrows_many: weights that sit in the caches (float32, 1..16 rows: a small model's layers and output
head at a decoding batch). Why not BLAS or matvec_many: measured on the busy 2-core machine (one
thread, best of 40), OpenBLAS took 5-14x one row's time for 2-8 rows of the 8 x 256 @ 256 x 8192
output head (GEMM packs its operands on each call, where one row takes the GEMV route), and
matvec_many's loops, which reduce a 32-lane partial sum for every (row, input) pair, took 15-26 us
against GEMV's 5-9 us for a 256 x 256 weight and one row. Here (the C tiles of csrc/_fewrows.h, shared
with csrc/gpt2_step.pyx) a tile of R weight rows times G input rows (R * G <= 8: four rows for one
input, four rows for two, two rows for three or four) keeps R * G 8-float vector sums in registers and
loads R + G vectors per R * G multiply-adds; inputs beyond four go in further groups (GCC/Clang vector
extensions: AVX where the build targets it, SSE pairs otherwise). Blocks of TILE_ROWS = 8 weight rows.
Summation order of every output, fixed by K alone (not by M, the tile, the grouping or the thread
count): one vector sum over the 8-float chunks in order (each step one fused multiply-add where the
target has FMA, spelt out so the compiler cannot contract some tiles and not others), its lanes added
as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), then the K mod 8 last products one at a time;
so a row's outputs are the same alone or in a batch.

Each output is computed by one thread in an order fixed by the weight's shape (matvec_many: its width
and its row's place in its block; for M = 1 float32, and for fewrows_many, by its width alone), so the
result is the same on any number of threads and whether a weight comes alone or with others. Threads:
the budget's count when the weights of the call hold at least `parallel_bytes` bytes (a second core
adds memory bandwidth; below that, waking it costs more than it saves), else one.
"""
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

cimport _common as vec
from _common cimport real
from _stream_dot cimport stream_matvec_many

cdef enum:
    WIDE_ROWS = 1024  # matvec_many reads rows of at least this many values four at a time (see above)
    TILE_ROWS = 8  # fewrows_many's weight rows per unit of work handed to a thread

cdef extern from *:
    """
    #if MINIFM_OPENMP
    #include <omp.h>
    static int minifm_matvec_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int minifm_matvec_max_threads(void) { return 1; }
    #endif
    """
    int max_threads "minifm_matvec_max_threads"() noexcept nogil

cdef extern from "_fewrows.h":
    void fewrows_rows "minifm_fewrows_rows"(const float* x, Py_ssize_t batch, Py_ssize_t n, const float* w,
                                             Py_ssize_t first, Py_ssize_t last, float* out,
                                             Py_ssize_t n_out) noexcept nogil


cdef inline void _tile_rows(const real* x, Py_ssize_t batch, Py_ssize_t width, const real* weight,
                            Py_ssize_t first, Py_ssize_t last, real* out, Py_ssize_t n_out) noexcept nogil:
    """fewrows_many's block: out[m, first:last] for every input row m (float32 only, as fewrows_many)."""
    if real is float:
        fewrows_rows(x, batch, width, weight, first, last, out, n_out)


cdef int _products(const real[:, ::1] x, tuple weights, tuple outs, Py_ssize_t parallel_bytes, bint tiles,
                   str caller) except -1:
    """outs[i][:] = x @ weights[i]^T, all C-contiguous in x's dtype: fewrows_many's tiles when `tiles`
    (float32 only), else matvec_many's loops (the streaming product for one float32 row)."""
    cdef Py_ssize_t count = len(weights), batch = x.shape[0], width = x.shape[1]
    cdef Py_ssize_t block_rows = TILE_ROWS if tiles else (4 if width >= WIDE_ROWS else 1)
    cdef Py_ssize_t matrix, block, first_row, rows_here, row, m, total_blocks = 0, weight_bytes = 0
    cdef const real[:, ::1] weight
    cdef real[:, ::1] out
    cdef const real* weight_rows
    cdef real* out_row
    cdef int threads
    if len(outs) != count:
        raise ValueError(f"got {count} weights but {len(outs)} outputs")
    if count == 0 or batch == 0 or width == 0:
        raise ValueError(f"{caller} needs at least one weight, one input row and one input column")
    cdef const real** weight_data = <const real**>malloc(count * sizeof(real*))
    cdef real** out_data = <real**>malloc(count * sizeof(real*))
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
            total_blocks += (weight.shape[0] + block_rows - 1) // block_rows
            weight_bytes += weight.shape[0] * width * sizeof(real)
        first_block[count] = total_blocks
        threads = max_threads() if weight_bytes >= parallel_bytes else 1
        if real is float:
            if batch == 1 and not tiles:  # one float32 input row (decoding): the streaming product of _stream_dot.pxd
                if count > 2**30:
                    raise ValueError(f"too many weights: {count}")
                with nogil:
                    stream_matvec_many(&x[0, 0], width, <int>count, <const float* const*>weight_data, sizes,
                                       <float* const*>out_data, 0, threads)
                return 0
        with nogil:
            for block in prange(total_blocks, schedule="static", num_threads=threads):
                matrix = 0
                while block >= first_block[matrix + 1]:
                    matrix = matrix + 1  # (not +=, which prange would read as a reduction)
                first_row = block_rows * (block - first_block[matrix])
                rows_here = min(block_rows, sizes[matrix] - first_row)
                if tiles:
                    _tile_rows(&x[0, 0], batch, width, weight_data[matrix], first_row, first_row + rows_here,
                               out_data[matrix], sizes[matrix])
                else:
                    weight_rows = weight_data[matrix] + first_row * width
                    for m in range(batch):
                        out_row = out_data[matrix] + m * sizes[matrix] + first_row
                        if rows_here == 4:
                            vec.dot4(&x[m, 0], weight_rows, width, width, out_row)
                        else:
                            for row in range(rows_here):
                                out_row[row] = vec.dot_lanes(&x[m, 0], weight_rows + row * width, width)
    finally:
        free(weight_data)
        free(out_data)
        free(sizes)
        free(first_block)
    return 0


def matvec_many(const real[:, ::1] x, tuple weights, tuple outs, Py_ssize_t parallel_bytes):
    """outs[i][:] = x @ weights[i]^T for x (M, K), weights[i] (N_i, K), outs[i] (M, N_i), all C-contiguous.

    Every array shares x's dtype. Runs on the OpenMP budget's threads when the weights hold at least
    parallel_bytes bytes, else on one.
    """
    _products(x, weights, outs, parallel_bytes, False, "matvec_many")


def fewrows_many(const float[:, ::1] x, tuple weights, tuple outs, Py_ssize_t parallel_bytes):
    """outs[i][:] = x @ weights[i]^T for x (M, K), weights[i] (N_i, K), outs[i] (M, N_i): float32,
    C-contiguous, by the register tiles of csrc/_fewrows.h (module docstring). Runs on the OpenMP
    budget's threads when the weights hold at least parallel_bytes bytes, else on one."""
    _products(x, weights, outs, parallel_bytes, True, "fewrows_many")
