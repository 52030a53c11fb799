/* The few-rows product's C core, shared by csrc/matvec.pyx's fewrows_many (x @ W^T for a few rows) and
   csrc/gpt2_step.pyx (a GPT-2 block's decoding step). Summation order and tiles: csrc/matvec.pyx. */
#ifndef MINIFM_FEWROWS_H
#define MINIFM_FEWROWS_H
#include <Python.h>
typedef float minifm_v8f __attribute__((vector_size(32)));
typedef float minifm_v8f_u __attribute__((vector_size(32), aligned(4)));  /* unaligned loads */
#define MINIFM_LOAD8(p) (*(const minifm_v8f_u*)(p))
/* acc + a * b with one rounding where the target has FMA, two where it has not: spelt out, so the
   compiler's contraction choices (which differ between tile shapes) cannot change the bits */
#include <math.h>
#if defined(__FMA__) && defined(__AVX__)
#include <immintrin.h>
#define MINIFM_MADD8(acc, a, b) ((minifm_v8f)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(acc)))
#define MINIFM_MADD1(acc, a, b) fmaf((a), (b), (acc))
#else
#define MINIFM_MADD8(acc, a, b) ((acc) + (a) * (b))
#define MINIFM_MADD1(acc, a, b) ((acc) + (a) * (b))
#endif

static inline float minifm_fewrows_finish(minifm_v8f v, const float* w, const float* x, Py_ssize_t k,
                                          Py_ssize_t n) {
    float s = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
    for (; k < n; k++) s = MINIFM_MADD1(s, w[k], x[k]);
    return s;
}

/* rows r, r + 1, ..., r + R - 1 of w (stride n) times inputs x[0..G-1] (stride n): R * G outputs,
   out[g * out_stride + r]; R * G <= 8 vector sums, R + G loads per R * G multiply-adds. */
static inline __attribute__((always_inline)) void minifm_fewrows_tile(
        const int R, const int G, const float* w, const float* x, Py_ssize_t n, float* out,
        Py_ssize_t out_stride) {
    minifm_v8f acc[8];
    for (int t = 0; t < R * G; t++) acc[t] = (minifm_v8f){0};
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8) {
        minifm_v8f xv[4];
        for (int g = 0; g < G; g++) xv[g] = MINIFM_LOAD8(x + g * n + k);
        for (int r = 0; r < R; r++) {
            minifm_v8f wv = MINIFM_LOAD8(w + r * n + k);
            for (int g = 0; g < G; g++) acc[r * G + g] = MINIFM_MADD8(acc[r * G + g], wv, xv[g]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++)
            out[g * out_stride + r] = minifm_fewrows_finish(acc[r * G + g], w + r * n, x + g * n, k, n);
}

/* inputs x[0..G-1] times rows first..last-1 of w, R rows at a time, then one at a time */
static inline __attribute__((always_inline)) void minifm_fewrows_group(
        const int R, const int G, const float* x, Py_ssize_t n, const float* w, Py_ssize_t first,
        Py_ssize_t last, float* out, Py_ssize_t n_out) {
    Py_ssize_t r = first;
    for (; r + R <= last; r += R) minifm_fewrows_tile(R, G, w + r * n, x, n, out + r, n_out);
    for (; r < last; r++) minifm_fewrows_tile(1, G, w + r * n, x, n, out + r, n_out);
}

/* out[m, r] for rows first..last-1 of w (n_out x n) and every input row m < batch of x (batch x n);
   out is (batch x n_out). Inputs go in groups of four (the last group 1-3), each group over the
   rows; one input: four rows at a time (four independent multiply-add chains), else two. */
static void minifm_fewrows_rows(const float* x, Py_ssize_t batch, Py_ssize_t n, const float* w,
                                Py_ssize_t first, Py_ssize_t last, float* out, Py_ssize_t n_out) {
    Py_ssize_t m = 0;
    for (; m + 4 <= batch; m += 4) minifm_fewrows_group(2, 4, x + m * n, n, w, first, last, out + m * n_out, n_out);
    switch (batch - m) {
        case 3: minifm_fewrows_group(2, 3, x + m * n, n, w, first, last, out + m * n_out, n_out); break;
        case 2: minifm_fewrows_group(4, 2, x + m * n, n, w, first, last, out + m * n_out, n_out); break;
        case 1: minifm_fewrows_group(4, 1, x + m * n, n, w, first, last, out + m * n_out, n_out); break;
        default: break;
    }
}
#endif
