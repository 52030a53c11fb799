# cython: language_level=3
"""Cython twin of minifm/kernels/decode_step.py (references: matvec_reference, decode_layer_reference,
decode_quantized_layer_reference).

One KV-cached decoding step of a Llama-style pre-norm block for ONE sequence and ONE new token, float32,
in one call instead of ~25 NumPy/kernel calls, and the matrix-vector product that dominates it:

    h = rmsnorm(x) * norm1                                    x (E,), the residual stream, updated in place
    q, k, v = Wq h, Wk h, Wv h                                 (H*D,), (G*D,), (G*D,)   one product
    q, k = rope(q, position), rope(k, position)                rotate-half pairs (j, j + D/2) of each head
    cache_k[:, position], cache_v[:, position] = k, v           caches (G, max_length, D)
    a_i = softmax(q_i . cache_k[g(i), :position+1] / sqrt(D)) @ cache_v[g(i), :position+1]   g(i) = i // (H/G)
    x += Wo a
    h = rmsnorm(x) * norm2
    gate, up = Wgate h, Wup h                                  one product
    x += Wdown (silu(gate) * up)

rmsnorm(x) = x * (1 / sqrt(sum(x^2) / E + eps)), the sum in double, as csrc/normalization.pyx computes it.

The matrix-vector products are what a decoding step costs: they read every weight once and do one
multiply-add per weight, so their speed is the memory bandwidth. The design for that:

  * the output rows of all the weights of one product (q, k, v; gate, up) are one range of blocks of
    ROW_BLOCK = 4 rows, split across the threads in equal contiguous parts (a second core adds bandwidth);
  * a thread cuts its part of a weight in four quarters and reads them side by side: row i of each
    quarter together, one 8-float AVX2 running sum per row, the four sharing each loaded piece of x (which
    stays in L1). The memory is then read as four long sequential streams, which the hardware prefetcher
    follows. Four neighbouring rows at a time are four streams of one row each (2.3 KB for SmolLM2's
    576-wide rows) that the prefetcher must find again every 4 rows, and one row at a time is one stream.
    Measured on SmolLM2's shapes (30 layers + head, one thread, GB/s per CPU second, a busy host, medians
    of 5): quarters 13.2, four neighbouring rows 9.8 (one row at a time with four running sums 7.9 in an
    earlier run where four neighbours read 6.4), NumPy's BLAS one product at a time 7.8, and BLAS on a
    4096 x 16384 matrix (the bound's yardstick) 13.5;
  * every output is summed in one order, fixed by the width only (lane i of the running sum holds the
    columns j = i mod 8; the 8 lanes are added ((0+1)+(2+3))+((4+5)+(6+7)), then the tail of K mod 8
    columns), so a result does not depend on the thread count, on which rows share its pass or on which
    weights share the call;
  * a residual add (x += W a) is folded into the product: each output row adds its sum to x[r], which the
    product does not read.

The layer runs in ONE OpenMP parallel region with four barriers (after q/k/v, attention, o and gate/up;
minifm_ds_layer_part says why the other steps need none), each spinning ~0.1 ms before sleeping
(futex). Under OMP_WAIT_POLICY=PASSIVE alone (minifm's default before it added a ~0.1 ms spin, see
minifm/kernels/_backend.py) a thread that leaves a parallel region sleeps at once, and waking it costs
10-25 us here: with one region per product that was 121 wake-ups per token. Each barrier
is a point where a thread whose partner lost its core to another process waits a scheduler time slice:
on a busy host, fewer threads are faster (minifm.kernels.threads follows the load by default).

decode_quantized_layer: the same step when the seven projections are stored in GGUF block formats (Q8_0,
Q4_0, Q4_1; minifm/nn/quantized.py QuantizedLinear). Same steps, barriers, splits and float32 arithmetic
outside the products; each product row is the fused dequantize-and-dot of csrc/_block_dot.pxd (shared with
csrc/quantized.pyx, so an output has the bits decode_products gives it), on the float32 input or, for a
projection whose quantize_input flag is set, on the input rounded to int8 per block of 32 (each thread
rounds the whole input itself: cheaper than a barrier). A product's rows are split across the threads in
equal contiguous ranges of single rows (a packed row is one short stream: 360 bytes for a Q4_1 row of 576).

Without AVX2 + FMA the same orders are written in plain C (GCC vectorises what it can). Simplifications:
float32 activations only; batch 1, one token; no biases, no padding mask, no sliding window; the quantized
step takes only the three block formats, all seven projections quantized (the caller checks and takes the
general path otherwise).
"""
cimport cython
from libc.math cimport sqrt

