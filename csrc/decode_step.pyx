# cython: language_level=3
"""Cython twin of minifm/kernels/decode_step.py (references: matvec_reference, decode_layer_reference).

One KV-cached decoding step of a Llama-style pre-norm block for ONE sequence and ONE new token, float32,
in one call instead of ~25 NumPy/kernel calls, and the matrix-vector product that dominates it:

    h = rmsnorm(x) * norm1                                    x (E,), the residual stream, updated in place
    q, k, v = Wq h, Wk h, Wv h                                 (H*D,), (G*D,), (G*D,)   one parallel region
    q, k = rope(q, position), rope(k, position)                rotate-half pairs (j, j + D/2) of each head
    cache_k[:, position], cache_v[:, position] = k, v           caches (G, max_length, D)
    a_i = softmax(q_i . cache_k[g(i), :position+1] / sqrt(D)) @ cache_v[g(i), :position+1]   g(i) = i // (H/G)
    x += Wo a                                                  one parallel region
    h = rmsnorm(x) * norm2
    gate, up = Wgate h, Wup h                                  one parallel region
    x += Wdown (silu(gate) * up)                               one parallel region

rmsnorm(x) = x * (1 / sqrt(sum(x^2) / E + eps)), the sum in double, as csrc/normalization.pyx computes it.

The matrix-vector products (`matvec_rows`) are what a decoding step costs: they read every weight once and
do one multiply-add per weight, so their speed is the memory bandwidth. The design for that:

  * the output rows of all the weights of one call (q, k, v; gate, up) are one range of blocks of
    ROW_BLOCK = 4 rows, split across the OpenMP threads in equal contiguous parts (static schedule): each
    thread streams one long run of memory, and a second core adds bandwidth;
  * a block of 4 rows is read in one pass with 4 running 8-float AVX2 sums, one per row, that share each
    loaded 8-float piece of x (x stays in L1): 4 independent multiply-add chains, no horizontal sum per
    row until the end, then the 4 sums reduced together (hadd);
  * every output is summed in one fixed order, its 8 lanes ((0+1)+(2+3))+((4+5)+(6+7)) then the tail of
    K mod 8 columns: a row's result does not depend on whether it is computed in a block of 4 or alone
    (the last rows of a weight), on the thread count, or on which weights share the call;
  * a residual add (x += W a) is folded into the product: each output row adds its sum to x[r], which the
    product does not read.

Without AVX2 + FMA the same order is written in plain C (GCC vectorises it where it can). Simplifications:
float32 only; batch 1, one token; no biases, no padding mask, no sliding window (the caller checks and
takes the general path otherwise); the attention over the cache runs on one thread (SmolLM2's 9 heads
over a few hundred positions are microseconds).
"""
cimport cython
from libc.math cimport sqrt

