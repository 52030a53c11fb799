# cython: language_level=3
"""Cython twin of minifm/kernels/attention.py (references: attention_forward_reference,
attention_backward_reference): flash-style scaled dot-product attention.

Layout: q (B, H, Tq, D), k and v (B, Hkv, Tk, D); query head h reads kv head h // (H // Hkv).
Every array needs only its last axis contiguous: consecutive rows (T) of a head are `row stride`
elements apart and consecutive heads `head stride` apart, so the usual transposed views of
(B, T, H, D) projections are read and written in place (row stride H * D), with no copies. Nothing
of size Tq x Tk is ever allocated: each thread owns a few tiles of block_q x block_k scores and
walks the key axis block by block.

Tile sizes (`_tile_sizes`) follow the sequence lengths: 64 query rows x 128 keys, and once both
lengths reach LONG_SEQUENCE 256 x 256 forward, 128 x 256 backward (which holds two tiles). Each
tile product is one BLAS call, and OpenBLAS packs both operands on every call: measured on one
Zen 3 core (AVX2), a 64 x 128 x 64 sgemm ran at ~40 GFLOP/s, a 128 x 256 x 64 one at ~65, and at
(1, 12, 2048, 64) on one thread the long-sequence tiles took the forward from ~172 to ~135 ms and
the backward from ~378 to ~328 ms; long sequences have tiles enough for every thread. The tiles
depend on the shapes only, never on the thread count (BLAS's bits depend on the product's size).

Forward, per (batch, head, block of block_q query rows) work item (prange, the blocks that see the
most keys first, so that two threads finish together even with 9 heads):
    running max m = -inf, running sum l = 0, accumulator acc = 0            (block_q, D)
    for each key block (under the causal rule, only up to the block's last query):
        S = scale * Q K^T (BLAS gemm), masked entries -inf
        m_new = max(m, rowmax S);  P = exp(S - m_new);  alpha = exp(m - m_new)
        l = alpha * l + rowsum P;  acc = alpha * acc + P V (BLAS gemm)
    out = acc / l,  lse = m + log l      (a row with no allowed key: out 0, lse -inf)
A query block of at most FEW_QUERY_ROWS rows (KV-cached decoding: one row per head) computes its
two products with plain loops (a dot product per score, a scaled row added per key) instead of BLAS:
OpenBLAS packs its operands into buffers on every call, which cost ~8 us per tile product there,
more than the product itself (a decoding step of a 9-head model took ~0.4 ms in attention).

Backward (FlashAttention-2 order), per (batch, kv head) pair (prange; the query heads of a group
are handled by the same thread, so dk/dv need no atomics), per key block of block_k keys, per
query block of block_q rows:
    P = exp(scale * Q K^T - lse)  (recomputed, masked entries 0)
    dV += P^T dO;  dP = dO V^T;  dS = P * (dP - rowsum(dO * O))
    dQ += scale * dS K;  dK += scale * dS^T Q        (scale as the products' alpha)
Under the causal rule a key block's query blocks start at its first query that sees one of its
keys (so the first one sits on the diagonal), and each tile is cut after the last key its last
query sees: no tile lies entirely above the diagonal, and none extends far past it.
"""
from cython.parallel cimport parallel, prange
from libc.math cimport log, INFINITY
from libc.stdint cimport uint8_t
from libc.stdlib cimport malloc, free

cimport _common as vec
from _blas cimport gemm
from _common cimport real

# Serial cost per (score, head-dimension) pair in nanoseconds, for the threading decision: measured
# ~0.18 ns forward and ~0.3 ns backward on a 2-core machine (BLAS tiles + the exp pass; see
# docs/performance.md).
cdef double NS_PER_SCORE_DIM = 0.2

cdef enum:
    SHORT_BLOCK_Q = 64    # query rows per tile, short sequences
    SHORT_BLOCK_K = 128   # keys per tile, short sequences
    LONG_SEQUENCE = 512   # from this many queries and keys on, the long-sequence tiles:
    LONG_FORWARD_BLOCK_Q = 256   # query rows per forward tile
    LONG_BACKWARD_BLOCK_Q = 128  # query rows per backward tile (it holds two tiles, P and dS)
    LONG_BLOCK_K = 256    # keys per tile, both directions
    FEW_QUERY_ROWS = 4  # query blocks up to this many rows multiply with loops, not BLAS (see above)


