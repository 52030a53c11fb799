# cython: language_level=3
"""The float32 streaming matrix-vector product, shared by csrc/decode_step.pyx and csrc/matvec.pyx.

    outs[i] (+)= weights[i] @ x        x (K,), weights[i] (N_i, K) row-major float32, outs[i] (N_i,)

C code in a `cdef extern from *` block (a module that cimports this file gets it at the top of its generated C
file, as csrc/_common.pxd's primitives). The design (measured in csrc/decode_step.pyx's module docstring,
where it started, hence the minifm_ds_ names):

  * the output rows of all the weights of one call are one range of blocks of MINIFM_DS_ROW_BLOCK = 4 rows,
    split across the threads in equal contiguous parts (minifm_ds_matvec_part);
  * a thread cuts its part of a weight in four quarters read side by side, row i of each quarter together,
    one 8-float AVX2 running sum per row sharing each loaded piece of x: four long sequential streams the
    hardware prefetcher follows (minifm_ds_row_range, minifm_ds_rows);
  * every output is summed in one order fixed by K alone (lane i holds the columns j = i mod 8; the lanes
    added ((0+1)+(2+3))+((4+5)+(6+7)), then the K mod 8 tail), so a result does not depend on the thread
    count, on which rows share its pass or on which weights share the call;
  * accumulate: each output row adds its sum to out[r] (a residual add folded into the product).

Without AVX2 + FMA the same order is written in plain C.
"""

