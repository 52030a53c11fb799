# cython: language_level=3
"""Cython twin of minifm/kernels/sampling.py (references: filter_logits_reference,
sample_from_uniforms_reference): the top-k / top-p / min-p / typical-p filters of Hugging Face
transformers' logits warpers, and the inverse-CDF categorical draw.

Rows are independent and split across OpenMP threads (prange). Instead of sorting the vocabulary,
each filter uses partial selection (O(V) on average):

  top-k      the k-th largest score (a min-heap of the k best for k <= 1024, quickselect above);
             scores below it become -inf (ties kept).
  top-p      *weighted* selection: the first position L, in descending score order, at which the
             cumulative probability reaches top_p; the tokens ranked after L are removed. This is
             transformers' rule "remove a token if the ascending cumulative probability up to and
             including it is <= 1 - top_p", read from the other end.
  min-p      a threshold: remove scores below max + log(min_p) (that is, p < min_p * p_max).
  typical-p  weighted selection on |-log p - entropy| ascending, the same rule as transformers'
             TypicalLogitsWarper (keep every token whose distance is <= the one at which the
             cumulative probability reaches typical_p).
Ties are ordered the way a stable sort orders them (documented in the reference), and at least
min_tokens_to_keep tokens are kept by each filter, as in transformers.
"""
from cython.parallel cimport prange
from libc.math cimport log, fabs, INFINITY
from libc.stdlib cimport malloc, free
from libc.stdint cimport int64_t

cimport _common as vec
from _common cimport real

# A cumulative probability within this of the target counts as reaching it, so that exact cut-offs
# (equal logits) do not depend on summation order; minifm/kernels/sampling.py has the same constant.
cdef double MASS_TOLERANCE = 1e-9
KERNEL_MASS_TOLERANCE = MASS_TOLERANCE

ctypedef struct Item:
    double key          # larger key = earlier in the selection order
    double weight       # probability (only used by the weighted selection)
    Py_ssize_t index    # vocabulary index


cdef inline bint _before(const Item* a, const Item* b, bint higher_index_first) noexcept nogil:
    """The total order used by the selections: larger key first; equal keys by index."""
    if a.key != b.key:
        return a.key > b.key
    if higher_index_first:
        return a.index > b.index
    return a.index < b.index