cdef extern from *:
    """
    #include <math.h>
    #if MINIFM_OPENMP
    #include <omp.h>
    static int minifm_ds_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int minifm_ds_max_threads(void) { return 1; }
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

    /* out[r] (+)= sum_j x[j] * w[r * k + j] for the `rows` (1..4) rows at w; 8 lanes per row, then the tail */
    static inline void minifm_ds_rows(const float* x, const float* w, Py_ssize_t k, int rows, float* out,
                                      int accumulate) {
        Py_ssize_t body = k - k % 8, j;
        float lanes[MINIFM_DS_ROW_BLOCK][8];
    #if MINIFM_DS_AVX2
        if (rows == 4) {
            const float *w0 = w, *w1 = w + k, *w2 = w + 2 * k, *w3 = w + 3 * k;
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
                const float* wr = w + r * k;
                __m256 s = _mm256_setzero_ps();
                for (j = 0; j < body; j += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j), _mm256_loadu_ps(x + j), s);
                _mm256_storeu_ps(lanes[r], s);
            }
        }
    #else
        for (int r = 0; r < rows; r++) {
            const float* wr = w + r * k;
            for (int lane = 0; lane < 8; lane++) lanes[r][lane] = 0.0f;
            for (j = 0; j < body; j += 8)
                for (int lane = 0; lane < 8; lane++) lanes[r][lane] = fmaf(wr[j + lane], x[j + lane], lanes[r][lane]);
        }
    #endif
        for (int r = 0; r < rows; r++) {
            const float* wr = w + r * k;
            float tail = 0.0f;
            for (j = body; j < k; j++) tail += x[j] * wr[j];
            float total = minifm_ds_lanes8(lanes[r]) + tail;
            out[r] = accumulate ? out[r] + total : total;
        }
    }

    /* outs[i][r] (+)= (weights[i] x)[r] for `count` weights (sizes[i], k) that share the input x (k,):
       their blocks of MINIFM_DS_ROW_BLOCK rows as one range split across `threads` threads */
    static void minifm_ds_matvec(const float* x, Py_ssize_t k, int count, const float* const* weights,
                                 const Py_ssize_t* sizes, float* const* outs, int accumulate, int threads) {
        Py_ssize_t first_block[9], total = 0;
        for (int i = 0; i < count; i++) {
            first_block[i] = total;
            total += (sizes[i] + MINIFM_DS_ROW_BLOCK - 1) / MINIFM_DS_ROW_BLOCK;
        }
        first_block[count] = total;
        #if MINIFM_OPENMP
        #pragma omp parallel for schedule(static) num_threads(threads)
        #endif
        for (Py_ssize_t block = 0; block < total; block++) {
            int i = 0;
            while (block >= first_block[i + 1]) i++;
            Py_ssize_t row = (block - first_block[i]) * MINIFM_DS_ROW_BLOCK;
            Py_ssize_t left = sizes[i] - row;
            int rows = left < MINIFM_DS_ROW_BLOCK ? (int)left : MINIFM_DS_ROW_BLOCK;
            minifm_ds_rows(x, weights[i] + row * k, k, rows, outs[i] + row, accumulate);
        }
        (void)threads;
    }

    /* y = x * (1 / sqrt(sum(x^2) / n + eps)) * weight, the sum in double */
    static void minifm_ds_rmsnorm(const float* x, const float* weight, Py_ssize_t n, double eps, float* y) {
        double squares = 0.0;
        for (Py_ssize_t j = 0; j < n; j++) squares += (double)x[j] * (double)x[j];
        float scale = (float)(1.0 / sqrt(squares / (double)n + eps));
        for (Py_ssize_t j = 0; j < n; j++) y[j] = x[j] * scale * weight[j];
    }

    /* rotate-half RoPE of `heads` rows of length d at v, by one position's cos/sin (d/2 each) */
    static void minifm_ds_rope(float* v, Py_ssize_t heads, Py_ssize_t d, const float* c, const float* s) {
        Py_ssize_t half = d / 2;
        for (Py_ssize_t h = 0; h < heads; h++) {
            float* row = v + h * d;
            for (Py_ssize_t j = 0; j < half; j++) {
                float a = row[j], b = row[j + half];
                row[j] = a * c[j] - b * s[j];
                row[j + half] = b * c[j] + a * s[j];
            }
        }
    }

    /* out_i = softmax(q_i . keys[g]^T * scale) @ values[g] over the first `length` cached positions of
       kv head g = i / (heads / kv_heads); keys/values (kv_heads, stride, d); scores (length,) is scratch */
    static void minifm_ds_attend(const float* q, const float* keys, const float* values, Py_ssize_t heads,
                                 Py_ssize_t kv_heads, Py_ssize_t d, Py_ssize_t stride, Py_ssize_t length,
                                 float scale, float* scores, float* out) {
        Py_ssize_t group = heads / kv_heads;
        for (Py_ssize_t h = 0; h < heads; h++) {
            const float* qh = q + h * d;
            const float* kh = keys + (h / group) * stride * d;
            const float* vh = values + (h / group) * stride * d;
            float* oh = out + h * d;
            float top = -INFINITY;
            for (Py_ssize_t t = 0; t < length; t++) {
                const float* kt = kh + t * d;
                float dot = 0.0f;
                for (Py_ssize_t j = 0; j < d; j++) dot += qh[j] * kt[j];
                scores[t] = dot * scale;
                top = scores[t] > top ? scores[t] : top;
            }
            double total = 0.0;
            for (Py_ssize_t t = 0; t < length; t++) {
                scores[t] = expf(scores[t] - top);
                total += scores[t];
            }
            float inverse = (float)(1.0 / total);
            for (Py_ssize_t j = 0; j < d; j++) oh[j] = 0.0f;
            for (Py_ssize_t t = 0; t < length; t++) {
                const float* vt = vh + t * d;
                float p = scores[t] * inverse;
                for (Py_ssize_t j = 0; j < d; j++) oh[j] += p * vt[j];
            }
        }
    }
    """
    int max_threads "minifm_ds_max_threads"() noexcept nogil
    int ROW_BLOCK "MINIFM_DS_ROW_BLOCK"
    void ds_matvec "minifm_ds_matvec"(const float* x, Py_ssize_t k, int count, const float* const* weights,
                                      const Py_ssize_t* sizes, float* const* outs, int accumulate,
                                      int threads) noexcept nogil
    void ds_rmsnorm "minifm_ds_rmsnorm"(const float* x, const float* weight, Py_ssize_t n, double eps,
                                        float* y) noexcept nogil
    void ds_rope "minifm_ds_rope"(float* v, Py_ssize_t heads, Py_ssize_t d, const float* c,
                                  const float* s) noexcept nogil
    void ds_attend "minifm_ds_attend"(const float* q, const float* keys, const float* values, Py_ssize_t heads,
                                      Py_ssize_t kv_heads, Py_ssize_t d, Py_ssize_t stride, Py_ssize_t length,
                                      float scale, float* scores, float* out) noexcept nogil
    bint AVX2 "MINIFM_DS_AVX2"