cdef extern from *:
    """
    #include <math.h>
    #if MINIFM_OPENMP
    #include <omp.h>
    #endif
    #if defined(__AVX2__) && defined(__FMA__)
    #include <immintrin.h>
    #define MINIFM_DS_AVX2 1
    #else
    #define MINIFM_DS_AVX2 0
    #endif

    #define MINIFM_DS_ROW_BLOCK 4

    /* sum of the 8 lanes in the fixed order ((0+1)+(2+3))+((4+5)+(6+7)) */
    static inline float minifm_ds_lanes8(const float* l) {
        return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }

    /* *out[r] (+)= sum_j x[j] * w[r][j], j < k, for `rows` (1..4) rows anywhere in memory: one 8-float running
       sum per row (lane i holds the products of the columns j = i mod 8), the rows sharing each loaded piece
       of x; then the 8 lanes in the fixed order, then the k mod 8 tail. The same order for 1 row as for 4. */
    static inline void minifm_ds_rows(const float* x, const float* const* w, Py_ssize_t k, int rows,
                                      float* const* out, int accumulate) {
        Py_ssize_t body = k - k % 8, j;
        float lanes[MINIFM_DS_ROW_BLOCK][8];
    #if MINIFM_DS_AVX2
        if (rows == 4) {
            const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (j = 0; j < body; j += 8) {
                __m256 xv = _mm256_loadu_ps(x + j);
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), xv, s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), xv, s1);
                s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), xv, s2);
                s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), xv, s3);
            }
            _mm256_storeu_ps(lanes[0], s0);
            _mm256_storeu_ps(lanes[1], s1);
            _mm256_storeu_ps(lanes[2], s2);
            _mm256_storeu_ps(lanes[3], s3);
        } else {
            for (int r = 0; r < rows; r++) {
                __m256 s = _mm256_setzero_ps();
                for (j = 0; j < body; j += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(w[r] + j), _mm256_loadu_ps(x + j), s);
                _mm256_storeu_ps(lanes[r], s);
            }
        }
    #else
        for (int r = 0; r < rows; r++) {
            for (int lane = 0; lane < 8; lane++) lanes[r][lane] = 0.0f;
            for (j = 0; j < body; j += 8)
                for (int lane = 0; lane < 8; lane++) lanes[r][lane] = fmaf(w[r][j + lane], x[j + lane], lanes[r][lane]);
        }
    #endif
        for (int r = 0; r < rows; r++) {
            float tail = 0.0f;
            for (j = body; j < k; j++) tail += x[j] * w[r][j];
            float total = minifm_ds_lanes8(lanes[r]) + tail;
            *out[r] = accumulate ? *out[r] + total : total;
        }
    }

    /* out[r] (+)= sum_j x[j] * w[r * k + j] for the rows r in [first, last) of w (rows of k values): the range
       cut in four quarters that are read side by side, row i of each quarter together (minifm_ds_rows), so
       that the memory is read as four long sequential streams; the last (last - first) mod 4 rows alone. */
    static void minifm_ds_row_range(const float* x, const float* w, Py_ssize_t k, Py_ssize_t first, Py_ssize_t last,
                                    float* out, int accumulate) {
        Py_ssize_t quarter = (last - first) / 4, row;
        for (Py_ssize_t i = 0; i < quarter; i++) {
            row = first + i;
            const float* rows[4] = {w + row * k, w + (row + quarter) * k, w + (row + 2 * quarter) * k,
                                    w + (row + 3 * quarter) * k};
            float* outs[4] = {out + row, out + row + quarter, out + row + 2 * quarter, out + row + 3 * quarter};
            minifm_ds_rows(x, rows, k, 4, outs, accumulate);
        }
        for (row = first + 4 * quarter; row < last; row++) {
            const float* rows[1] = {w + row * k};
            float* outs[1] = {out + row};
            minifm_ds_rows(x, rows, k, 1, outs, accumulate);
        }
    }

    /* [begin, end): thread `id` of `threads`'s equal contiguous share of `total` items */
    static inline void minifm_ds_share(Py_ssize_t total, int id, int threads, Py_ssize_t* begin, Py_ssize_t* end) {
        *begin = total * id / threads;
        *end = total * (id + 1) / threads;
    }

    /* Thread id's share of outs[i][r] (+)= (weights[i] x)[r] for `count` weights (sizes[i], k) that
       share the input x (k,): their blocks of MINIFM_DS_ROW_BLOCK rows are one range split in equal parts,
       and each thread reads its part of each weight with minifm_ds_row_range */
    static void minifm_ds_matvec_part(const float* x, Py_ssize_t k, int count, const float* const* weights,
                                      const Py_ssize_t* sizes, float* const* outs, int accumulate, int id,
                                      int threads) {
        Py_ssize_t first_block[count + 1], total = 0, begin, end;
        for (int i = 0; i < count; i++) {
            first_block[i] = total;
            total += (sizes[i] + MINIFM_DS_ROW_BLOCK - 1) / MINIFM_DS_ROW_BLOCK;
        }
        first_block[count] = total;
        minifm_ds_share(total, id, threads, &begin, &end);
        for (int i = 0; i < count; i++) {
            Py_ssize_t from = begin > first_block[i] ? begin : first_block[i];
            Py_ssize_t to = end < first_block[i + 1] ? end : first_block[i + 1];
            if (from >= to) continue;
            Py_ssize_t last = (to - first_block[i]) * MINIFM_DS_ROW_BLOCK;
            minifm_ds_row_range(x, weights[i], k, (from - first_block[i]) * MINIFM_DS_ROW_BLOCK,
                                last < sizes[i] ? last : sizes[i], outs[i], accumulate);
        }
    }

    /* outs[i] (+)= weights[i] x for `count` weights (sizes[i], k) sharing x, in one parallel region of
       `threads` threads */
    static void minifm_ds_matvec_many(const float* x, Py_ssize_t k, int count, const float* const* weights,
                                      const Py_ssize_t* sizes, float* const* outs, int accumulate, int threads) {
        #if MINIFM_OPENMP
        #pragma omp parallel num_threads(threads)
        minifm_ds_matvec_part(x, k, count, weights, sizes, outs, accumulate, omp_get_thread_num(), omp_get_num_threads());
        #else
        (void)threads;
        minifm_ds_matvec_part(x, k, count, weights, sizes, outs, accumulate, 0, 1);
        #endif
    }

    /* out (+)= weight x for weight (n, k) on `threads` threads */
    static void minifm_ds_matvec(const float* x, const float* weight, Py_ssize_t n, Py_ssize_t k, float* out,
                                 int accumulate, int threads) {
        minifm_ds_matvec_many(x, k, 1, &weight, &n, &out, accumulate, threads);
    }
    """
    bint STREAM_AVX2 "MINIFM_DS_AVX2"
    void stream_matvec_many "minifm_ds_matvec_many"(const float* x, Py_ssize_t k, int count,
                                                    const float* const* weights, const Py_ssize_t* sizes,
                                                    float* const* outs, int accumulate, int threads) noexcept nogil