# Python-visible, so the wrapper knows when a forward calls no BLAS (minifm/kernels/attention.py)
few_query_rows = FEW_QUERY_ROWS


cdef inline void _tile_sizes(Py_ssize_t tq, Py_ssize_t tk, bint backward, Py_ssize_t requested_q,
                             Py_ssize_t requested_k, Py_ssize_t* block_q, Py_ssize_t* block_k) noexcept nogil:
    """Query rows and keys per tile: the requested sizes where positive (tests), else chosen by the
    sequence lengths and the direction (see the module docstring)."""
    if tq >= LONG_SEQUENCE and tk >= LONG_SEQUENCE:
        block_q[0] = LONG_BACKWARD_BLOCK_Q if backward else LONG_FORWARD_BLOCK_Q
        block_k[0] = LONG_BLOCK_K
    else:
        block_q[0] = SHORT_BLOCK_Q
        block_k[0] = SHORT_BLOCK_K
    if requested_q > 0:
        block_q[0] = requested_q
    if requested_k > 0:
        block_k[0] = requested_k


cdef inline void _scores_by_loops(const real* q, Py_ssize_t q_row_stride, const real* k, Py_ssize_t k_row_stride,
                                  Py_ssize_t rows, Py_ssize_t width, Py_ssize_t d, real scale,
                                  real* scores, Py_ssize_t scores_row_stride) noexcept nogil:
    """scores[r, c] = scale * (q row r . k row c) for a tile of `rows` queries and `width` keys, the
    product that _gemm computes for larger tiles; keys four at a time (_common.pxd's dot4), the last
    width % 4 one by one."""
    cdef Py_ssize_t r, c
    cdef const real* q_row
    cdef real* s_row
    for r in range(rows):
        q_row = q + r * q_row_stride
        s_row = scores + r * scores_row_stride
        c = 0
        while c + 4 <= width:
            vec.dot4(q_row, k + c * k_row_stride, k_row_stride, d, s_row + c)
            c = c + 4
        while c < width:
            s_row[c] = vec.dot1(q_row, k + c * k_row_stride, d)
            c = c + 1
        vec.scale(s_row, width, scale)


cdef inline void _add_weighted_values(const real* probs, Py_ssize_t probs_row_stride, const real* v,
                                      Py_ssize_t v_row_stride, Py_ssize_t rows, Py_ssize_t width, Py_ssize_t d,
                                      real* acc) noexcept nogil:
    """acc[r, :] += sum_c probs[r, c] * v row c for a tile of `rows` queries and `width` keys
    (row stride of acc: d), the product that _gemm computes for larger tiles; four value rows per
    pass over the accumulator row, the last width % 4 one by one."""
    cdef Py_ssize_t r, c, j
    cdef real w0, w1, w2, w3
    cdef const real* p_row
    cdef const real* v0
    cdef const real* v1
    cdef const real* v2
    cdef const real* v3
    cdef real* acc_row
    for r in range(rows):
        acc_row = acc + r * d
        p_row = probs + r * probs_row_stride
        c = 0
        while c + 4 <= width:
            w0 = p_row[c]
            w1 = p_row[c + 1]
            w2 = p_row[c + 2]
            w3 = p_row[c + 3]
            v0 = v + c * v_row_stride
            v1 = v0 + v_row_stride
            v2 = v1 + v_row_stride
            v3 = v2 + v_row_stride
            for j in range(d):
                acc_row[j] += w0 * v0[j] + w1 * v1[j] + w2 * v2[j] + w3 * v3[j]
            c = c + 4
        while c < width:
            w0 = p_row[c]
            v0 = v + c * v_row_stride
            for j in range(d):
                acc_row[j] += w0 * v0[j]
            c = c + 1


cdef inline Py_ssize_t _allowed_prefix(Py_ssize_t query_pos, Py_ssize_t key_start, Py_ssize_t width,
                                       bint causal) noexcept nogil:
    """How many keys key_start .. key_start + width - 1 the query at absolute position query_pos may see
    under the causal rule (key j allowed iff j <= query_pos)."""
    cdef Py_ssize_t count
    if not causal:
        return width
    count = query_pos - key_start + 1
    if count < 0:
        return 0
    if count > width:
        return width
    return count


