# cython: language_level=3
"""Cython twin of minifm/kernels/gpt2_step.py (reference: gpt2_layer_reference).

One KV-cached decoding step of a GPT-2-style pre-norm block (LayerNorm, learned positions, so no
rotation; multi-head causal attention; GELU MLP; optional biases) for a batch of B <= 16 sequences
with one new token each, in one call: what TransformerBlock's no-grad path computes in about ten
kernel calls and a few hundred Python operations per layer, which at a small model's sizes cost more
than the arithmetic.

    h = LayerNorm1(x);  q, k, v = h Wq^T + bq, h Wk^T + bk, h Wv^T + bv     (B, H*D) each
    keys[b, :, position], values[b, :, position] = k, v                      (the cache, written here)
    a[b, head] = softmax(q . keys[b, head, :position+1] / sqrt(D)) values[b, head, :position+1]
    x += a Wo^T + bo;  x += GELU(LayerNorm2(x) Wfc^T + bfc) Wproj^T + bproj

The products are the fewrows kernel's (csrc/_fewrows.h: a weight row loaded once per group of up to
four inputs), rows split across the OpenMP threads; attention runs one (sequence, head) pair per
work item; LayerNorm accumulates its mean and variance in double; GELU is exact (libm's float erff) or
GPT-2's tanh form (in double). The numbers differ from the general path's by float32 rounding (other summation
orders), as the Llama step's (csrc/decode_step.pyx) do.
"""
from cython.parallel cimport prange
from libc.math cimport erff, exp, sqrt, tanh
from libc.stdlib cimport free, malloc

cdef enum:
    ROWS_PER_BLOCK = 8  # weight rows per unit of work handed to a thread

cdef extern from "_fewrows.h":
    void fewrows_rows "minifm_fewrows_rows"(const float* x, Py_ssize_t batch, Py_ssize_t n, const float* w,
                                             Py_ssize_t first, Py_ssize_t last, float* out,
                                             Py_ssize_t n_out) noexcept nogil