cdef inline void _swap(Item* items, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    cdef Item tmp = items[i]
    items[i] = items[j]
    items[j] = tmp


cdef Py_ssize_t _partition(Item* items, Py_ssize_t lo, Py_ssize_t hi, bint higher_index_first) noexcept nogil:
    """Partition items[lo:hi] around a median-of-three pivot; return the pivot's final position.
    Afterwards every item before that position comes before the pivot in the order, every item
    after it comes after."""
    cdef Py_ssize_t mid = lo + (hi - lo) // 2, last = hi - 1, store = lo, i
    if _before(&items[mid], &items[lo], higher_index_first):
        _swap(items, mid, lo)
    if _before(&items[last], &items[lo], higher_index_first):
        _swap(items, last, lo)
    if _before(&items[mid], &items[last], higher_index_first):
        _swap(items, mid, last)
    # now items[last] is the median of the three: use it as the pivot
    for i in range(lo, last):
        if _before(&items[i], &items[last], higher_index_first):
            _swap(items, i, store)
            store += 1
    _swap(items, store, last)
    return store


cdef void _select_rank(Item* items, Py_ssize_t n, Py_ssize_t rank, bint higher_index_first) noexcept nogil:
    """Rearrange items so that items[rank] is the item of that rank and items[:rank] come before it."""
    cdef Py_ssize_t lo = 0, hi = n, p
    while hi - lo > 1:
        p = _partition(items, lo, hi, higher_index_first)
        if p == rank:
            return
        if p < rank:
            lo = p + 1
        else:
            hi = p


cdef Py_ssize_t _select_mass(Item* items, Py_ssize_t n, double target, bint higher_index_first) noexcept nogil:
    """The first rank L whose cumulative weight (items of rank <= L) reaches target, or n if none does.
    Afterwards items[L] is the item of rank L and items[:L] are the items ranked before it."""
    cdef Py_ssize_t lo = 0, hi = n, p, i, found = n
    cdef double mass_before_lo = 0.0, mass_before_p
    while hi > lo:
        p = _partition(items, lo, hi, higher_index_first)
        mass_before_p = mass_before_lo
        for i in range(lo, p):
            mass_before_p += items[i].weight
        if mass_before_p + items[p].weight >= target - MASS_TOLERANCE:
            found = p       # p qualifies; an earlier rank may too
            hi = p
        else:
            mass_before_lo = mass_before_p + items[p].weight
            lo = p + 1
    return found


cdef Py_ssize_t _gather_finite(const real* s, Py_ssize_t n, Item* items) noexcept nogil:
    """Items (key = score, weight = softmax probability) for the tokens not yet removed."""
    cdef Py_ssize_t j, count = 0
    cdef double row_max = vec.row_max(s, n), total = 0.0
    for j in range(n):
        if s[j] != -INFINITY:
            items[count].key = s[j]
            items[count].index = j
            items[count].weight = vec.fast_exp(s[j] - row_max)
            total += items[count].weight
            count += 1
    for j in range(count):
        items[j].weight = items[j].weight / total
    return count


cdef void _sift_down(double* heap, Py_ssize_t size, Py_ssize_t i) noexcept nogil:
    """Restore the min-heap property below position i."""
    cdef Py_ssize_t child
    cdef double value = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= value:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = value


cdef double _kth_largest(const real* s, Py_ssize_t n, Py_ssize_t k, Item* items) noexcept nogil:
    """The k-th largest score (counting repeats). For small k a min-heap of the k best seen so far
    (one comparison per score for almost every score); otherwise quickselect."""
    cdef Py_ssize_t j
    cdef double* heap
    if k > 1024:
        for j in range(n):
            items[j].key = s[j]
            items[j].index = j
        _select_rank(items, n, k - 1, True)
        return items[k - 1].key
    heap = <double*>items  # the items buffer is large enough for k doubles
    for j in range(k):
        heap[j] = s[j]
    for j in range(k // 2 - 1, -1, -1):
        _sift_down(heap, k, j)
    for j in range(k, n):
        if s[j] > heap[0]:
            heap[0] = s[j]
            _sift_down(heap, k, 0)
    return heap[0]


cdef void _top_k(real* s, Py_ssize_t n, Py_ssize_t k, Item* items) noexcept nogil:
    cdef Py_ssize_t j
    cdef double threshold
    if k >= n:
        return
    threshold = _kth_largest(s, n, k, items)
    for j in range(n):
        if s[j] < threshold:
            s[j] = -INFINITY


cdef void _remove_after(real* s, Item* items, Py_ssize_t count, Py_ssize_t keep) noexcept nogil:
    """Set the score of every item at position >= keep to -inf."""
    cdef Py_ssize_t j
    for j in range(keep, count):
        s[items[j].index] = -INFINITY


cdef void _top_p(real* s, Py_ssize_t n, double top_p, Py_ssize_t min_keep, Item* items) noexcept nogil:
    cdef Py_ssize_t count = _gather_finite(s, n, items), last, keep
    # ties: a stable ascending sort puts the lower index first, so it is removed first
    last = _select_mass(items, count, top_p, True)
    keep = count if last == count else last + 1
    if keep < min_keep and keep < count:
        keep = min_keep if min_keep < count else count
        _select_rank(items, count, keep - 1, True)
    _remove_after(s, items, count, keep)


cdef void _min_p(real* s, Py_ssize_t n, double min_p, Py_ssize_t min_keep, Item* items) noexcept nogil:
    cdef Py_ssize_t j, kept = 0, count
    cdef double cutoff = vec.row_max(s, n) + log(min_p)   # p < min_p * p_max  <=>  s < max + log(min_p)
    for j in range(n):
        if s[j] != -INFINITY and s[j] >= cutoff:
            kept += 1
    if kept >= min_keep:
        for j in range(n):
            if s[j] < cutoff:
                s[j] = -INFINITY
        return
    # fewer than min_keep survive: keep the min_keep best (ties: lower index first, as a stable
    # descending argsort orders them)
    count = _gather_finite(s, n, items)
    if count <= min_keep:
        return
    _select_rank(items, count, min_keep - 1, False)
    _remove_after(s, items, count, min_keep)


cdef void _typical(real* s, Py_ssize_t n, double mass, Py_ssize_t min_keep, Item* items) noexcept nogil:
    cdef Py_ssize_t j, count = _gather_finite(s, n, items), last, first_removable
    cdef double entropy = 0.0, log_p, threshold
    for j in range(count):
        if items[j].weight > 0:
            entropy -= items[j].weight * log(items[j].weight)
    for j in range(count):
        log_p = log(items[j].weight) if items[j].weight > 0 else -INFINITY
        items[j].key = -fabs(-log_p - entropy)   # larger key = more typical = earlier
    # ties: a stable ascending sort of the distance puts the lower index first
    last = _select_mass(items, count, mass, False)
    if last == count:
        return
    threshold = items[last].key
    if min_keep >= count:
        return
    first_removable = last + 1
    if min_keep > first_removable:
        _select_rank(items, count, min_keep - 1, False)
        first_removable = min_keep
    for j in range(first_removable, count):
        if items[j].key < threshold:
            s[items[j].index] = -INFINITY


def filter_rows(real[:, ::1] scores, Py_ssize_t top_k, double top_p, double min_p, double typical_p,
                Py_ssize_t min_tokens_to_keep):
    """In place, per row: top-k (0 = off), top-p (>= 1 = off), min-p (<= 0 = off), typical-p (>= 1 = off).
    Arguments are validated by the Python wrapper."""
    cdef Py_ssize_t rows = scores.shape[0], vocab = scores.shape[1], i
    cdef Item* items
    cdef real* row
    if rows == 0 or vocab == 0:
        return
    with nogil:
        for i in prange(rows, schedule="dynamic", num_threads=vec.threads_for(rows, <double>rows * vocab * 8)):
            items = <Item*>malloc(vocab * sizeof(Item))
            row = &scores[i, 0]
            if top_k > 0:
                _top_k(row, vocab, top_k if top_k > min_tokens_to_keep else min_tokens_to_keep, items)
            if top_p < 1.0:
                _top_p(row, vocab, top_p, min_tokens_to_keep, items)
            if min_p > 0.0:
                _min_p(row, vocab, min_p, min_tokens_to_keep, items)
            if typical_p < 1.0:
                _typical(row, vocab, typical_p, min_tokens_to_keep, items)
            free(items)


def sample_rows(const real[:, ::1] scores, const double[::1] uniforms, int64_t[::1] out):
    """out[i] = the first token whose cumulative probability exceeds uniforms[i] (inverse CDF).
    Returns the index of the first row without any finite score, or -1."""
    cdef Py_ssize_t rows = scores.shape[0], vocab = scores.shape[1], i, j, chosen, bad_row = -1
    cdef double row_max, total, target, running
    cdef real* weights
    if uniforms.shape[0] != rows or out.shape[0] != rows:
        raise ValueError(f"uniforms ({uniforms.shape[0]},) and out ({out.shape[0]},) need {rows} rows")
    with nogil:
        for i in prange(rows, schedule="dynamic", num_threads=vec.threads_for(rows, <double>rows * vocab * 8)):
            row_max = vec.row_max(&scores[i, 0], vocab)
            if row_max == -INFINITY or vocab == 0:
                out[i] = -1
                continue
            weights = <real*>malloc(vocab * sizeof(real))
            total = vec.exp_store_sum(&scores[i, 0], weights, vocab, 1, <real>row_max)
            target = uniforms[i] * total
            running = 0.0
            chosen = -1
            for j in range(vocab):
                if weights[j] > 0:
                    chosen = j        # the last token with mass, in case rounding leaves target unreached
                    running = running + weights[j]
                    if running > target:
                        break
            out[i] = chosen
            free(weights)
    for i in range(rows):
        if out[i] < 0:
            return i
    return -1