# The product runs on the OpenMP budget's threads when its weights hold at least this many bytes, else on
# one (waking a second thread costs about what it saves below a few hundred KiB; csrc/matvec.pyx measured).
cdef Py_ssize_t PARALLEL_BYTES = 256 * 1024


def uses_avx2():
    """True when this build computes the products with AVX2 + FMA intrinsics."""
    return bool(AVX2)


cdef inline int _threads_for(Py_ssize_t weight_bytes) noexcept nogil:
    return max_threads() if weight_bytes >= PARALLEL_BYTES else 1


cdef void _check_weight(const float[:, ::1] weight, Py_ssize_t rows, Py_ssize_t columns, str name) except *:
    if weight.shape[0] != rows or weight.shape[1] != columns:
        raise ValueError(f"{name} must have shape {(rows, columns)}, got {tuple(weight.shape)[:2]}")


cdef void _check_vector(const float[::1] vector, Py_ssize_t size, str name) except *:
    if vector.shape[0] != size:
        raise ValueError(f"{name} must have {size} entries, got {vector.shape[0]}")


@cython.boundscheck(False)
@cython.wraparound(False)
def matvec_rows(const float[::1] x, const float[:, ::1] weight, float[::1] out, bint accumulate=False):
    """out (+)= weight @ x for x (K,), weight (N, K), out (N,), all float32 and C-contiguous."""
    cdef Py_ssize_t rows = weight.shape[0], k = weight.shape[1]
    cdef const float* weight_data
    cdef float* out_data
    if x.shape[0] != k or k == 0 or rows == 0:
        raise ValueError(f"weight must be (N > 0, {x.shape[0]}) with K > 0, got {tuple(weight.shape)[:2]}")
    _check_vector(out, rows, "out")
    weight_data, out_data = &weight[0, 0], &out[0]
    with nogil:
        ds_matvec(&x[0], k, 1, &weight_data, &rows, &out_data, accumulate, _threads_for(rows * k * 4))


