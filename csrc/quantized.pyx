# cython: language_level=3
"""Cython twin of minifm/kernels/quantized.py (reference: reference_matmul).

Products of float32 inputs with weights kept in GGUF block formats:

    out[m, n] = sum_k x[m, k] * W[n, k]        x (M, K) float32, W (N, K) stored as blocks, out (M, N)

W's row n is K / 32 consecutive blocks of `data[n]` (layouts: minifm/pretrained/quants.py):

    Q8_0  34 bytes: d (f16) | 32 int8 q              w[i] = d * q[i]
    Q4_0  18 bytes: d (f16) | 16 bytes of nibbles    w[i] = d * (q[i] - 8)
    Q4_1  20 bytes: d (f16) | m (f16) | 16 bytes     w[i] = d * q[i] + m
    (byte j of a 4-bit block holds q[j] in its low nibble and q[j + 16] in its high one)

decode_products: few input rows (decoding, M <= MAX_ROWS), fused dequantize-and-dot. Each packed
block is read once; its 32 weights are turned into float32 in registers (minifm_decode_block) and
multiplied into 32 running partial sums per input row, one per position in the block, so the
multiply-adds vectorise (four 8-float AVX2 registers per row) and consecutive blocks do not wait on
one chain of additions. At the end of a row the 32 partial sums are added pairwise in a fixed order
(the four vectors, then the 8 lanes). Memory delivers only the packed bytes, 34/18/20 per 32 weights instead of 128 in float32.
x stays float32, so the result differs from the reference only by the float32 rounding of a
different summation order (and, for Q4_1, d * q + m rounded once by a fused multiply-add where
dequantize rounds twice).

decode_products(..., q8_input=True): llama.cpp's method, the twin of reference_matmul(...,
quantize_input=True). Each block of 32 input values is first rounded to int8 with one float scale
dx (minifm_quantize_input); a weight block's dot product with it is then computed in integers with
AVX2's vpmaddubsw (unsigned 8-bit times signed 8-bit, pairs summed to 16 bits) and vpmaddwd (to
8 x 32 bits, exact), converted to float once and scaled by d * dx: per 32 weights about 10
instructions instead of about 30 that widen every weight to float32. Q4_0's "- 8" and Q4_1's "+ m"
are applied once per block through the precomputed dx * sum(xq). Without AVX2 the same sums run
in plain integer loops.

The output rows of all the weights of one call (q, k and v; gate and up) are one range split across
the OpenMP threads in equal contiguous parts; each output is computed by one thread in an order
fixed by K, so the result does not depend on the thread count or on which weights come together.

prefill_product: many input rows (prefill), dequantize a tile of weight rows into a float32 scratch
buffer (about TILE_BYTES, the size of a core's L2 here) and multiply it with all M input rows by one
BLAS sgemm (scipy's OpenBLAS, kept on one thread by the caller: threads.single_threaded_scipy_blas);
tiles are split across the OpenMP threads, each with its own scratch buffer. The weight is read once
per call, not once per input row, and BLAS's blocked product does the arithmetic.

The block-dot loops themselves (minifm_row_dot, minifm_row_dot_q8, minifm_quantize_input, the block
decoders) live in csrc/_block_dot.pxd, shared with csrc/decode_step.pyx's fused decoding step, which so
computes every product with the same bits as decode_products.

f16 scales: converted by the F16C instruction where the compiler targets it (-march=native on any
AVX2 machine), otherwise by minifm_f16_to_f32; both are exact, as the reference's NumPy
conversion is.
"""
from cython.parallel cimport parallel, prange
from libc.stdint cimport uint8_t, uint16_t
from libc.stdlib cimport free, malloc
from _blas cimport gemm

import numpy as np

from _block_dot cimport (block_bytes_of, dequantize_row, f16_to_f32, quantize_input, row_dot,
                        row_dot_q8)