cdef inline void _mask_row(real* s_row, Py_ssize_t allowed, Py_ssize_t width,
                           const uint8_t* key_mask) noexcept nogil:
    """Set the entries of a score row that may not be attended to -inf."""
    cdef Py_ssize_t c
    for c in range(allowed, width):
        s_row[c] = -INFINITY
    if key_mask != NULL:
        for c in range(allowed):
            if not key_mask[c]:
                s_row[c] = -INFINITY


cdef void _forward_block(const real* q, const real* k, const real* v, real* out, real* lse,
                         Py_ssize_t q_row_stride, Py_ssize_t k_row_stride, Py_ssize_t v_row_stride,
                         Py_ssize_t out_row_stride,
                         Py_ssize_t rows, Py_ssize_t tk, Py_ssize_t d, real scale, bint causal,
                         Py_ssize_t q_offset, const uint8_t* key_mask, Py_ssize_t block_k,
                         real* scores, real* acc, double* run_max, double* run_sum) noexcept nogil:
    """out and lse of one block of `rows` query rows (at most block_q) of one head; q, out and lse
    point at its first row, q_offset is that row's absolute position. scores is (block_q, block_k)."""
    cdef Py_ssize_t key_block, j0, r, c, width, key_end, allowed
    cdef double tile_max, new_max, alpha, total
    cdef real* s_row
    for r in range(rows):
        run_max[r] = -INFINITY
        run_sum[r] = 0.0
    for r in range(rows * d):
        acc[r] = 0
    key_end = tk
    if causal:
        key_end = min(tk, rows - 1 + q_offset + 1)  # the block's last query sees no key past this
    for key_block in range((key_end + block_k - 1) // block_k):
        j0 = key_block * block_k
        width = min(block_k, key_end - j0)
        if rows <= FEW_QUERY_ROWS:
            _scores_by_loops(q, q_row_stride, k + j0 * k_row_stride, k_row_stride, rows, width, d, scale,
                             scores, block_k)
        else:
            gemm(c'N', c'T', <int>rows, <int>width, <int>d, scale, q, <int>q_row_stride,
                  k + j0 * k_row_stride, <int>k_row_stride, 0.0, scores, <int>block_k)
        for r in range(rows):
            s_row = scores + r * block_k
            allowed = _allowed_prefix(r + q_offset, j0, width, causal)
            _mask_row(s_row, allowed, width, key_mask + j0 if key_mask != NULL else NULL)
            tile_max = vec.row_max(s_row, allowed)
            new_max = tile_max if tile_max > run_max[r] else run_max[r]
            if new_max == -INFINITY:
                for c in range(width):
                    s_row[c] = 0
                continue
            total = vec.exp_store_sum(s_row, s_row, width, 1, <real>new_max)
            alpha = vec.fast_exp(run_max[r] - new_max)
            if alpha != 1.0:
                vec.scale(acc + r * d, d, <real>alpha)
            run_sum[r] = run_sum[r] * alpha + total
            run_max[r] = new_max
        if rows <= FEW_QUERY_ROWS:
            _add_weighted_values(scores, block_k, v + j0 * v_row_stride, v_row_stride, rows, width, d, acc)
        else:
            gemm(c'N', c'N', <int>rows, <int>d, <int>width, 1.0, scores, <int>block_k,
                  v + j0 * v_row_stride, <int>v_row_stride, 1.0, acc, <int>d)
    for r in range(rows):
        if run_sum[r] > 0:
            for c in range(d):
                out[r * out_row_stride + c] = <real>(acc[r * d + c] / run_sum[r])
            lse[r] = <real>(run_max[r] + log(run_sum[r]))
        else:
            for c in range(d):
                out[r * out_row_stride + c] = 0
            lse[r] = -INFINITY


cdef struct Layout:
    # element distances in one (B, heads, T, D) array whose last axis is contiguous
    Py_ssize_t row   # between consecutive positions (T) of a head
    Py_ssize_t head  # between consecutive heads


cdef void _backward_group(const real* q, const real* k, const real* v, const real* out, const real* lse,
                          const real* dout, real* dq, real* dk, real* dv,
                          Layout q_layout, Layout k_layout, Layout v_layout, Layout out_layout,
                          Layout dout_layout, Layout dq_layout, Layout dk_layout, Layout dv_layout,
                          Py_ssize_t group, Py_ssize_t tq, Py_ssize_t tk, Py_ssize_t d, real scale,
                          bint causal, Py_ssize_t q_offset, const uint8_t* key_mask,
                          Py_ssize_t block_q, Py_ssize_t block_k,
                          real* probs, real* dprobs, double* delta) noexcept nogil:
    """Gradients for one kv head and the `group` query heads that read it.
    q, out, dout, dq point at the first query head of the group (the others follow at their head strides);
    lse is (group, tq) contiguous; probs and dprobs are (block_q, block_k)."""
    cdef Py_ssize_t gh, key_block, i0, j0, r, c, rows, width, cols, first_query, allowed
    cdef const real* qh
    cdef const real* doh
    cdef const real* oh
    cdef const real* lseh
    cdef real* dqh
    cdef real* p_row
    cdef real* dp_row
    cdef double row_lse
    for gh in range(group):
        oh = out + gh * out_layout.head
        doh = dout + gh * dout_layout.head
        for r in range(tq):
            delta[gh * tq + r] = vec.dot(doh + r * dout_layout.row, oh + r * out_layout.row, d)
    for key_block in range((tk + block_k - 1) // block_k):
        j0 = key_block * block_k
        width = min(block_k, tk - j0)
        first_query = 0
        if causal:  # queries before the key block's first key (absolute position j0) see none of it
            first_query = max(<Py_ssize_t>0, j0 - q_offset)
        for gh in range(group):
            qh = q + gh * q_layout.head
            doh = dout + gh * dout_layout.head
            lseh = lse + gh * tq
            dqh = dq + gh * dq_layout.head
            i0 = first_query
            while i0 < tq:
                rows = min(block_q, tq - i0)
                cols = width
                if causal:  # keys after the block's last query are masked in every row: leave them out
                    cols = min(width, i0 + rows + q_offset - j0)
                gemm(c'N', c'T', <int>rows, <int>cols, <int>d, scale,
                      qh + i0 * q_layout.row, <int>q_layout.row,
                      k + j0 * k_layout.row, <int>k_layout.row, 0.0, probs, <int>block_k)
                for r in range(rows):
                    p_row = probs + r * block_k
                    row_lse = lseh[i0 + r]
                    if row_lse == -INFINITY:  # a fully masked row has no probabilities
                        for c in range(cols):
                            p_row[c] = 0
                        continue
                    allowed = _allowed_prefix(i0 + r + q_offset, j0, cols, causal)
                    _mask_row(p_row, allowed, cols, key_mask + j0 if key_mask != NULL else NULL)
                    vec.exp_affine(p_row, p_row, cols, <real>row_lse, 1, 0)
                # dV_j += P^T dO_i
                gemm(c'T', c'N', <int>cols, <int>d, <int>rows, 1.0, probs, <int>block_k,
                      doh + i0 * dout_layout.row, <int>dout_layout.row,
                      1.0, dv + j0 * dv_layout.row, <int>dv_layout.row)
                # dP = dO_i V_j^T
                gemm(c'N', c'T', <int>rows, <int>cols, <int>d, 1.0,
                      doh + i0 * dout_layout.row, <int>dout_layout.row,
                      v + j0 * v_layout.row, <int>v_layout.row, 0.0, dprobs, <int>block_k)
                # dS / scale = P * (dP - rowsum(dO * O))
                for r in range(rows):
                    p_row = probs + r * block_k
                    dp_row = dprobs + r * block_k
                    vec.mul_sub(p_row, dp_row, dp_row, cols, <real>delta[gh * tq + i0 + r])
                # dQ_i += scale * (dS / scale) K_j ;  dK_j += scale * (dS / scale)^T Q_i
                gemm(c'N', c'N', <int>rows, <int>d, <int>cols, scale, dprobs, <int>block_k,
                      k + j0 * k_layout.row, <int>k_layout.row,
                      1.0, dqh + i0 * dq_layout.row, <int>dq_layout.row)
                gemm(c'T', c'N', <int>cols, <int>d, <int>rows, scale, dprobs, <int>block_k,
                      qh + i0 * q_layout.row, <int>q_layout.row,
                      1.0, dk + j0 * dk_layout.row, <int>dk_layout.row)
                i0 = i0 + rows


cdef Layout _layout(Py_ssize_t* strides, Py_ssize_t* shape, Py_ssize_t itemsize, str name) except *:
    """Row and head strides in elements of a (B, heads, T, D) memoryview whose last axis is contiguous.

    A length-1 axis is never stepped along, so its stride (which NumPy leaves arbitrary) is replaced by
    a valid one: BLAS needs a row stride of at least D.
    """
    cdef Layout layout
    if shape[3] > 1 and strides[3] != itemsize:
        raise ValueError(f"{name} must have its last axis contiguous, got a stride of {strides[3]} bytes")
    layout.row = strides[2] // itemsize if shape[2] > 1 else shape[3]
    layout.head = strides[1] // itemsize if shape[1] > 1 else shape[2] * layout.row
    if layout.row < shape[3] or layout.head < 0 or strides[2] % itemsize or strides[1] % itemsize:
        raise ValueError(f"{name} rows must be at least D = {shape[3]} elements apart, got row and head "
                         f"strides of {strides[2]} and {strides[1]} bytes")
    return layout


def attention_forward(const real[:, :, :, :] q, const real[:, :, :, :] k, const real[:, :, :, :] v,
                      real[:, :, :, :] out, real[:, :, ::1] lse, double scale, bint causal,
                      Py_ssize_t q_offset, const uint8_t[:, ::1] key_mask=None,
                      Py_ssize_t block_q=0, Py_ssize_t block_k=0):
    """Fill out (B, H, Tq, D) and lse (B, H, Tq); shapes are validated by the Python wrapper.

    q, k, v and out need only their last axis contiguous (see the module docstring). block_q and
    block_k fix the tile sizes when positive (tests compare several), else _tile_sizes chooses."""
    cdef Py_ssize_t batch = q.shape[0], heads = q.shape[1], tq = q.shape[2], d = q.shape[3]
    cdef Py_ssize_t kv_heads = k.shape[1], tk = k.shape[2], group = heads // kv_heads
    cdef Py_ssize_t query_blocks, items, item, pair, block, b, h, g, i0, rows
    cdef int threads, failed = 0
    cdef bint has_mask = key_mask is not None
    cdef const uint8_t* mask_row
    cdef real* scores = NULL
    cdef real* acc = NULL
    cdef double* run_max = NULL
    cdef double* run_sum = NULL
    cdef Layout q_layout, k_layout, v_layout, out_layout
    if batch * heads * tq * d == 0:
        return
    _tile_sizes(tq, tk, False, block_q, block_k, &block_q, &block_k)
    query_blocks = (tq + block_q - 1) // block_q
    items = batch * heads * query_blocks
    q_layout = _layout(q.strides, q.shape, sizeof(real), "q")
    k_layout = _layout(k.strides, k.shape, sizeof(real), "k")
    v_layout = _layout(v.strides, v.shape, sizeof(real), "v")
    out_layout = _layout(out.strides, out.shape, sizeof(real), "out")
    threads = vec.threads_for(items, NS_PER_SCORE_DIM * batch * heads * tq * tk * d)
    with nogil, parallel(num_threads=threads):
        # this thread's tiles
        scores = <real*>malloc(block_q * block_k * sizeof(real))
        acc = <real*>malloc(block_q * d * sizeof(real))
        run_max = <double*>malloc(block_q * sizeof(double))
        run_sum = <double*>malloc(block_q * sizeof(double))
        for item in prange(items, schedule="dynamic"):
            if scores == NULL or acc == NULL or run_max == NULL or run_sum == NULL:
                failed += 1  # a reduction: any thread without its tiles fails the call
                continue
            block = query_blocks - 1 - item // (batch * heads)  # last query blocks (most keys) first
            pair = item % (batch * heads)
            b = pair // heads
            h = pair % heads
            g = h // group
            i0 = block * block_q
            rows = min(block_q, tq - i0)
            mask_row = &key_mask[b, 0] if has_mask and tk > 0 else NULL
            _forward_block(&q[b, h, i0, 0], &k[b, g, 0, 0] if tk > 0 else NULL,
                           &v[b, g, 0, 0] if tk > 0 else NULL, &out[b, h, i0, 0], &lse[b, h, i0],
                           q_layout.row, k_layout.row, v_layout.row, out_layout.row,
                           rows, tk, d, <real>scale, causal, q_offset + i0, mask_row, block_k,
                           scores, acc, run_max, run_sum)
        free(scores)
        free(acc)
        free(run_max)
        free(run_sum)
    if failed:
        raise MemoryError(f"attention_forward: no memory for a {block_q} x {block_k} tile")


def attention_backward(const real[:, :, :, :] q, const real[:, :, :, :] k, const real[:, :, :, :] v,
                       const real[:, :, :, :] out, const real[:, :, ::1] lse, const real[:, :, :, :] dout,
                       real[:, :, :, :] dq, real[:, :, :, :] dk, real[:, :, :, :] dv,
                       double scale, bint causal, Py_ssize_t q_offset, const uint8_t[:, ::1] key_mask=None,
                       Py_ssize_t block_q=0, Py_ssize_t block_k=0):
    """Accumulate into dq, dk, dv (the wrapper passes them zero-filled); every array except lse
    needs only its last axis contiguous. block_q and block_k as in attention_forward."""
    cdef Py_ssize_t batch = q.shape[0], heads = q.shape[1], tq = q.shape[2], d = q.shape[3]
    cdef Py_ssize_t kv_heads = k.shape[1], tk = k.shape[2], group = heads // kv_heads
    cdef Py_ssize_t pair, b, g
    cdef int threads, failed = 0
    cdef bint has_mask = key_mask is not None
    cdef const uint8_t* mask_row
    cdef real* probs = NULL
    cdef real* dprobs = NULL
    cdef double* delta = NULL
    cdef Layout q_layout, k_layout, v_layout, out_layout, dout_layout, dq_layout, dk_layout, dv_layout
    if batch * heads * tq * d * tk == 0:
        return
    _tile_sizes(tq, tk, True, block_q, block_k, &block_q, &block_k)
    q_layout = _layout(q.strides, q.shape, sizeof(real), "q")
    k_layout = _layout(k.strides, k.shape, sizeof(real), "k")
    v_layout = _layout(v.strides, v.shape, sizeof(real), "v")
    out_layout = _layout(out.strides, out.shape, sizeof(real), "out")
    dout_layout = _layout(dout.strides, dout.shape, sizeof(real), "dout")
    dq_layout = _layout(dq.strides, dq.shape, sizeof(real), "dq")
    dk_layout = _layout(dk.strides, dk.shape, sizeof(real), "dk")
    dv_layout = _layout(dv.strides, dv.shape, sizeof(real), "dv")
    threads = vec.threads_for(batch * kv_heads, NS_PER_SCORE_DIM * batch * heads * tq * tk * d)
    with nogil, parallel(num_threads=threads):
        # this thread's tiles and rowsum(dO * O) of the group's query rows
        probs = <real*>malloc(block_q * block_k * sizeof(real))
        dprobs = <real*>malloc(block_q * block_k * sizeof(real))
        delta = <double*>malloc(group * tq * sizeof(double))
        for pair in prange(batch * kv_heads, schedule="dynamic"):
            if probs == NULL or dprobs == NULL or delta == NULL:
                failed += 1  # a reduction: any thread without its tiles fails the call
                continue
            b = pair // kv_heads
            g = pair % kv_heads
            mask_row = &key_mask[b, 0] if has_mask else NULL
            _backward_group(&q[b, g * group, 0, 0], &k[b, g, 0, 0], &v[b, g, 0, 0],
                            &out[b, g * group, 0, 0], &lse[b, g * group, 0], &dout[b, g * group, 0, 0],
                            &dq[b, g * group, 0, 0], &dk[b, g, 0, 0], &dv[b, g, 0, 0],
                            q_layout, k_layout, v_layout, out_layout, dout_layout, dq_layout, dk_layout, dv_layout,
                            group, tq, tk, d, <real>scale, causal, q_offset, mask_row, block_q, block_k,
                            probs, dprobs, delta)
        free(probs)
        free(dprobs)
        free(delta)
    if failed:
        raise MemoryError(f"attention_backward: no memory for {block_q} x {block_k} tiles")