@cython.boundscheck(False)
@cython.wraparound(False)
def decode_layer(float[::1] x, const float[::1] norm1, const float[:, ::1] wq, const float[:, ::1] wk,
                 const float[:, ::1] wv, const float[:, ::1] wo, const float[::1] norm2,
                 const float[:, ::1] wgate, const float[:, ::1] wup, const float[:, ::1] wdown,
                 float[:, :, ::1] cache_k, float[:, :, ::1] cache_v, Py_ssize_t position,
                 const float[::1] cos, const float[::1] sin, double eps, Py_ssize_t heads,
                 float[::1] scratch):
    """One decoding step of a pre-norm Llama block on x (E,) in place (see the module docstring).

    wq (H*D, E), wk and wv (G*D, E), wo (E, H*D), wgate and wup (F, E), wdown (E, F); norm1, norm2 (E,);
    cache_k, cache_v (G, max_length, D) with position < max_length: this token's key and value are stored
    at `position`, and attention reads positions 0..position; cos, sin (D/2,) this position's RoPE row;
    scratch at least (H + 2G) * D + H * D + 2F + E + position + 1 floats. Everything float32.
    """
    cdef Py_ssize_t width = x.shape[0], kv_heads = cache_k.shape[0], length = cache_k.shape[1]
    cdef Py_ssize_t head_dim = cache_k.shape[2], hidden = wgate.shape[0]
    cdef Py_ssize_t q_size = heads * head_dim, kv_size = kv_heads * head_dim
    cdef const float* weights[3]
    cdef float* outs[3]
    cdef Py_ssize_t sizes[3]
    cdef float* q
    cdef float* k
    cdef float* v
    cdef float* attended
    cdef float* gate
    cdef float* up
    cdef float* h
    cdef float* scores
    cdef Py_ssize_t need = q_size + 2 * kv_size + q_size + 2 * hidden + width + position + 1, j
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads or head_dim % 2 or width == 0 or hidden == 0:
        raise ValueError(f"heads {heads} must be a positive multiple of the caches' kv heads {kv_heads}, "
                         f"head_dim {head_dim} even, width {width} and hidden {hidden} positive")
    if tuple(cache_v.shape)[:3] != tuple(cache_k.shape)[:3]:
        raise ValueError(f"cache_v has shape {tuple(cache_v.shape)[:3]}, cache_k {tuple(cache_k.shape)[:3]}")
    if not 0 <= position < length:
        raise ValueError(f"position must lie in [0, {length}) (the caches' length), got {position}")
    _check_vector(norm1, width, "norm1")
    _check_vector(norm2, width, "norm2")
    _check_weight(wq, q_size, width, "wq")
    _check_weight(wk, kv_size, width, "wk")
    _check_weight(wv, kv_size, width, "wv")
    _check_weight(wo, width, q_size, "wo")
    _check_weight(wgate, hidden, width, "wgate")
    _check_weight(wup, hidden, width, "wup")
    _check_weight(wdown, width, hidden, "wdown")
    _check_vector(cos, head_dim // 2, "cos")
    _check_vector(sin, head_dim // 2, "sin")
    if scratch.shape[0] < need:
        raise ValueError(f"scratch needs at least {need} floats, got {scratch.shape[0]}")
    q = &scratch[0]
    k = q + q_size
    v = k + kv_size
    attended = v + kv_size
    gate = attended + q_size
    up = gate + hidden
    h = up + hidden
    scores = h + width
    with nogil:
        ds_rmsnorm(&x[0], &norm1[0], width, eps, h)
        weights[0], weights[1], weights[2] = &wq[0, 0], &wk[0, 0], &wv[0, 0]
        outs[0], outs[1], outs[2] = q, k, v
        sizes[0], sizes[1], sizes[2] = q_size, kv_size, kv_size
        ds_matvec(h, width, 3, weights, sizes, outs, 0, _threads_for((q_size + 2 * kv_size) * width * 4))
        ds_rope(q, heads, head_dim, &cos[0], &sin[0])
        ds_rope(k, kv_heads, head_dim, &cos[0], &sin[0])
        for j in range(kv_heads):
            memcpy_floats(&cache_k[j, position, 0], k + j * head_dim, head_dim)
            memcpy_floats(&cache_v[j, position, 0], v + j * head_dim, head_dim)
        ds_attend(q, &cache_k[0, 0, 0], &cache_v[0, 0, 0], heads, kv_heads, head_dim, length, position + 1,
                  <float>(1.0 / sqrt(<double>head_dim)), scores, attended)
        weights[0], outs[0], sizes[0] = &wo[0, 0], &x[0], width
        ds_matvec(attended, q_size, 1, weights, sizes, outs, 1, _threads_for(width * q_size * 4))
        ds_rmsnorm(&x[0], &norm2[0], width, eps, h)
        weights[0], weights[1] = &wgate[0, 0], &wup[0, 0]
        outs[0], outs[1] = gate, up
        sizes[0], sizes[1] = hidden, hidden
        ds_matvec(h, width, 2, weights, sizes, outs, 0, _threads_for(2 * hidden * width * 4))
        for j in range(hidden):
            gate[j] = gate[j] / (<float>1.0 + expf(-gate[j])) * up[j]  # silu(gate) * up, as SiluMul
        weights[0], outs[0], sizes[0] = &wdown[0, 0], &x[0], width
        ds_matvec(gate, hidden, 1, weights, sizes, outs, 1, _threads_for(width * hidden * 4))


cdef extern from "math.h":
    float expf(float) noexcept nogil


cdef inline void memcpy_floats(float* target, const float* source, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(count):
        target[j] = source[j]