cdef extern from *:
    """
    #if MINIFM_OPENMP
    #include <omp.h>
    static int minifm_quantized_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int minifm_quantized_max_threads(void) { return 1; }
    #endif
    """
    int max_threads "minifm_quantized_max_threads"() noexcept nogil


cdef enum:
    QK = 32                    # values per block
    TILE_BYTES = 1024 * 1024   # float32 scratch per prefill tile (see prefill_product)
    TILE_ROWS_STEP = 16        # tile heights are multiples of this
    MIN_TILES = 4              # a weight is cut into at least this many tiles (when it has the rows)

# Python-visible, so the wrapper and the tests know the kernel's limits
max_rows = 4
block_types = {2: "Q4_0", 3: "Q4_1", 8: "Q8_0"}


def f16_bits_to_float(uint16_t bits):
    """The portable f16 -> float32 conversion the kernels use without F16C (exposed for the tests)."""
    return f16_to_f32(bits)


cdef Py_ssize_t _check_weight(str label, const uint8_t[:, ::1] data, int ggml_type, Py_ssize_t width) except -1:
    """The number of blocks per row of `data`, after checking it holds rows of `width` values in `ggml_type`."""
    cdef int block_bytes = block_bytes_of(ggml_type)
    if block_bytes == 0:
        raise ValueError(f"{label}: GGML type {ggml_type} is not one of {block_types}")
    if width % QK or data.shape[1] != width // QK * block_bytes or data.shape[0] == 0:
        raise ValueError(f"{label}: {block_types[ggml_type]} rows of shape {tuple(data.shape)[:2]} do not hold "
                         f"{width} values each ({width // QK} blocks of {block_bytes} bytes), or there are none")
    return width // QK