from libc.stdint cimport uint8_t

cimport _common  # its C primitives come first in the generated file: the block below calls minifm_silu_mul_f
# the GGUF block-dot loops (minifm_row_dot, minifm_row_dot_q8, minifm_quantize_input), shared with quantized.pyx
from _block_dot cimport QK, block_bytes_of
# the float32 streaming product (minifm_ds_rows, minifm_ds_row_range, minifm_ds_matvec_part), shared with matvec.pyx
cimport _stream_dot

cdef extern from *:
    """
    #include <math.h>
    #include <sched.h>
    #if MINIFM_OPENMP
    #include <omp.h>
    static int minifm_ds_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int minifm_ds_max_threads(void) { return 1; }
    #endif
    #if defined(__x86_64__) || defined(__i386__)
    #define MINIFM_DS_PAUSE() __builtin_ia32_pause()
    #else
    #define MINIFM_DS_PAUSE() ((void)0)
    #endif

    /* A thread waiting at a barrier spins this many pause instructions (~0.1 ms) before sleeping. */
    #define MINIFM_DS_SPINS 4096

    /* The threads of one parallel region wait here for each other: a counter and a phase number, spinning
       (a waiting thread is usually a few microseconds behind), then sleeping on the phase (a Linux futex)
       when the wait is long (another process holds the other thread's core). OpenMP's own barrier sleeps at once under OMP_WAIT_POLICY=PASSIVE, and
       waking a sleeping thread costs tens of microseconds: 8 of them per layer would cost more than they
       separate. */
    typedef struct { int arrived; int phase; int sleepers; } minifm_ds_barrier;

    #if defined(__linux__)
    #include <linux/futex.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    /* sleep until *address != value (returns at once if it already differs) / wake every sleeper */
    static void minifm_ds_sleep(int* address, int value) {
        syscall(SYS_futex, address, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
    }
    static void minifm_ds_wake(int* address) { syscall(SYS_futex, address, FUTEX_WAKE_PRIVATE, 1 << 30, NULL, NULL, 0); }
    #else
    static void minifm_ds_sleep(int* address, int value) { (void)address; (void)value; sched_yield(); }
    static void minifm_ds_wake(int* address) { (void)address; }
    #endif

    static void minifm_ds_wait(minifm_ds_barrier* barrier, int threads) {
        if (threads == 1) return;
        int phase = __atomic_load_n(&barrier->phase, __ATOMIC_ACQUIRE);
        if (__atomic_add_fetch(&barrier->arrived, 1, __ATOMIC_ACQ_REL) == threads) {
            __atomic_store_n(&barrier->arrived, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&barrier->phase, phase + 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&barrier->sleepers, __ATOMIC_SEQ_CST)) minifm_ds_wake(&barrier->phase);
            return;
        }
        for (long spins = 0; __atomic_load_n(&barrier->phase, __ATOMIC_ACQUIRE) == phase; spins++) {
            if (spins < MINIFM_DS_SPINS) {
                MINIFM_DS_PAUSE();
            } else {  /* a long wait: sleep (not a yield loop, which keeps competing for a core) */
                __atomic_add_fetch(&barrier->sleepers, 1, __ATOMIC_SEQ_CST);
                minifm_ds_sleep(&barrier->phase, phase);
                __atomic_sub_fetch(&barrier->sleepers, 1, __ATOMIC_SEQ_CST);
            }
        }
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

    /* out_h = softmax(q_h . keys_g^T * scale) @ values_g over `length` cached positions, keys_g and values_g
       (length, d) rows at `keys` / `values` (row stride d); scores (length,) is scratch. */
    static void minifm_ds_attend_head(const float* q, const float* keys, const float* values, Py_ssize_t d,
                                      Py_ssize_t length, float scale, float* scores, float* out) {
        Py_ssize_t t, j;
        minifm_ds_row_range(q, keys, d, 0, length, scores, 0);  /* scores[t] = q . keys[t] */
        float top = -INFINITY;
        for (t = 0; t < length; t++) {
            scores[t] *= scale;
            top = scores[t] > top ? scores[t] : top;
        }
        double total = 0.0;
        for (t = 0; t < length; t++) {
            scores[t] = expf(scores[t] - top);
            total += scores[t];
        }
        float inverse = (float)(1.0 / total);
        for (j = 0; j < d; j++) out[j] = 0.0f;
        for (t = 0; t < length; t++) {
            const float* row = values + t * d;
            float p = scores[t] * inverse;
            #pragma omp simd
            for (j = 0; j < d; j++) out[j] += p * row[j];
        }
    }

    /* Everything decode_layer needs (see the Cython function's docstring for the shapes). */
    typedef struct {
        Py_ssize_t width, heads, kv_heads, head_dim, hidden, stride, position;
        double eps;
        const float *norm1, *wq, *wk, *wv, *wo, *norm2, *wgate, *wup, *wdown, *cos, *sin;
        float *x, *cache_k, *cache_v;
        float *q, *k, *v, *attended, *gate, *up, *scores;  /* scratch; scores (heads, position + 1) */
    } minifm_ds_layer;

    /* Thread id's part of the attention of the layer, once q, k and v are complete: the key/value heads are
       split across the threads; a thread rotates its kv heads' keys, stores them and the values in the
       cache, rotates the query heads that read them and attends (so no barrier is needed inside). */
    static void minifm_ds_attention_part(const minifm_ds_layer* a, int id, int threads) {
        Py_ssize_t begin, end, length = a->position + 1, group = a->heads / a->kv_heads, d = a->head_dim;
        minifm_ds_share(a->kv_heads, id, threads, &begin, &end);
        for (Py_ssize_t g = begin; g < end; g++) {
            float* key = a->k + g * d;
            minifm_ds_rope(key, 1, d, a->cos, a->sin);
            Py_ssize_t cached = g * a->stride * d;
            for (Py_ssize_t j = 0; j < d; j++) {
                a->cache_k[cached + a->position * d + j] = key[j];
                a->cache_v[cached + a->position * d + j] = a->v[g * d + j];
            }
            for (Py_ssize_t head = g * group; head < (g + 1) * group; head++) {
                minifm_ds_rope(a->q + head * d, 1, d, a->cos, a->sin);
                minifm_ds_attend_head(a->q + head * d, a->cache_k + cached, a->cache_v + cached, d, length,
                                      (float)(1.0 / sqrt((double)d)), a->scores + head * length,
                                      a->attended + head * d);
            }
        }
    }

    /* [begin, end): thread id's rows of the hidden layer (gate / up), whole blocks of MINIFM_DS_ROW_BLOCK */
    static void minifm_ds_hidden_share(Py_ssize_t hidden, int id, int threads, Py_ssize_t* begin, Py_ssize_t* end) {
        minifm_ds_share((hidden + MINIFM_DS_ROW_BLOCK - 1) / MINIFM_DS_ROW_BLOCK, id, threads, begin, end);
        *begin *= MINIFM_DS_ROW_BLOCK;
        *end = *end * MINIFM_DS_ROW_BLOCK < hidden ? *end * MINIFM_DS_ROW_BLOCK : hidden;
    }

    /* One thread's part of the layer (id of `threads`). Four barriers: after q/k/v, after attention, after
       o (x complete), after gate/up; every other step needs only what the same thread computed:
         * each thread normalises x into its own h (E values: cheaper than a barrier);
         * attention: minifm_ds_attention_part;
         * gate and up are split by the same rows, so a thread applies SiLU to the rows it computed. */
    static void minifm_ds_layer_part(const minifm_ds_layer* a, minifm_ds_barrier* barrier, int id, int threads) {
        Py_ssize_t q_size = a->heads * a->head_dim, kv_size = a->kv_heads * a->head_dim, begin, end;
        float h[a->width];  /* this thread's normalised x */
        minifm_ds_rmsnorm(a->x, a->norm1, a->width, a->eps, h);
        {
            const float* weights[3] = {a->wq, a->wk, a->wv};
            Py_ssize_t sizes[3] = {q_size, kv_size, kv_size};
            float* outs[3] = {a->q, a->k, a->v};
            minifm_ds_matvec_part(h, a->width, 3, weights, sizes, outs, 0, id, threads);
        }
        minifm_ds_wait(barrier, threads);
        minifm_ds_attention_part(a, id, threads);
        minifm_ds_wait(barrier, threads);
        minifm_ds_matvec_part(a->attended, q_size, 1, &a->wo, &a->width, &a->x, 1, id, threads);
        minifm_ds_wait(barrier, threads);
        minifm_ds_rmsnorm(a->x, a->norm2, a->width, a->eps, h);
        minifm_ds_hidden_share(a->hidden, id, threads, &begin, &end);
        minifm_ds_row_range(h, a->wgate, a->width, begin, end, a->gate, 0);
        minifm_ds_row_range(h, a->wup, a->width, begin, end, a->up, 0);
        minifm_silu_mul_f(a->gate + begin, a->up + begin, a->gate + begin, end - begin);  /* as SiluMul */
        minifm_ds_wait(barrier, threads);
        minifm_ds_matvec_part(a->gate, a->hidden, 1, &a->wdown, &a->width, &a->x, 1, id, threads);
    }

    /* The whole layer in one parallel region of `threads` threads. */
    static void minifm_ds_decode_layer(const minifm_ds_layer* a, int threads) {
        minifm_ds_barrier barrier = {0, 0, 0};
        #if MINIFM_OPENMP
        #pragma omp parallel num_threads(threads)
        minifm_ds_layer_part(a, &barrier, omp_get_thread_num(), omp_get_num_threads());
        #else
        (void)threads;
        minifm_ds_layer_part(a, &barrier, 0, 1);
        #endif
    }

    /* ---- the same step with the seven projections stored in GGUF block formats (Q8_0, Q4_0, Q4_1) ----
       Each product runs the fused block-dot loops of _block_dot.pxd (minifm_row_dot, or minifm_row_dot_q8 on
       the input rounded to int8 per block of 32 when the weight asks for it): one weight row against one
       input row, so every output has the bits the quantized kernel (csrc/quantized.pyx decode_products)
       gives it. The rest of the step (norms, RoPE, cache, attention, SiLU, residuals) is the float32 one. */
    typedef struct {
        const uint8_t* data;         /* (rows, row_bytes) packed blocks */
        Py_ssize_t rows, row_bytes;
        int type;                    /* GGML type: 2 Q4_0, 3 Q4_1, 8 Q8_0 */
        int q8_input;                /* round the input to int8 per block of 32 first (quantize_input) */
    } minifm_dsq_weight;

    typedef struct {
        minifm_ds_layer shape;       /* sizes, norms, cos/sin, x, caches, scratch (its float weights unused) */
        minifm_dsq_weight wq, wk, wv, wo, wgate, wup, wdown;
    } minifm_dsq_layer;

    /* The input of one product: float32 x (k,) and, when a weight reading it rounds it, its int8 form. */
    typedef struct { const float* x; const int8_t* xq; const float* dx; const float* sx; } minifm_dsq_input;

    static inline void minifm_dsq_prepare(const float* x, Py_ssize_t k, int rounded, int8_t* xq, float* dx,
                                          float* sx, minifm_dsq_input* in) {
        in->x = x; in->xq = xq; in->dx = dx; in->sx = sx;
        if (rounded) minifm_quantize_input(x, k, xq, dx, sx);  /* each thread rounds the whole input itself */
    }

    /* out[r] (+)= (W in)[r] for the rows r in [first, last) of w */
    static void minifm_dsq_rows(const minifm_dsq_input* in, Py_ssize_t k, const minifm_dsq_weight* w,
                                Py_ssize_t first, Py_ssize_t last, float* out, int accumulate) {
        Py_ssize_t n_blocks = k / MINIFM_QK;
        for (Py_ssize_t r = first; r < last; r++) {
            float total;
            const uint8_t* row = w->data + r * w->row_bytes;
            if (w->q8_input) minifm_row_dot_q8(w->type, 1, row, n_blocks, in->xq, in->dx, in->sx, k, &total, 1);
            else minifm_row_dot(w->type, 1, row, n_blocks, in->x, k, &total, 1);
            out[r] = accumulate ? out[r] + total : total;
        }
    }

    /* Thread id's share of outs[i] (+)= weights[i] in for `count` (<= 3) weights sharing the input: their
       rows are one range split in equal contiguous parts (as minifm_ds_matvec_part's blocks) */
    static void minifm_dsq_matvec_part(const minifm_dsq_input* in, Py_ssize_t k, int count,
                                       const minifm_dsq_weight* const* weights, float* const* outs, int accumulate,
                                       int id, int threads) {
        Py_ssize_t first_row[4], total = 0, begin, end;
        for (int i = 0; i < count; i++) {
            first_row[i] = total;
            total += weights[i]->rows;
        }
        first_row[count] = total;
        minifm_ds_share(total, id, threads, &begin, &end);
        for (int i = 0; i < count; i++) {
            Py_ssize_t from = begin > first_row[i] ? begin : first_row[i];
            Py_ssize_t to = end < first_row[i + 1] ? end : first_row[i + 1];
            if (from < to) minifm_dsq_rows(in, k, weights[i], from - first_row[i], to - first_row[i], outs[i], accumulate);
        }
    }

    /* minifm_ds_layer_part with quantized products: the same steps, barriers and splits */
    static void minifm_dsq_layer_part(const minifm_dsq_layer* layer, minifm_ds_barrier* barrier, int id, int threads) {
        const minifm_ds_layer* a = &layer->shape;
        Py_ssize_t q_size = a->heads * a->head_dim, begin, end;
        Py_ssize_t widest = a->width > q_size ? a->width : q_size;
        widest = widest > a->hidden ? widest : a->hidden;
        float h[a->width];                                           /* this thread's normalised x */
        int8_t xq[widest];                                           /* this thread's rounded input */
        float dx[widest / MINIFM_QK + 1], sx[widest / MINIFM_QK + 1];
        minifm_dsq_input in;
        minifm_ds_rmsnorm(a->x, a->norm1, a->width, a->eps, h);
        minifm_dsq_prepare(h, a->width, layer->wq.q8_input | layer->wk.q8_input | layer->wv.q8_input, xq, dx, sx, &in);
        {
            const minifm_dsq_weight* weights[3] = {&layer->wq, &layer->wk, &layer->wv};
            float* outs[3] = {a->q, a->k, a->v};
            minifm_dsq_matvec_part(&in, a->width, 3, weights, outs, 0, id, threads);
        }
        minifm_ds_wait(barrier, threads);
        minifm_ds_attention_part(a, id, threads);
        minifm_ds_wait(barrier, threads);
        minifm_dsq_prepare(a->attended, q_size, layer->wo.q8_input, xq, dx, sx, &in);
        {
            const minifm_dsq_weight* weights[1] = {&layer->wo};
            minifm_dsq_matvec_part(&in, q_size, 1, weights, &a->x, 1, id, threads);
        }
        minifm_ds_wait(barrier, threads);
        minifm_ds_rmsnorm(a->x, a->norm2, a->width, a->eps, h);
        minifm_dsq_prepare(h, a->width, layer->wgate.q8_input | layer->wup.q8_input, xq, dx, sx, &in);
        minifm_ds_hidden_share(a->hidden, id, threads, &begin, &end);
        minifm_dsq_rows(&in, a->width, &layer->wgate, begin, end, a->gate, 0);
        minifm_dsq_rows(&in, a->width, &layer->wup, begin, end, a->up, 0);
        minifm_silu_mul_f(a->gate + begin, a->up + begin, a->gate + begin, end - begin);  /* as SiluMul */
        minifm_ds_wait(barrier, threads);
        minifm_dsq_prepare(a->gate, a->hidden, layer->wdown.q8_input, xq, dx, sx, &in);
        {
            const minifm_dsq_weight* weights[1] = {&layer->wdown};
            minifm_dsq_matvec_part(&in, a->hidden, 1, weights, &a->x, 1, id, threads);
        }
    }

    static void minifm_dsq_decode_layer(const minifm_dsq_layer* layer, int threads) {
        minifm_ds_barrier barrier = {0, 0, 0};
        #if MINIFM_OPENMP
        #pragma omp parallel num_threads(threads)
        minifm_dsq_layer_part(layer, &barrier, omp_get_thread_num(), omp_get_num_threads());
        #else
        (void)threads;
        minifm_dsq_layer_part(layer, &barrier, 0, 1);
        #endif
    }
    """
    int max_threads "minifm_ds_max_threads"() noexcept nogil
    void ds_matvec "minifm_ds_matvec"(const float* x, const float* weight, Py_ssize_t n, Py_ssize_t k, float* out,
                                      int accumulate, int threads) noexcept nogil
    ctypedef struct ds_layer "minifm_ds_layer":
        Py_ssize_t width, heads, kv_heads, head_dim, hidden, stride, position
        double eps
        const float* norm1
        const float* wq
        const float* wk
        const float* wv
        const float* wo
        const float* norm2
        const float* wgate
        const float* wup
        const float* wdown
        const float* cos
        const float* sin
        float* x
        float* cache_k
        float* cache_v
        float* q
        float* k
        float* v
        float* attended
        float* gate
        float* up
        float* scores
    void ds_decode_layer "minifm_ds_decode_layer"(const ds_layer* layer, int threads) noexcept nogil
    ctypedef struct dsq_weight "minifm_dsq_weight":
        const uint8_t* data
        Py_ssize_t rows, row_bytes
        int type, q8_input
    ctypedef struct dsq_layer "minifm_dsq_layer":
        ds_layer shape
        dsq_weight wq, wk, wv, wo, wgate, wup, wdown
    void dsq_decode_layer "minifm_dsq_decode_layer"(const dsq_layer* layer, int threads) noexcept nogil
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
def matvec_rows(const float[::1] x, const float[:, ::1] weight, float[::1] out, bint accumulate=False,
                int threads=0):
    """out (+)= weight @ x for x (K,), weight (N, K), out (N,), all float32 and C-contiguous; on `threads`
    threads (0: the OpenMP budget's when the weight holds at least PARALLEL_BYTES bytes, else one)."""
    cdef Py_ssize_t rows = weight.shape[0], k = weight.shape[1]
    if x.shape[0] != k or k == 0 or rows == 0:
        raise ValueError(f"weight must be (N > 0, {x.shape[0]}) with K > 0, got {tuple(weight.shape)[:2]}")
    _check_vector(out, rows, "out")
    with nogil:
        ds_matvec(&x[0], &weight[0, 0], rows, k, &out[0], accumulate, threads or _threads_for(rows * k * 4))