cdef void _products(const float* x, Py_ssize_t batch, Py_ssize_t width, const float* w, Py_ssize_t rows,
                    float* out, int threads) noexcept nogil:
    """out (batch, rows) = x (batch, width) @ w (rows, width)^T, rows split across threads."""
    cdef Py_ssize_t block, first, blocks = (rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for block in prange(blocks, schedule="static", num_threads=threads):
        first = block * ROWS_PER_BLOCK
        fewrows_rows(x, batch, width, w, first, min(first + ROWS_PER_BLOCK, rows), out, rows)


cdef void _products3(const float* x, Py_ssize_t batch, Py_ssize_t width, const float* w0, const float* w1,
                     const float* w2, float* out0, float* out1, float* out2, int threads) noexcept nogil:
    """Three (width x width) products of the same x in one parallel region (q, k and v)."""
    cdef Py_ssize_t item, block, first, which, blocks = (width + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    cdef const float* w
    cdef float* out
    for item in prange(3 * blocks, schedule="static", num_threads=threads):
        which = item // blocks
        block = item % blocks
        first = block * ROWS_PER_BLOCK
        w = w0 if which == 0 else (w1 if which == 1 else w2)
        out = out0 if which == 0 else (out1 if which == 1 else out2)
        fewrows_rows(x, batch, width, w, first, min(first + ROWS_PER_BLOCK, width), out, width)


cdef void _layer_norm(const float* x, Py_ssize_t batch, Py_ssize_t width, const float* weight, const float* bias,
                      double eps, float* out) noexcept nogil:
    cdef Py_ssize_t b, j
    cdef double mean, var, d, inv
    for b in range(batch):
        mean = 0.0
        for j in range(width):
            mean += x[b * width + j]
        mean /= width
        var = 0.0
        for j in range(width):
            d = x[b * width + j] - mean
            var += d * d
        inv = 1.0 / sqrt(var / width + eps)
        for j in range(width):
            out[b * width + j] = <float>((x[b * width + j] - mean) * inv) * weight[j] + \
                (bias[j] if bias != NULL else 0.0)


cdef void _attention(const float* q, const float* keys, const float* values, Py_ssize_t batch, Py_ssize_t heads,
                     Py_ssize_t head_dim, Py_ssize_t max_length, Py_ssize_t length, float* out,
                     int threads) noexcept nogil:
    """out[b, h*D:(h+1)*D] = softmax(q_bh . keys[b, h, :length] / sqrt(D)) values[b, h, :length]: the scores
    are one few-rows product (the keys are the rows), the softmax in double, the weighted sum of the values
    a loop over keys with the head's D outputs as the vectorised inner loop."""
    cdef Py_ssize_t pair, b, h, t, j
    cdef const float* qv
    cdef const float* kv
    cdef const float* vv
    cdef float* o
    cdef float* scores
    cdef float weight
    cdef double scale = 1.0 / sqrt(<double>head_dim), top, total
    for pair in prange(batch * heads, schedule="static", num_threads=threads):
        b = pair // heads
        h = pair % heads
        qv = q + b * heads * head_dim + h * head_dim
        kv = keys + (b * heads + h) * max_length * head_dim
        vv = values + (b * heads + h) * max_length * head_dim
        o = out + b * heads * head_dim + h * head_dim
        scores = <float*>malloc(length * sizeof(float))
        fewrows_rows(qv, 1, head_dim, kv, 0, length, scores, length)  # q . k_t for every cached key
        top = -1e300
        for t in range(length):
            if scores[t] * scale > top:
                top = scores[t] * scale
        total = 0.0
        for t in range(length):
            scores[t] = <float>exp(scores[t] * scale - top)  # the unnormalised probability, kept in float
            total = total + scores[t]
        for j in range(head_dim):
            o[j] = 0.0
        for t in range(length):
            weight = <float>(scores[t] / total)
            for j in range(head_dim):
                o[j] = o[j] + weight * vv[t * head_dim + j]
        free(scores)


cdef inline const float* _pointer(object array):
    cdef const float[::1] view
    if array is None:
        return NULL
    view = array
    return &view[0]


def gpt2_layer(float[:, ::1] x, tuple weights, float[:, :, :, ::1] keys, float[:, :, :, ::1] values,
               Py_ssize_t position, int threads):
    """The block's step (module docstring) on x (B, d), updated in place; writes keys/values (B, H, L, D)
    at `position`. weights: (ln1_w, ln1_b, ln1_eps, wq, bq, wk, bk, wv, bv, wo, bo, ln2_w, ln2_b, ln2_eps,
    wfc, bfc, wproj, bproj, tanh_gelu); biases may be None; float32 C-contiguous arrays."""
    cdef Py_ssize_t batch = x.shape[0], width = x.shape[1], heads = keys.shape[1], head_dim = keys.shape[3]
    cdef Py_ssize_t max_length = keys.shape[2], hidden, b, j, h
    cdef const float[:, ::1] wq, wk, wv, wo, wfc, wproj
    cdef const float[::1] ln1_w, ln2_w
    cdef double eps1, eps2, g
    cdef bint tanh_gelu
    ln1_w, ln1_b, eps1, wq, bq, wk, bk, wv, bv, wo, bo, ln2_w, ln2_b, eps2, wfc, bfc, wproj, bproj, tanh_gelu = weights
    hidden = wfc.shape[0]
    if heads * head_dim != width or wq.shape[0] != width or wk.shape[0] != width or wv.shape[0] != width \
            or wo.shape[0] != width or wo.shape[1] != width or wfc.shape[1] != width or wproj.shape[0] != width \
            or wproj.shape[1] != hidden or ln1_w.shape[0] != width or ln2_w.shape[0] != width:
        raise ValueError(f"gpt2_layer: weights do not fit x {tuple(x.shape)[:2]} and the cache {tuple(keys.shape)[:4]}")
    if values.shape[0] != keys.shape[0] or values.shape[1] != heads or values.shape[2] != max_length \
            or values.shape[3] != head_dim or keys.shape[0] != batch:
        raise ValueError(f"gpt2_layer: keys {tuple(keys.shape)[:4]} / values {tuple(values.shape)[:4]} do not fit x")
    if not 0 <= position < max_length:
        raise ValueError(f"gpt2_layer: position {position} outside the cache's {max_length} slots")
    cdef const float* p_ln1_b = _pointer(ln1_b)
    cdef const float* p_ln2_b = _pointer(ln2_b)
    cdef const float* p_bq = _pointer(bq)
    cdef const float* p_bk = _pointer(bk)
    cdef const float* p_bv = _pointer(bv)
    cdef const float* p_bo = _pointer(bo)
    cdef const float* p_bfc = _pointer(bfc)
    cdef const float* p_bproj = _pointer(bproj)
    cdef float* scratch = <float*>malloc((5 * batch * width + batch * hidden) * sizeof(float))
    if scratch == NULL:
        raise MemoryError()
    cdef float* hbuf = scratch
    cdef float* qbuf = scratch + batch * width
    cdef float* kbuf = scratch + 2 * batch * width
    cdef float* vbuf = scratch + 3 * batch * width
    cdef float* abuf = scratch + 4 * batch * width
    cdef float* ubuf = scratch + 5 * batch * width
    cdef float* xp = &x[0, 0]
    cdef float* key_slot
    cdef float* value_slot
    try:
        with nogil:
            _layer_norm(xp, batch, width, &ln1_w[0], p_ln1_b, eps1, hbuf)
            _products3(hbuf, batch, width, &wq[0, 0], &wk[0, 0], &wv[0, 0], qbuf, kbuf, vbuf, threads)
            for b in range(batch):
                for j in range(width):
                    if p_bq != NULL:
                        qbuf[b * width + j] += p_bq[j]
                    if p_bk != NULL:
                        kbuf[b * width + j] += p_bk[j]
                    if p_bv != NULL:
                        vbuf[b * width + j] += p_bv[j]
                for h in range(heads):
                    key_slot = &keys[b, h, position, 0]
                    value_slot = &values[b, h, position, 0]
                    for j in range(head_dim):
                        key_slot[j] = kbuf[b * width + h * head_dim + j]
                        value_slot[j] = vbuf[b * width + h * head_dim + j]
            _attention(qbuf, &keys[0, 0, 0, 0], &values[0, 0, 0, 0], batch, heads, head_dim, max_length,
                       position + 1, abuf, threads)
            _products(abuf, batch, width, &wo[0, 0], width, hbuf, threads)
            for b in range(batch):
                for j in range(width):
                    xp[b * width + j] += hbuf[b * width + j] + (p_bo[j] if p_bo != NULL else 0.0)
            _layer_norm(xp, batch, width, &ln2_w[0], p_ln2_b, eps2, hbuf)
            _products(hbuf, batch, width, &wfc[0, 0], hidden, ubuf, threads)
            for b in range(batch):
                for j in range(hidden):
                    g = ubuf[b * hidden + j] + (p_bfc[j] if p_bfc != NULL else 0.0)
                    if tanh_gelu:
                        ubuf[b * hidden + j] = <float>(0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))))
                    else:  # erff: libm's float erf, about twice as fast as the double one, within a float32 ulp or two
                        ubuf[b * hidden + j] = <float>g * 0.5 * (1.0 + erff(<float>g * <float>0.7071067811865476))
            _products(ubuf, batch, hidden, &wproj[0, 0], width, hbuf, threads)
            for b in range(batch):
                for j in range(width):
                    xp[b * width + j] += hbuf[b * width + j] + (p_bproj[j] if p_bproj != NULL else 0.0)
    finally:
        free(scratch)
