# cython: language_level=3
"""The GGUF block formats' dot-product inner loops, shared by csrc/quantized.pyx and csrc/decode_step.pyx.

C code in a `cdef extern from *` block: a module that cimports this file gets the code at the top of
its generated C file (as csrc/_common.pxd's primitives), so the two kernels run the same loops, compiled
the same way, and give the same bits for the same product. What is here (the math: csrc/quantized.pyx's
module docstring; the block layouts: minifm/pretrained/quants.py):

    block_bytes_of(type)                   34 (Q8_0), 18 (Q4_0), 20 (Q4_1); 0 for another GGML type
    f16_to_f32(bits)                       the exact f16 -> float32 conversion (F16C's where compiled for it)
    row_dot(type, rows, row, n_blocks, x, x_stride, out, out_stride)
                                           one weight row against `rows` float32 input rows, fused
                                           dequantize-and-dot (32 partial sums per input row, fixed order)
    quantize_input(x, width, xq, dx, sx)   x rounded to int8 per block of 32 (llama.cpp's Q8 activations)
    row_dot_q8(type, rows, row, n_blocks, xq, dx, sx, x_stride, out, out_stride)
                                           the same product on the rounded input, in integers (AVX2)
    dequantize_row(type, row, n_blocks, out)  one row's float32 values (the prefill tiles)

Every output is summed in an order fixed by K alone, so a product does not depend on the thread that
computes it, on the other rows of its call or on which kernel (quantized or decode_step) calls it.
"""
from libc.stdint cimport uint8_t, uint16_t

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    #if defined(__F16C__) || defined(__AVX2__)
    #include <immintrin.h>
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
       dx = amax / 127 (dx = 0 for a zero block; NaN for a block holding inf or NaN; xq = 0 for a block whose amax is
       below 1e-30, where 127 / amax would overflow to inf), and sx = dx * sum(xq). A weight block then contributes
           Q8_0: d dx sum(q xq)      Q4_0: d dx sum(q xq) - 8 d sx      Q4_1: d dx sum(q xq) + m sx
       where sum(q xq) is exact in integers. */
    #define MINIFM_Q8_MIN_AMAX 1e-30f
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
            /* below MINIFM_Q8_MIN_AMAX, 127 / amax would overflow: such a block rounds to zeros (as NumPy's twin) */
            const float inverse = (finite && amax >= MINIFM_Q8_MIN_AMAX) ? 127.0f / amax : 0.0f;
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
    enum: QK "MINIFM_QK"              # values per block
    enum: MAX_ROWS "MINIFM_MAX_ROWS"  # input rows the fused loops take at once (more go in groups)
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
