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

f16 scales: converted by the F16C instruction where the compiler targets it (-march=native on any
AVX2 machine), otherwise by minifm_f16_to_f32 below; both are exact, as the reference's NumPy
conversion is.
"""
from cython.parallel cimport parallel, prange
from libc.stdint cimport uint8_t, uint16_t
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport sgemm

import numpy as np

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    #if defined(__F16C__) || defined(__AVX2__)
    #include <immintrin.h>
    #endif
    #if MINIFM_OPENMP
    #include <omp.h>
    static int minifm_quantized_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int minifm_quantized_max_threads(void) { return 1; }
    #endif

    /* GGML type numbers (as in GGUF files and minifm.pretrained.quants.FORMATS). */
    enum { MINIFM_Q4_0 = 2, MINIFM_Q4_1 = 3, MINIFM_Q8_0 = 8 };
    #define MINIFM_QK 32        /* values per block */
    #define MINIFM_MAX_ROWS 4   /* input rows the fused kernel handles at once */

    static inline int minifm_block_bytes(int type) {
        return type == MINIFM_Q8_0 ? 34 : type == MINIFM_Q4_0 ? 18 : type == MINIFM_Q4_1 ? 20 : 0;
    }

    /* IEEE half-precision bits -> float32, exactly (every f16 is a float32). */
    static inline float minifm_f16_to_f32(uint16_t h) {
        uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
        uint32_t exponent = (h >> 10) & 0x1Fu;
        uint32_t mantissa = h & 0x3FFu;
        uint32_t bits;
        float f;
        if (exponent == 0x1F) {
            bits = sign | 0x7F800000u | (mantissa << 13);        /* inf, or NaN with its payload */
        } else if (exponent != 0) {
            bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);  /* rebias 15 -> 127 */
        } else {
            f = (float)mantissa * 5.9604644775390625e-8f;        /* zero or subnormal: mantissa * 2^-24 */
            return sign ? -f : f;
        }
        memcpy(&f, &bits, sizeof f);
        return f;
    }

    static inline float minifm_load_f16(const uint8_t* p) {
        uint16_t h;
        memcpy(&h, p, sizeof h);   /* little-endian, possibly unaligned */
    #if defined(__F16C__)
        return _cvtsh_ss(h);
    #else
        return minifm_f16_to_f32(h);
    #endif
    }

    /* A GCC/Clang vector type: eight floats (one AVX register; two SSE registers elsewhere). The
       fused kernel is written with it rather than with plain loops because GCC's auto-vectoriser kept
       the 32 partial sums in memory and unpacked nibbles with scalar inserts (measured 1.6 weights/ns
       on Q4_0 against about 5 for this code). */
    typedef float minifm_v8f __attribute__((vector_size(32)));

    static inline minifm_v8f minifm_splat(float value) {
        minifm_v8f v = {value, value, value, value, value, value, value, value};
        return v;
    }
    static inline minifm_v8f minifm_load8(const float* p) {  /* 8 floats, any alignment */
        minifm_v8f v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    /* Widening a block's integers to floats. With AVX2 one instruction widens 8 bytes to 8 int32
       (vpmovsxbd / vpmovzxbd) and one converts them (vcvtdq2ps); GCC 12 lowered the portable
       __builtin_convertvector of 8-byte vectors to one scalar insert per value (measured 2-3x slower),
       hence the intrinsics. Elsewhere plain loops do the same. */
    #if defined(__AVX2__)
    /* 8 int8 at p -> 8 floats */
    static inline minifm_v8f minifm_s8_to_float(const uint8_t* p) {
        __m128i bytes = _mm_loadl_epi64((const __m128i*)p);
        return (minifm_v8f)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    }
    /* 16 bytes of nibbles at p -> v[0] = low nibbles of bytes 0..7, v[1] of bytes 8..15,
       v[2] = high nibbles of bytes 0..7, v[3] of bytes 8..15 (values 0..15 as floats) */
    static inline void minifm_nibbles_to_float(const uint8_t* p, minifm_v8f v[4]) {
        const __m128i bytes = _mm_loadu_si128((const __m128i*)p);
        const __m128i low_bits = _mm_set1_epi8(0x0F);
        const __m128i low = _mm_and_si128(bytes, low_bits);
        const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_bits);
        v[0] = (minifm_v8f)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(low));
        v[1] = (minifm_v8f)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(low, 8)));
        v[2] = (minifm_v8f)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(high));
        v[3] = (minifm_v8f)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(high, 8)));
    }
    #else
    static inline minifm_v8f minifm_s8_to_float(const uint8_t* p) {
        float values[8];
        for (int i = 0; i < 8; i++) values[i] = (float)(int8_t)p[i];
        return minifm_load8(values);
    }
    static inline void minifm_nibbles_to_float(const uint8_t* p, minifm_v8f v[4]) {
        float values[32];
        for (int i = 0; i < 16; i++) {
            values[i] = (float)(p[i] & 0x0F);
            values[i + 16] = (float)(p[i] >> 4);
        }
        for (int j = 0; j < 4; j++) v[j] = minifm_load8(values + 8 * j);
    }
    #endif

    /* The 32 float32 weights of one block as four vectors: w[j] holds values 8j .. 8j + 7. `type`
       is a constant where this is inlined, so each caller gets one straight-line decoder. */
    static inline __attribute__((always_inline)) void minifm_decode_block(const int type, const uint8_t* block,
                                                                        minifm_v8f w[4]) {
        const minifm_v8f d = minifm_splat(minifm_load_f16(block));
        if (type == MINIFM_Q8_0) {
            for (int j = 0; j < 4; j++) w[j] = d * minifm_s8_to_float(block + 2 + 8 * j);
        } else {
            /* bytes 0..7 and 8..15 of the nibbles: low nibbles are values 0..15, high ones 16..31 */
            minifm_v8f values[4];
            minifm_nibbles_to_float(block + (type == MINIFM_Q4_0 ? 2 : 4), values);
            if (type == MINIFM_Q4_0) {
                const minifm_v8f eight = minifm_splat(8.0f);
                for (int j = 0; j < 4; j++) w[j] = d * (values[j] - eight);      /* d * (q - 8) */
            } else {
                const minifm_v8f m = minifm_splat(minifm_load_f16(block + 2));
                for (int j = 0; j < 4; j++) w[j] = d * values[j] + m;            /* d * q + m */
            }
        }
    }

    /* out[r * out_stride] = sum_k x[r * x_stride + k] * W_row[k] for r < rows: one weight row of
       n_blocks blocks against `rows` input rows. 32 partial sums per input row (acc[r][j] lane i
       gathers the products at position 8j + i of every block), added pairwise at the end in a fixed
       order. `type` and `rows` are constants where this is inlined (minifm_row_dot below), so the
       loops over r and j unroll and the partial sums live in registers. */
    static inline __attribute__((always_inline)) void minifm_row_dot_of(
            const int type, const int rows, const uint8_t* row, Py_ssize_t n_blocks,
            const float* x, Py_ssize_t x_stride, float* out, Py_ssize_t out_stride) {
        const int block_bytes = minifm_block_bytes(type);
        minifm_v8f acc[MINIFM_MAX_ROWS][4];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < 4; j++) acc[r][j] = minifm_splat(0.0f);
        for (Py_ssize_t b = 0; b < n_blocks; b++) {
            minifm_v8f w[4];
            minifm_decode_block(type, row + b * block_bytes, w);
            for (int r = 0; r < rows; r++) {
                const float* xb = x + r * x_stride + b * MINIFM_QK;
                for (int j = 0; j < 4; j++) acc[r][j] += w[j] * minifm_load8(xb + 8 * j);
            }
        }
        for (int r = 0; r < rows; r++) {
            minifm_v8f sum = (acc[r][0] + acc[r][2]) + (acc[r][1] + acc[r][3]);
            float lanes[8];
            memcpy(lanes, &sum, sizeof lanes);
            out[r * out_stride] = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
                                + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
        }
    }

    /* Dispatch to a copy of minifm_row_dot_of specialised for (type, rows); rows > MAX_ROWS go
       MAX_ROWS at a time. */
    static void minifm_row_dot(int type, int rows, const uint8_t* row, Py_ssize_t n_blocks,
                               const float* x, Py_ssize_t x_stride, float* out, Py_ssize_t out_stride) {
        #define MINIFM_ROWS_CASES(T) \\
            switch (rows) { \\
            case 1: minifm_row_dot_of(T, 1, row, n_blocks, x, x_stride, out, out_stride); return; \\
            case 2: minifm_row_dot_of(T, 2, row, n_blocks, x, x_stride, out, out_stride); return; \\
            case 3: minifm_row_dot_of(T, 3, row, n_blocks, x, x_stride, out, out_stride); return; \\
            default: minifm_row_dot_of(T, 4, row, n_blocks, x, x_stride, out, out_stride); return; }
        while (rows > MINIFM_MAX_ROWS) {
            minifm_row_dot(type, MINIFM_MAX_ROWS, row, n_blocks, x, x_stride, out, out_stride);
            rows -= MINIFM_MAX_ROWS;
            x += MINIFM_MAX_ROWS * x_stride;
            out += MINIFM_MAX_ROWS * out_stride;
        }
        if (type == MINIFM_Q8_0) { MINIFM_ROWS_CASES(MINIFM_Q8_0) }
        else if (type == MINIFM_Q4_0) { MINIFM_ROWS_CASES(MINIFM_Q4_0) }
        else { MINIFM_ROWS_CASES(MINIFM_Q4_1) }
        #undef MINIFM_ROWS_CASES
    }

    /* ---- Q8 activations: x quantized per block of 32 to int8, integer dot products ----
       x's block b of row r becomes xq = rint(x * (127 / amax)) in -127..127 with amax = max |x| and
       dx = amax / 127 (dx = 0 for a zero block; NaN for a block holding inf or NaN), and sx = dx * sum(xq). A weight block then contributes
           Q8_0: d dx sum(q xq)      Q4_0: d dx sum(q xq) - 8 d sx      Q4_1: d dx sum(q xq) + m sx
       where sum(q xq) is exact in integers. */
    static void minifm_quantize_input(const float* x, Py_ssize_t width, int8_t* xq, float* dx, float* sx) {
        for (Py_ssize_t b = 0; b < width / MINIFM_QK; b++) {
            const float* xb = x + b * MINIFM_QK;
            float amax = 0.0f, probe = 0.0f;
            #pragma omp simd reduction(max:amax) reduction(+:probe)
            for (int i = 0; i < MINIFM_QK; i++) {
                float a = xb[i] < 0 ? -xb[i] : xb[i];
                amax = a > amax ? a : amax;
                probe += xb[i] * 0.0f;                        /* NaN when any value is inf or NaN */
            }
            const int finite = probe == 0.0f;
            const float inverse = (finite && amax > 0.0f) ? 127.0f / amax : 0.0f;
            int total = 0;
            #pragma omp simd reduction(+:total)
            for (int i = 0; i < MINIFM_QK; i++) {
                float v = rintf(xb[i] * inverse);   /* nearest, ties to even (as NumPy's rint); vroundps */
                int q = v == v ? (int)v : 0;        /* a NaN (from a non-finite block) becomes 0; dx says NaN */
                xq[b * MINIFM_QK + i] = (int8_t)q;
                total += q;
            }
            dx[b] = finite ? amax / 127.0f : NAN;   /* every product with a non-finite block is NaN */
            sx[b] = dx[b] * (float)total;
        }
    }

    #if defined(__AVX2__)
    /* sum_i q[i] xq[i] over a block, 8 int32 partial sums converted to float */
    static inline __m256 minifm_dot_q8_0(const uint8_t* q, const int8_t* xq) {
        const __m256i qv = _mm256_loadu_si256((const __m256i*)q);
        const __m256i xv = _mm256_loadu_si256((const __m256i*)xq);
        /* vpmaddubsw multiplies unsigned by signed bytes: |q| times xq with q's sign moved onto xq */
        const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(qv, qv), _mm256_sign_epi8(xv, qv));
        return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
    }
    /* the same for 16 bytes of nibbles (values 0..15): low nibbles are values 0..15, high 16..31 */
    static inline __m256i minifm_nibbles_to_bytes(const uint8_t* q) {
        const __m128i bytes = _mm_loadu_si128((const __m128i*)q);
        const __m256i both = _mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes);
        return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
    }
    static inline __m256 minifm_dot_q4(__m256i q, const int8_t* xq) {
        const __m256i xv = _mm256_loadu_si256((const __m256i*)xq);
        const __m256i pairs = _mm256_maddubs_epi16(q, xv);   /* 0..15 times -127..127: no saturation */
        return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
    }
    #endif

    /* The Q8-activation twin of minifm_row_dot_of: out[r * out_stride] for r < rows. */
    static inline __attribute__((always_inline)) void minifm_row_dot_q8_of(
            const int type, const int rows, const uint8_t* row, Py_ssize_t n_blocks,
            const int8_t* xq, const float* dx, const float* sx, Py_ssize_t x_stride, float* out, Py_ssize_t out_stride) {
        const int block_bytes = minifm_block_bytes(type);
        const Py_ssize_t s_stride = x_stride / MINIFM_QK;
    #if defined(__AVX2__)
        __m256 acc[MINIFM_MAX_ROWS];
        float offset[MINIFM_MAX_ROWS];
        for (int r = 0; r < rows; r++) { acc[r] = _mm256_setzero_ps(); offset[r] = 0.0f; }
        for (Py_ssize_t b = 0; b < n_blocks; b++) {
            const uint8_t* block = row + b * block_bytes;
            const float d = minifm_load_f16(block);
            __m256i nibbles;
            if (type != MINIFM_Q8_0) nibbles = minifm_nibbles_to_bytes(block + (type == MINIFM_Q4_0 ? 2 : 4));
            const float m = type == MINIFM_Q4_1 ? minifm_load_f16(block + 2) : 0.0f;
            for (int r = 0; r < rows; r++) {
                const int8_t* xb = xq + r * x_stride + b * MINIFM_QK;
                const __m256 p = type == MINIFM_Q8_0 ? minifm_dot_q8_0(block + 2, xb) : minifm_dot_q4(nibbles, xb);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx[r * s_stride + b]), p, acc[r]);
                if (type == MINIFM_Q4_0) offset[r] += d * sx[r * s_stride + b];
                if (type == MINIFM_Q4_1) offset[r] += m * sx[r * s_stride + b];
            }
        }
        for (int r = 0; r < rows; r++) {
            float lanes[8];
            _mm256_storeu_ps(lanes, acc[r]);
            float total = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
            out[r * out_stride] = type == MINIFM_Q4_0 ? total - 8.0f * offset[r] : total + offset[r];
        }
    #else
        for (int r = 0; r < rows; r++) {
            float total = 0.0f, offset = 0.0f;
            for (Py_ssize_t b = 0; b < n_blocks; b++) {
                const uint8_t* block = row + b * block_bytes;
                const int8_t* xb = xq + r * x_stride + b * MINIFM_QK;
                const float d = minifm_load_f16(block);
                int p = 0;
                if (type == MINIFM_Q8_0) {
                    for (int i = 0; i < MINIFM_QK; i++) p += (int)(int8_t)block[2 + i] * xb[i];
                } else {
                    const uint8_t* q = block + (type == MINIFM_Q4_0 ? 2 : 4);
                    for (int j = 0; j < MINIFM_QK / 2; j++)
                        p += (q[j] & 0x0F) * xb[j] + (q[j] >> 4) * xb[j + MINIFM_QK / 2];
                }
                total += d * dx[r * s_stride + b] * (float)p;
                if (type == MINIFM_Q4_0) offset += d * sx[r * s_stride + b];
                if (type == MINIFM_Q4_1) offset += minifm_load_f16(block + 2) * sx[r * s_stride + b];
            }
            out[r * out_stride] = type == MINIFM_Q4_0 ? total - 8.0f * offset : total + offset;
        }
    #endif
    }

    static void minifm_row_dot_q8(int type, int rows, const uint8_t* row, Py_ssize_t n_blocks, const int8_t* xq,
                                  const float* dx, const float* sx, Py_ssize_t x_stride, float* out, Py_ssize_t out_stride) {
        #define MINIFM_ROWS_CASES(T) \\
            switch (rows) { \\
            case 1: minifm_row_dot_q8_of(T, 1, row, n_blocks, xq, dx, sx, x_stride, out, out_stride); return; \\
            case 2: minifm_row_dot_q8_of(T, 2, row, n_blocks, xq, dx, sx, x_stride, out, out_stride); return; \\
            case 3: minifm_row_dot_q8_of(T, 3, row, n_blocks, xq, dx, sx, x_stride, out, out_stride); return; \\
            default: minifm_row_dot_q8_of(T, 4, row, n_blocks, xq, dx, sx, x_stride, out, out_stride); return; }
        while (rows > MINIFM_MAX_ROWS) {
            minifm_row_dot_q8(type, MINIFM_MAX_ROWS, row, n_blocks, xq, dx, sx, x_stride, out, out_stride);
            rows -= MINIFM_MAX_ROWS;
            xq += MINIFM_MAX_ROWS * x_stride;
            dx += MINIFM_MAX_ROWS * (x_stride / MINIFM_QK);
            sx += MINIFM_MAX_ROWS * (x_stride / MINIFM_QK);
            out += MINIFM_MAX_ROWS * out_stride;
        }
        if (type == MINIFM_Q8_0) { MINIFM_ROWS_CASES(MINIFM_Q8_0) }
        else if (type == MINIFM_Q4_0) { MINIFM_ROWS_CASES(MINIFM_Q4_0) }
        else { MINIFM_ROWS_CASES(MINIFM_Q4_1) }
        #undef MINIFM_ROWS_CASES
    }

    /* The float32 values of one weight row (n_blocks blocks) into `out`: the prefill tiles. */
    static void minifm_dequantize_row(int type, const uint8_t* row, Py_ssize_t n_blocks, float* out) {
        const int block_bytes = minifm_block_bytes(type);
        minifm_v8f w[4];
        Py_ssize_t b;
        #define MINIFM_DEQUANTIZE_BLOCKS(T) \\
            for (b = 0; b < n_blocks; b++) { \\
                minifm_decode_block(T, row + b * block_bytes, w); \\
                memcpy(out + b * MINIFM_QK, w, sizeof w); \\
            }
        if (type == MINIFM_Q8_0) { MINIFM_DEQUANTIZE_BLOCKS(MINIFM_Q8_0) }
        else if (type == MINIFM_Q4_0) { MINIFM_DEQUANTIZE_BLOCKS(MINIFM_Q4_0) }
        else { MINIFM_DEQUANTIZE_BLOCKS(MINIFM_Q4_1) }
        #undef MINIFM_DEQUANTIZE_BLOCKS
    }
    """
    int max_threads "minifm_quantized_max_threads"() noexcept nogil
    int block_bytes_of "minifm_block_bytes"(int type) noexcept nogil
    float f16_to_f32 "minifm_f16_to_f32"(uint16_t h) noexcept nogil
    void row_dot "minifm_row_dot"(int type, int rows, const uint8_t* row, Py_ssize_t n_blocks, const float* x,
                                  Py_ssize_t x_stride, float* out, Py_ssize_t out_stride) noexcept nogil
    void quantize_input "minifm_quantize_input"(const float* x, Py_ssize_t width, signed char* xq, float* dx,
                                                float* sx) noexcept nogil
    void row_dot_q8 "minifm_row_dot_q8"(int type, int rows, const uint8_t* row, Py_ssize_t n_blocks,
                                        const signed char* xq, const float* dx, const float* sx, Py_ssize_t x_stride,
                                        float* out, Py_ssize_t out_stride) noexcept nogil
    void dequantize_row "minifm_dequantize_row"(int type, const uint8_t* row, Py_ssize_t n_blocks,
                                                float* out) noexcept nogil

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
    cdef char trans_t = b"T", trans_n = b"N"
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
            sgemm(&trans_t, &trans_n, &rows_here, &m_int, &k_int, &alpha, scratch, &k_int,
                  <float*>&x[0, 0], &k_int, &beta, &out[0, first], &ldc)
        free(scratch)
    if failed:
        raise MemoryError(f"prefill_product: no memory for a {tile_rows} x {width} float32 tile")