cdef void _describe_step(ds_layer* layer, float[::1] x, const float[::1] norm1, const float[::1] norm2,
                         float[:, :, ::1] cache_k, float[:, :, ::1] cache_v, Py_ssize_t position,
                         const float[::1] cos, const float[::1] sin, double eps, Py_ssize_t heads, Py_ssize_t hidden,
                         float[::1] scratch, int threads) except *:
    """Check what decode_layer and decode_quantized_layer share (sizes, caches, position, norms, RoPE row,
    threads, scratch; the projections are each entry point's) and fill every field of `layer` but the
    seven weights: its sizes and pointers, and the scratch cut into q, k, v, attended, gate, up, scores."""
    cdef Py_ssize_t width = x.shape[0], kv_heads = cache_k.shape[0], length = cache_k.shape[1]
    cdef Py_ssize_t head_dim = cache_k.shape[2]
    cdef Py_ssize_t q_size = heads * head_dim, kv_size = kv_heads * head_dim
    cdef Py_ssize_t need = 2 * q_size + 2 * kv_size + 2 * hidden + heads * (position + 1)
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads or head_dim % 2 or width == 0 or hidden == 0:
        raise ValueError(f"heads {heads} must be a positive multiple of the caches' kv heads {kv_heads}, "
                         f"head_dim {head_dim} even, width {width} and hidden {hidden} positive")
    if tuple(cache_v.shape)[:3] != tuple(cache_k.shape)[:3]:
        raise ValueError(f"cache_v has shape {tuple(cache_v.shape)[:3]}, cache_k {tuple(cache_k.shape)[:3]}")
    if not 0 <= position < length:
        raise ValueError(f"position must lie in [0, {length}) (the caches' length), got {position}")
    _check_vector(norm1, width, "norm1")
    _check_vector(norm2, width, "norm2")
    _check_vector(cos, head_dim // 2, "cos")
    _check_vector(sin, head_dim // 2, "sin")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = automatic), got {threads}")
    if scratch.shape[0] < need:
        raise ValueError(f"scratch needs at least {need} floats, got {scratch.shape[0]}")
    layer.width, layer.heads, layer.kv_heads, layer.head_dim = width, heads, kv_heads, head_dim
    layer.hidden, layer.stride, layer.position, layer.eps = hidden, length, position, eps
    layer.norm1, layer.norm2, layer.cos, layer.sin, layer.x = &norm1[0], &norm2[0], &cos[0], &sin[0], &x[0]
    layer.cache_k, layer.cache_v = &cache_k[0, 0, 0], &cache_v[0, 0, 0]
    layer.q = &scratch[0]
    layer.k = layer.q + q_size
    layer.v = layer.k + kv_size
    layer.attended = layer.v + kv_size
    layer.gate = layer.attended + q_size
    layer.up = layer.gate + hidden
    layer.scores = layer.up + hidden


@cython.boundscheck(False)
@cython.wraparound(False)
def decode_layer(float[::1] x, const float[::1] norm1, const float[:, ::1] wq, const float[:, ::1] wk,
                 const float[:, ::1] wv, const float[:, ::1] wo, const float[::1] norm2,
                 const float[:, ::1] wgate, const float[:, ::1] wup, const float[:, ::1] wdown,
                 float[:, :, ::1] cache_k, float[:, :, ::1] cache_v, Py_ssize_t position,
                 const float[::1] cos, const float[::1] sin, double eps, Py_ssize_t heads,
                 float[::1] scratch, int threads=0):
    """One decoding step of a pre-norm Llama block on x (E,) in place (see the module docstring).

    wq (H*D, E), wk and wv (G*D, E), wo (E, H*D), wgate and wup (F, E), wdown (E, F); norm1, norm2 (E,);
    cache_k, cache_v (G, max_length, D) with position < max_length: this token's key and value are stored
    at `position`, and attention reads positions 0..position; cos, sin (D/2,) this position's RoPE row;
    scratch at least 2 H*D + 2 G*D + 2 F + H (position + 1) floats. Everything float32. Runs on `threads`
    threads (0: the OpenMP budget's when the weights hold at least PARALLEL_BYTES bytes, else one).
    """
    cdef ds_layer layer
    cdef Py_ssize_t width = x.shape[0], hidden = wgate.shape[0]
    cdef Py_ssize_t q_size = heads * cache_k.shape[2], kv_size = cache_k.shape[0] * cache_k.shape[2]
    _describe_step(&layer, x, norm1, norm2, cache_k, cache_v, position, cos, sin, eps, heads, hidden, scratch, threads)
    _check_weight(wq, q_size, width, "wq")
    _check_weight(wk, kv_size, width, "wk")
    _check_weight(wv, kv_size, width, "wv")
    _check_weight(wo, width, q_size, "wo")
    _check_weight(wgate, hidden, width, "wgate")
    _check_weight(wup, hidden, width, "wup")
    _check_weight(wdown, width, hidden, "wdown")
    layer.wq, layer.wk, layer.wv, layer.wo = &wq[0, 0], &wk[0, 0], &wv[0, 0], &wo[0, 0]
    layer.wgate, layer.wup, layer.wdown = &wgate[0, 0], &wup[0, 0], &wdown[0, 0]
    with nogil:
        ds_decode_layer(&layer, threads or _threads_for((2 * q_size + 2 * kv_size + 3 * hidden) * width * 4))


cdef void _fill_quantized(dsq_weight* weight, object data, int ggml_type, bint q8_input, Py_ssize_t rows,
                          Py_ssize_t columns, str name) except *:
    cdef const uint8_t[:, ::1] blocks
    cdef int block_bytes = block_bytes_of(ggml_type)
    try:
        blocks = data
    except (TypeError, ValueError, BufferError) as error:
        raise ValueError(f"{name} must be a C-contiguous 2-D uint8 array of blocks ({error})") from None
    if block_bytes == 0:
        raise ValueError(f"{name}: GGML type {ggml_type} is not a block format (2 Q4_0, 3 Q4_1, 8 Q8_0)")
    if columns % QK or blocks.shape[0] != rows or blocks.shape[1] != columns // QK * block_bytes:
        raise ValueError(f"{name} must hold ({rows}, {columns}) values as {columns // QK} blocks of {block_bytes} "
                         f"bytes per row, got blocks of shape {tuple(blocks.shape)[:2]} (columns must be a "
                         f"multiple of {QK})")
    weight.data, weight.rows, weight.row_bytes = &blocks[0, 0], rows, blocks.shape[1]
    weight.type, weight.q8_input = ggml_type, q8_input


@cython.boundscheck(False)
@cython.wraparound(False)
def decode_quantized_layer(float[::1] x, const float[::1] norm1, tuple datas, tuple types, tuple q8_inputs,
                           const float[::1] norm2, float[:, :, ::1] cache_k, float[:, :, ::1] cache_v,
                           Py_ssize_t position, const float[::1] cos, const float[::1] sin, double eps,
                           Py_ssize_t heads, float[::1] scratch, int threads=0):
    """decode_layer with the seven projections stored in GGUF block formats.

    datas: the packed blocks (rows, row bytes) uint8 of wq (H*D, E), wk and wv (G*D, E), wo (E, H*D), wgate
    and wup (F, E), wdown (E, F), in that order; types their GGML types (2 Q4_0, 3 Q4_1, 8 Q8_0); q8_inputs
    seven flags: round that product's input to int8 per block of 32 first (quantize_input). The other
    arguments as decode_layer's (F is wgate's row count).
    """
    cdef dsq_layer layer
    cdef ds_layer* shape = &layer.shape
    cdef Py_ssize_t width = x.shape[0], hidden, q_size, kv_size, packed = 0
    cdef dsq_weight* slots[7]
    cdef int i
    if len(datas) != 7 or len(types) != 7 or len(q8_inputs) != 7:
        raise ValueError(f"datas, types and q8_inputs must hold 7 entries (q, k, v, o, gate, up, down), got "
                         f"{len(datas)}, {len(types)} and {len(q8_inputs)}")
    hidden = datas[4].shape[0]
    q_size, kv_size = heads * cache_k.shape[2], cache_k.shape[0] * cache_k.shape[2]
    _describe_step(shape, x, norm1, norm2, cache_k, cache_v, position, cos, sin, eps, heads, hidden, scratch, threads)
    slots[0], slots[1], slots[2], slots[3] = &layer.wq, &layer.wk, &layer.wv, &layer.wo
    slots[4], slots[5], slots[6] = &layer.wgate, &layer.wup, &layer.wdown
    rows = (q_size, kv_size, kv_size, width, hidden, hidden, width)
    columns = (width, width, width, q_size, width, width, hidden)
    names = ("wq", "wk", "wv", "wo", "wgate", "wup", "wdown")
    for i in range(7):
        _fill_quantized(slots[i], datas[i], types[i], q8_inputs[i], rows[i], columns[i], names[i])
        packed += slots[i].rows * slots[i].row_bytes
    shape.wq = shape.wk = shape.wv = shape.wo = shape.wgate = shape.wup = shape.wdown = NULL
    with nogil:
        dsq_decode_layer(&layer, threads or _threads_for(packed))
