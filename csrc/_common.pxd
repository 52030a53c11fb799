# cython: language_level=3
# _common.pxd is generated from _common.pxd.tp by setup.py (Tempita, as scikit-learn does): edit the .tp.
"""Vector primitives shared by the Cython kernels (softmax, cross_entropy, attention, sampling,
normalization, activations).

Why a few lines of C: without -ffast-math, GCC will not vectorise a loop that calls libm's exp or
that reduces (sum, max) across iterations, because that would change the rounding order. The
kernels' inner loops are exactly such loops, so the primitives below are written in plain C with
`#pragma omp simd` (which permits the reordering for the one loop that carries it) and an exp that
is pure arithmetic, so the compiler turns each loop into AVX/AVX-512 instructions.

exp: Cody-Waite range reduction x = n ln2 + r with |r| <= ln2/2, a Taylor polynomial for exp(r)
(degree 7 in float32, 12 in float64: truncation error below one ulp), and 2^n built from the
exponent bits. Simplification: results below the smallest normal number are flushed to zero
(exp(x) = 0 for x < -87 in float32, x < -708 in float64), +inf above the overflow point, NaN
stays NaN.

One source, two element types: each primitive is written once in _common.pxd.tp, and setup.py
expands it for float (C names ending `_f`, exp = minifm_expf) and double (`_d`, exp = minifm_exp).
C has no generics and Cython cannot emit `#pragma omp simd`, hence the template for the C part.
The kernels call the Cython functions at the end of this file, which take the fused type `real`
(float or double) and pick the `_f` or `_d` C function at compile time, so a kernel is written
once for both types too. Sums accumulate in double. The max reductions skip NaN entries, but the
exp pass that follows turns a NaN input into NaN outputs, so a NaN row never comes out finite.
"""

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    #if MINIFM_OPENMP
    #include <omp.h>
    #endif

    /* Threads for a parallel loop over `rows` independent items whose serial cost is `work`,
       estimated in nanoseconds on one core (each kernel converts its size into that unit; an
       element of softmax or cross-entropy is about 1 ns). Below MINIFM_PARALLEL_WORK (about a
       millisecond) one thread: waking a second one costs tens of microseconds on an idle machine
       and up to a scheduler time slice (several ms) when other processes hold the cores, which
       made the tiny model's step 4x slower. Otherwise OpenMP's count (at most rows). */
    #define MINIFM_PARALLEL_WORK 1000000.0
    static inline int minifm_threads_for(Py_ssize_t rows, double work) {
    #if MINIFM_OPENMP
        if (rows < 2 || work < MINIFM_PARALLEL_WORK) return 1;
        int threads = omp_get_max_threads();
        return threads < rows ? threads : (int)rows;
    #else
        (void)rows; (void)work;
        return 1;
    #endif
    }

    static inline __attribute__((always_inline)) float minifm_expf(float x) {
        float xc = x < -87.0f ? -87.0f : x;
        xc = xc > 88.0f ? 88.0f : xc;
        /* round to nearest integer by adding and removing 1.5 * 2^23 (no libm call, so it vectorises) */
        float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
        float r = xc - n * 0.693359375f;
        r = r - n * -2.12194440e-4f;
        float p = 1.0f / 5040.0f;
        p = p * r + 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        union { int32_t i; float f; } two_n;
        two_n.i = ((int32_t)n + 127) << 23;
        float result = p * two_n.f;
        result = x < -87.0f ? 0.0f : result;
        result = x > 88.0f ? INFINITY : result;
        result = x != x ? x : result;
        return result;
    }

    /* 1/k! for k = 0..12: the Taylor coefficients of exp. */
    static const double MINIFM_INV_FACTORIAL[13] = {
        1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0,
        1.0 / 40320.0, 1.0 / 362880.0, 1.0 / 3628800.0, 1.0 / 39916800.0, 1.0 / 479001600.0};

    /* exp(x) in double, branch-free so that loops calling it vectorise: Cody-Waite reduction
       x = n ln2 + r (|r| <= ln2/2), a Taylor polynomial of degree `degree` in r (Horner), times 2^n.
       degree 12: ~1 ulp of a double; degree 9: ~1e-11 relative, ample for float32 results and ~16%
       cheaper. `degree` is a constant at every call site, so the loop unrolls. Underflow gives 0
       (below -708), overflow +inf (above 709), NaN stays NaN. */
    static inline __attribute__((always_inline)) double minifm_exp_of_degree(double x, const int degree) {
        double xc = x < -708.0 ? -708.0 : x;
        xc = xc > 709.0 ? 709.0 : xc;
        double n = (xc * 1.44269504088896340736 + 6755399441055744.0) - 6755399441055744.0;
        double r = xc - n * 6.93147180369123816490e-01;
        r = r - n * 1.90821492927058770002e-10;
        double p = MINIFM_INV_FACTORIAL[degree];
        for (int k = degree - 1; k >= 0; k--) p = p * r + MINIFM_INV_FACTORIAL[k];
        union { int64_t i; double f; } two_n;
        two_n.i = ((int64_t)n + 1023) << 52;
        double result = p * two_n.f;
        result = x < -708.0 ? 0.0 : result;
        result = x > 709.0 ? INFINITY : result;
        result = x != x ? x : result;
        return result;
    }

    static inline __attribute__((always_inline)) double minifm_exp(double x) {
        return minifm_exp_of_degree(x, 12);
    }

    /* exp for results that will be rounded to float32 (see minifm_exp_of_degree). */
    static inline __attribute__((always_inline)) double minifm_exp_for_float(double x) {
        return minifm_exp_of_degree(x, 9);
    }

    /* ---- float primitives ---- */
    static inline float minifm_max_f(const float* x, Py_ssize_t n) {
        float m = -INFINITY;
        #pragma omp simd reduction(max:m)
        for (Py_ssize_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
        return m;
    }
    /* y[j] = exp(scale * x[j] - shift); returns the sum of the y[j] (accumulated in double). */
    static inline double minifm_exp_store_sum_f(const float* x, float* y, Py_ssize_t n,
                                                       float scale, float shift) {
        double total = 0.0;
        #pragma omp simd reduction(+:total)
        for (Py_ssize_t j = 0; j < n; j++) {
            float e = minifm_expf(scale * x[j] - shift);
            y[j] = e;
            total += (double)e;
        }
        return total;
    }
    /* sum_j exp(x[j] - shift), nothing stored. */
    static inline double minifm_exp_sum_f(const float* x, Py_ssize_t n, float shift) {
        double total = 0.0;
        #pragma omp simd reduction(+:total)
        for (Py_ssize_t j = 0; j < n; j++) total += (double)minifm_expf(x[j] - shift);
        return total;
    }
    /* y[j] = exp(x[j] - shift) * factor + offset. */
    static inline void minifm_exp_affine_f(const float* x, float* y, Py_ssize_t n, float shift,
                                                  float factor, float offset) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) y[j] = minifm_expf(x[j] - shift) * factor + offset;
    }
    static inline double minifm_sum_f(const float* x, Py_ssize_t n) {
        double total = 0.0;
        #pragma omp simd reduction(+:total)
        for (Py_ssize_t j = 0; j < n; j++) total += (double)x[j];
        return total;
    }
    static inline double minifm_dot_f(const float* a, const float* b, Py_ssize_t n) {
        double total = 0.0;
        #pragma omp simd reduction(+:total)
        for (Py_ssize_t j = 0; j < n; j++) total += (double)a[j] * (double)b[j];
        return total;
    }
    static inline void minifm_scale_f(float* y, Py_ssize_t n, float factor) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) y[j] *= factor;
    }
    /* y[j] = x[j] - shift */
    static inline void minifm_shift_f(const float* x, float* y, Py_ssize_t n, float shift) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) y[j] = x[j] - shift;
    }
    /* dx[j] = y[j] * (dy[j] - c)   (softmax backward) */
    static inline void minifm_mul_sub_f(const float* y, const float* dy, float* dx, Py_ssize_t n, float c) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) dx[j] = y[j] * (dy[j] - c);
    }
    /* dx[j] = dy[j] - exp(y[j]) * c   (log-softmax backward) */
    static inline void minifm_sub_exp_mul_f(const float* y, const float* dy, float* dx, Py_ssize_t n, float c) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) dx[j] = dy[j] - minifm_expf(y[j]) * c;
    }
    /* ---- double primitives ---- */
    static inline double minifm_max_d(const double* x, Py_ssize_t n) {
        double m = -INFINITY;
        #pragma omp simd reduction(max:m)
        for (Py_ssize_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
        return m;
    }
    /* y[j] = exp(scale * x[j] - shift); returns the sum of the y[j] (accumulated in double). */
    static inline double minifm_exp_store_sum_d(const double* x, double* y, Py_ssize_t n,
                                                       double scale, double shift) {
        double total = 0.0;
        #pragma omp simd reduction(+:total)
        for (Py_ssize_t j = 0; j < n; j++) {
            double e = minifm_exp(scale * x[j] - shift);
            y[j] = e;
            total += (double)e;
        }
        return total;
    }
    /* sum_j exp(x[j] - shift), nothing stored. */
    static inline double minifm_exp_sum_d(const double* x, Py_ssize_t n, double shift) {
        double total = 0.0;
        #pragma omp simd reduction(+:total)
        for (Py_ssize_t j = 0; j < n; j++) total += (double)minifm_exp(x[j] - shift);
        return total;
    }
    /* y[j] = exp(x[j] - shift) * factor + offset. */
    static inline void minifm_exp_affine_d(const double* x, double* y, Py_ssize_t n, double shift,
                                                  double factor, double offset) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) y[j] = minifm_exp(x[j] - shift) * factor + offset;
    }
    static inline double minifm_sum_d(const double* x, Py_ssize_t n) {
        double total = 0.0;
        #pragma omp simd reduction(+:total)
        for (Py_ssize_t j = 0; j < n; j++) total += (double)x[j];
        return total;
    }
    static inline double minifm_dot_d(const double* a, const double* b, Py_ssize_t n) {
        double total = 0.0;
        #pragma omp simd reduction(+:total)
        for (Py_ssize_t j = 0; j < n; j++) total += (double)a[j] * (double)b[j];
        return total;
    }
    static inline void minifm_scale_d(double* y, Py_ssize_t n, double factor) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) y[j] *= factor;
    }
    /* y[j] = x[j] - shift */
    static inline void minifm_shift_d(const double* x, double* y, Py_ssize_t n, double shift) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) y[j] = x[j] - shift;
    }
    /* dx[j] = y[j] * (dy[j] - c)   (softmax backward) */
    static inline void minifm_mul_sub_d(const double* y, const double* dy, double* dx, Py_ssize_t n, double c) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) dx[j] = y[j] * (dy[j] - c);
    }
    /* dx[j] = dy[j] - exp(y[j]) * c   (log-softmax backward) */
    static inline void minifm_sub_exp_mul_d(const double* y, const double* dy, double* dx, Py_ssize_t n, double c) {
        #pragma omp simd
        for (Py_ssize_t j = 0; j < n; j++) dx[j] = dy[j] - minifm_exp(y[j]) * c;
    }

    """
    int threads_for "minifm_threads_for"(Py_ssize_t rows, double work) noexcept nogil
    float fast_expf "minifm_expf"(float x) noexcept nogil
    double fast_exp "minifm_exp"(double x) noexcept nogil
    double exp_for_float "minifm_exp_for_float"(double x) noexcept nogil


    float max_f "minifm_max_f"(const float* x, Py_ssize_t n) noexcept nogil
    double exp_store_sum_f "minifm_exp_store_sum_f"(
        const float* x, float* y, Py_ssize_t n, float scale, float shift) noexcept nogil
    double exp_sum_f "minifm_exp_sum_f"(const float* x, Py_ssize_t n, float shift) noexcept nogil
    void exp_affine_f "minifm_exp_affine_f"(
        const float* x, float* y, Py_ssize_t n, float shift, float factor, float offset) noexcept nogil
    double sum_f "minifm_sum_f"(const float* x, Py_ssize_t n) noexcept nogil
    double dot_f "minifm_dot_f"(const float* a, const float* b, Py_ssize_t n) noexcept nogil
    void scale_f "minifm_scale_f"(float* y, Py_ssize_t n, float factor) noexcept nogil
    void shift_f "minifm_shift_f"(
        const float* x, float* y, Py_ssize_t n, float shift) noexcept nogil
    void mul_sub_f "minifm_mul_sub_f"(
        const float* y, const float* dy, float* dx, Py_ssize_t n, float c) noexcept nogil
    void sub_exp_mul_f "minifm_sub_exp_mul_f"(
        const float* y, const float* dy, float* dx, Py_ssize_t n, float c) noexcept nogil

    double max_d "minifm_max_d"(const double* x, Py_ssize_t n) noexcept nogil
    double exp_store_sum_d "minifm_exp_store_sum_d"(
        const double* x, double* y, Py_ssize_t n, double scale, double shift) noexcept nogil
    double exp_sum_d "minifm_exp_sum_d"(const double* x, Py_ssize_t n, double shift) noexcept nogil
    void exp_affine_d "minifm_exp_affine_d"(
        const double* x, double* y, Py_ssize_t n, double shift, double factor, double offset) noexcept nogil
    double sum_d "minifm_sum_d"(const double* x, Py_ssize_t n) noexcept nogil
    double dot_d "minifm_dot_d"(const double* a, const double* b, Py_ssize_t n) noexcept nogil
    void scale_d "minifm_scale_d"(double* y, Py_ssize_t n, double factor) noexcept nogil
    void shift_d "minifm_shift_d"(
        const double* x, double* y, Py_ssize_t n, double shift) noexcept nogil
    void mul_sub_d "minifm_mul_sub_d"(
        const double* y, const double* dy, double* dx, Py_ssize_t n, double c) noexcept nogil
    void sub_exp_mul_d "minifm_sub_exp_mul_d"(
        const double* y, const double* dy, double* dx, Py_ssize_t n, double c) noexcept nogil


# The element type of every kernel: each `def` taking `real[...]` memoryviews is compiled twice.
ctypedef fused real:
    float
    double


# Fused entry points: `if real is float` is decided at compile time, so each one inlines to a
# single C call. Conversions of the scalar arguments to `real` happen at the call site.

cdef inline real row_max(const real* x, Py_ssize_t n) noexcept nogil:
    """max_j x[j] (NaN entries skipped; -inf for n = 0)."""
    if real is float:
        return max_f(x, n)
    else:
        return max_d(x, n)


cdef inline double exp_store_sum(const real* x, real* y, Py_ssize_t n, real scale, real shift) noexcept nogil:
    """y[j] = exp(scale * x[j] - shift); returns sum_j y[j] (in double). x and y may be the same row."""
    if real is float:
        return exp_store_sum_f(x, y, n, scale, shift)
    else:
        return exp_store_sum_d(x, y, n, scale, shift)


cdef inline double exp_sum(const real* x, Py_ssize_t n, real shift) noexcept nogil:
    """sum_j exp(x[j] - shift), nothing stored."""
    if real is float:
        return exp_sum_f(x, n, shift)
    else:
        return exp_sum_d(x, n, shift)


cdef inline void exp_affine(const real* x, real* y, Py_ssize_t n, real shift, real factor, real offset) noexcept nogil:
    """y[j] = exp(x[j] - shift) * factor + offset."""
    if real is float:
        exp_affine_f(x, y, n, shift, factor, offset)
    else:
        exp_affine_d(x, y, n, shift, factor, offset)


cdef inline double row_sum(const real* x, Py_ssize_t n) noexcept nogil:
    """sum_j x[j] (in double)."""
    if real is float:
        return sum_f(x, n)
    else:
        return sum_d(x, n)


cdef inline double dot(const real* a, const real* b, Py_ssize_t n) noexcept nogil:
    """sum_j a[j] * b[j] (products and sum in double)."""
    if real is float:
        return dot_f(a, b, n)
    else:
        return dot_d(a, b, n)


cdef inline void scale(real* y, Py_ssize_t n, real factor) noexcept nogil:
    """y[j] *= factor."""
    if real is float:
        scale_f(y, n, factor)
    else:
        scale_d(y, n, factor)


cdef inline void shift(const real* x, real* y, Py_ssize_t n, real amount) noexcept nogil:
    """y[j] = x[j] - amount."""
    if real is float:
        shift_f(x, y, n, amount)
    else:
        shift_d(x, y, n, amount)


cdef inline void mul_sub(const real* y, const real* dy, real* dx, Py_ssize_t n, real c) noexcept nogil:
    """dx[j] = y[j] * (dy[j] - c)   (softmax backward)."""
    if real is float:
        mul_sub_f(y, dy, dx, n, c)
    else:
        mul_sub_d(y, dy, dx, n, c)


cdef inline void sub_exp_mul(const real* y, const real* dy, real* dx, Py_ssize_t n, real c) noexcept nogil:
    """dx[j] = dy[j] - exp(y[j]) * c   (log-softmax backward)."""
    if real is float:
        sub_exp_mul_f(y, dy, dx, n, c)
    else:
        sub_exp_mul_d(y, dy, dx, n, c)