def decode_products(const float[:, ::1] x, tuple datas, tuple types, tuple outs, Py_ssize_t parallel_bytes,
                    bint q8_input=False):
    """outs[i][:] = x @ W_i^T for x (M, K), W_i stored as datas[i] (N_i, row bytes) uint8 in GGML type
    types[i] (2 = Q4_0, 3 = Q4_1, 8 = Q8_0), outs[i] (M, N_i) float32; all C-contiguous.

    The fused dequantize-and-dot kernel (module docstring); any M works, MAX_ROWS rows at a time. Runs on
    the OpenMP budget's threads when the packed weights hold at least parallel_bytes bytes, else on one.
    """
    cdef Py_ssize_t count = len(datas), batch = x.shape[0], width = x.shape[1]
    cdef Py_ssize_t matrix, row, total_rows = 0, packed_bytes = 0, n_blocks
    cdef const uint8_t[:, ::1] data
    cdef float[:, ::1] out
    cdef int threads
    cdef signed char[:, ::1] xq_view
    cdef float[:, ::1] dx_view, sx_view
    cdef Py_ssize_t m
    if len(types) != count or len(outs) != count:
        raise ValueError(f"got {count} weights, {len(types)} types and {len(outs)} outputs")
    if count == 0 or batch == 0 or width == 0:
        raise ValueError("decode_products needs at least one weight, one input row and one input column")
    n_blocks = width // QK
    cdef const uint8_t** data_ptrs = <const uint8_t**>malloc(count * sizeof(uint8_t*))
    cdef float** out_ptrs = <float**>malloc(count * sizeof(float*))
    cdef Py_ssize_t* sizes = <Py_ssize_t*>malloc(count * sizeof(Py_ssize_t))
    cdef Py_ssize_t* row_bytes = <Py_ssize_t*>malloc(count * sizeof(Py_ssize_t))
    cdef int* type_of = <int*>malloc(count * sizeof(int))
    cdef Py_ssize_t* first_row = <Py_ssize_t*>malloc((count + 1) * sizeof(Py_ssize_t))  # of each weight
    try:
        if (data_ptrs == NULL or out_ptrs == NULL or sizes == NULL or row_bytes == NULL or type_of == NULL
                or first_row == NULL):
            raise MemoryError()
        for matrix in range(count):
            data = datas[matrix]
            out = outs[matrix]
            type_of[matrix] = types[matrix]
            _check_weight(f"datas[{matrix}]", data, type_of[matrix], width)
            if out.shape[0] != batch or out.shape[1] != data.shape[0]:
                raise ValueError(f"outs[{matrix}] has shape {tuple(out.shape)[:2]}, expected {(batch, data.shape[0])}")
            data_ptrs[matrix] = &data[0, 0]
            out_ptrs[matrix] = &out[0, 0]
            sizes[matrix] = data.shape[0]
            row_bytes[matrix] = data.shape[1]
            first_row[matrix] = total_rows
            total_rows += data.shape[0]
            packed_bytes += data.shape[0] * data.shape[1]
        first_row[count] = total_rows
        threads = max_threads() if packed_bytes >= parallel_bytes else 1
        if q8_input:
            if width % QK:
                raise ValueError(f"x has {width} columns, not a whole number of {QK}-value blocks")
            xq = np.empty((batch, width), dtype=np.int8)
            dx = np.empty((batch, n_blocks), dtype=np.float32)
            sx = np.empty((batch, n_blocks), dtype=np.float32)
            xq_view, dx_view, sx_view = xq, dx, sx
            with nogil:
                for m in range(batch):
                    quantize_input(&x[m, 0], width, &xq_view[m, 0], &dx_view[m, 0], &sx_view[m, 0])
                for row in prange(total_rows, schedule="static", num_threads=threads):
                    matrix = 0
                    while row >= first_row[matrix + 1]:
                        matrix = matrix + 1
                    row_dot_q8(type_of[matrix], <int>batch,
                               data_ptrs[matrix] + (row - first_row[matrix]) * row_bytes[matrix], n_blocks,
                               &xq_view[0, 0], &dx_view[0, 0], &sx_view[0, 0], width,
                               out_ptrs[matrix] + (row - first_row[matrix]), sizes[matrix])
            return
        with nogil:
            for row in prange(total_rows, schedule="static", num_threads=threads):
                matrix = 0
                while row >= first_row[matrix + 1]:
                    matrix = matrix + 1  # (not +=, which prange would read as a reduction)
                row_dot(type_of[matrix], <int>batch,
                        data_ptrs[matrix] + (row - first_row[matrix]) * row_bytes[matrix], n_blocks,
                        &x[0, 0], width, out_ptrs[matrix] + (row - first_row[matrix]), sizes[matrix])
    finally:
        free(data_ptrs)
        free(out_ptrs)
        free(sizes)
        free(row_bytes)
        free(type_of)
        free(first_row)


def round_input(const float[:, ::1] x, float[:, ::1] out):
    """out[:] = xq * dx for x (M, K) float32, K a multiple of 32: the input rounded to int8 per block of 32
    (minifm_quantize_input, the decoding kernels' rounding) and back to float32, one product per value;
    the bits of minifm/kernels/quantized.py rounded_input (a block holding inf or NaN gives NaN)."""
    cdef Py_ssize_t batch = x.shape[0], width = x.shape[1], m, b, i
    cdef float scale
    cdef float* row
    cdef signed char* xq
    cdef float* dx
    cdef float* sx
    if width % QK:
        raise ValueError(f"x has {width} columns, not a whole number of {QK}-value blocks")
    if out.shape[0] != batch or out.shape[1] != width:
        raise ValueError(f"out has shape {tuple(out.shape)[:2]}, expected {(batch, width)}")
    xq = <signed char*>malloc(width * sizeof(signed char) + 1)
    dx = <float*>malloc((width // QK + 1) * sizeof(float))
    sx = <float*>malloc((width // QK + 1) * sizeof(float))
    try:
        if xq == NULL or dx == NULL or sx == NULL:
            raise MemoryError()
        with nogil:
            for m in range(batch):
                quantize_input(&x[m, 0], width, xq, dx, sx)
                row = &out[m, 0]
                for b in range(width // QK):
                    scale = dx[b]
                    for i in range(b * QK, b * QK + QK):
                        row[i] = <float>xq[i] * scale
    finally:
        free(xq)
        free(dx)
        free(sx)


def prefill_product(const float[:, ::1] x, const uint8_t[:, ::1] data, int ggml_type, float[:, ::1] out,
                    Py_ssize_t tile_bytes=TILE_BYTES):
    """out[:] = x @ W^T for x (M, K) float32, W stored as data (N, row bytes) uint8 in GGML type
    `ggml_type`, out (M, N) float32; all C-contiguous. Dequantize-per-tile + sgemm (module docstring).

    Tiles of about tile_bytes of float32 (at most a quarter of the rows): OpenBLAS packs all of x
    again for every tile, so taller tiles cost less. Measured at M = 512, one thread, CPU time, against
    one sgemm of the whole float32 weight (1536x576: 14.4 ms, 576x1536: 11.4 ms): 64 KiB tiles 24.8 and
    16.5 ms, 256 KiB 12.6 and 14.6, 1 MiB 14.3 and 12.7, 4 MiB 12.3 and 12.4 (load 9, so +-15%).

    Calls scipy's BLAS from the OpenMP threads: the caller keeps that BLAS on one thread.
    """
    cdef Py_ssize_t batch = x.shape[0], width = x.shape[1], size = data.shape[0]
    cdef Py_ssize_t n_blocks = _check_weight("data", data, ggml_type, width)
    cdef Py_ssize_t tile_rows, n_tiles, tile, first, r, row_bytes = data.shape[1]
    cdef int rows_here, m_int, k_int, ldc
    cdef float alpha = 1.0, beta = 0.0
    cdef float* scratch
    cdef int threads, failed = 0
    if out.shape[0] != batch or out.shape[1] != size:
        raise ValueError(f"out has shape {tuple(out.shape)[:2]}, expected {(batch, size)}")
    if batch == 0:
        return
    if batch > 2**31 - 1 or width > 2**31 - 1 or size > 2**31 - 1:
        raise ValueError("prefill_product: dimensions beyond BLAS's 32-bit integers")
    # tile height: about TILE_BYTES of float32, a multiple of TILE_ROWS_STEP, at least one step
    # tile height: about tile_bytes of float32 and at most a MIN_TILES-th of the rows (so several threads
    # get tiles), rounded up to a multiple of TILE_ROWS_STEP. It depends on the shapes only: BLAS's bits
    # depend on the tile height, and the result must not depend on the thread count.
    tile_rows = min(tile_bytes // (width * 4), (size + MIN_TILES - 1) // MIN_TILES)
    tile_rows = max(TILE_ROWS_STEP, (tile_rows + TILE_ROWS_STEP - 1) // TILE_ROWS_STEP * TILE_ROWS_STEP)
    n_tiles = (size + tile_rows - 1) // tile_rows
    threads = min(max_threads(), n_tiles)
    m_int, k_int, ldc = <int>batch, <int>width, <int>size
    with nogil, parallel(num_threads=threads):
        scratch = <float*>malloc(tile_rows * width * sizeof(float))  # (tile_rows, K), this thread's
        for tile in prange(n_tiles, schedule="static"):
            if scratch == NULL:
                failed += 1  # a reduction: any thread without scratch fails the call
                continue
            first = tile * tile_rows
            rows_here = <int>min(tile_rows, size - first)
            for r in range(rows_here):
                dequantize_row(ggml_type, &data[first + r, 0], n_blocks, scratch + r * width)
            # row-major out[:, first:first + rows] (M, rows) = x (M, K) @ tile^T; column-major that is
            # C (rows, M) = tile (K, rows)^T @ x^T (K, M) with leading dimension N
            gemm(c'N', c'T', m_int, rows_here, k_int, alpha, &x[0, 0], k_int, scratch, k_int,
                 beta, &out[0, first], ldc)
        free(scratch)
    if failed:
        raise MemoryError(f"prefill_product: no memory for a {tile_rows} x {width} float32 tile")
