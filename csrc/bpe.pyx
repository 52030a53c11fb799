# cython: language_level=3
# distutils: language = c++
"""Cython twin of minifm/kernels/bpe.py (references: train_merges_reference, ReferenceEncoder).

Training keeps every unique word as a run of ids in one flat array and merges in place. A pair
(left, right) is packed into one 64-bit key and mapped to a dense pair index; per pair index we
keep its count and the list of words it has appeared in (appended when the pair is created or
grows, never pruned: a word that no longer holds the pair is scanned and left unchanged). The
best pair comes from a std::priority_queue with lazy deletion, ordered by (count desc, left asc,
right asc) exactly as the reference's heapq.

Encoding walks a list of pieces (Python str), looks each one up in a dict cache holding the ids
as packed int32 bytes, and on a miss merges the piece's UTF-8 bytes with a linked list plus a
min-heap of (rank, position), so even a megabyte-long piece costs O(n log n).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject
from cython.operator cimport dereference
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from libcpp.queue cimport priority_queue
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector

import numpy as np

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL

cdef extern from *:
    """
    #include <cstdint>
    /* One heap entry of the trainer: a pair and the count it had when pushed. */
    struct PairEntry {
        int64_t count;
        int32_t left;
        int32_t right;
    };
    /* std::priority_queue pops the largest: larger count first, then the smaller pair. */
    static inline bool operator<(const PairEntry& a, const PairEntry& b) {
        if (a.count != b.count) return a.count < b.count;
        if (a.left != b.left) return a.left > b.left;
        return a.right > b.right;
    }
    """
    cdef struct PairEntry:
        int64_t count
        int32_t left
        int32_t right


cdef inline uint64_t _key(int32_t left, int32_t right) noexcept nogil:
    return (<uint64_t><uint32_t>left << 32) | <uint64_t><uint32_t>right



# ------------------------------------------------------------------ training
cdef class _Trainer:
    cdef vector[int32_t] symbols        # all words, back to back; merged in place
    cdef vector[int64_t] word_start
    cdef vector[int64_t] word_length
    cdef vector[int64_t] word_count
    cdef unordered_map[uint64_t, int32_t] pair_index
    cdef vector[int32_t] pair_left, pair_right
    cdef vector[int64_t] pair_count
    cdef vector[vector[int32_t]] pair_words
    cdef vector[int32_t] pair_mark     # merge number that last put the pair in `grown`
    cdef vector[int32_t] grown
    cdef priority_queue[PairEntry] heap

    cdef int32_t _index(self, int32_t left, int32_t right):
        cdef uint64_t key = _key(left, right)
        cdef unordered_map[uint64_t, int32_t].iterator found = self.pair_index.find(key)
        cdef int32_t index
        if found != self.pair_index.end():
            return dereference(found).second
        index = <int32_t>self.pair_count.size()
        self.pair_index[key] = index
        self.pair_left.push_back(left)
        self.pair_right.push_back(right)
        self.pair_count.push_back(0)
        self.pair_words.push_back(vector[int32_t]())
        self.pair_mark.push_back(-1)
        return index

    cdef void _add(self, int32_t left, int32_t right, int64_t delta, int32_t word, int32_t merge_no):
        cdef int32_t index = self._index(left, right)
        self.pair_count[index] += delta
        if delta > 0:
            if self.pair_words[index].empty() or self.pair_words[index].back() != word:
                self.pair_words[index].push_back(word)
            if merge_no >= 0 and self.pair_mark[index] != merge_no:
                self.pair_mark[index] = merge_no
                self.grown.push_back(index)

    cdef void _push(self, int32_t index):
        cdef PairEntry entry
        entry.count = self.pair_count[index]
        entry.left = self.pair_left[index]
        entry.right = self.pair_right[index]
        self.heap.push(entry)

    cdef void _merge_in_word(self, int32_t word, int32_t left, int32_t right, int32_t new_id,
                             int32_t merge_no):
        cdef int64_t start = self.word_start[word]
        cdef int64_t end = start + self.word_length[word]
        cdef int64_t count = self.word_count[word]
        cdef int64_t read = start, write = start
        cdef int32_t* sym = self.symbols.data()
        while read < end:
            if read + 1 < end and sym[read] == left and sym[read + 1] == right:
                if write > start:
                    self._add(sym[write - 1], left, -count, word, merge_no)
                    self._add(sym[write - 1], new_id, count, word, merge_no)
                if read + 2 < end:
                    self._add(right, sym[read + 2], -count, word, merge_no)
                    self._add(new_id, sym[read + 2], count, word, merge_no)
                self._add(left, right, -count, word, merge_no)
                sym[write] = new_id
                write += 1
                read += 2
            else:
                sym[write] = sym[read]
                write += 1
                read += 1
        self.word_length[word] = write - start

    cdef object run(self, int64_t num_merges, int32_t first_id):
        cdef int32_t w, index, new_id, merge_no = 0
        cdef int64_t i, start, length, current
        cdef PairEntry top
        cdef vector[int32_t] words
        cdef vector[int32_t] merges
        for w in range(<int32_t>self.word_count.size()):
            if self.word_count[w] == 0:
                continue
            start = self.word_start[w]
            length = self.word_length[w]
            for i in range(start, start + length - 1):
                self._add(self.symbols[i], self.symbols[i + 1], self.word_count[w], w, -1)
        for index in range(<int32_t>self.pair_count.size()):
            if self.pair_count[index] > 0:
                self._push(index)

        while merge_no < num_merges and not self.heap.empty():
            top = self.heap.top()
            self.heap.pop()
            index = self._index(top.left, top.right)
            current = self.pair_count[index]
            if current != top.count:   # stale: re-enter with the true count
                if current > 0:
                    self._push(index)
                continue
            new_id = first_id + merge_no
            merges.push_back(top.left)
            merges.push_back(top.right)
            words.swap(self.pair_words[index])
            self.pair_words[index].clear()
            self.grown.clear()
            for i in range(<int64_t>words.size()):
                self._merge_in_word(words[i], top.left, top.right, new_id, merge_no)
            words.clear()
            self.pair_count[index] = 0
            for i in range(<int64_t>self.grown.size()):
                if self.pair_count[self.grown[i]] > 0:
                    self._push(self.grown[i])
            merge_no += 1

        out = np.empty((merge_no, 2), dtype=np.int32)
        cdef int32_t[:, ::1] view = out
        for i in range(merge_no):
            view[i, 0] = merges[2 * i]
            view[i, 1] = merges[2 * i + 1]
        return out




def train_merges(const int32_t[::1] symbols, const int64_t[::1] offsets, const int64_t[::1] counts,
                 int64_t num_merges, int32_t first_id):
    """Learn up to num_merges merges from words symbols[offsets[w]:offsets[w+1]] x counts[w]."""
    cdef _Trainer trainer = _Trainer()
    cdef Py_ssize_t n_words = counts.shape[0], i
    trainer.symbols.assign(&symbols[0] if symbols.shape[0] else NULL,
                           (&symbols[0] if symbols.shape[0] else NULL) + symbols.shape[0])
    for i in range(n_words):
        trainer.word_start.push_back(offsets[i])
        trainer.word_length.push_back(offsets[i + 1] - offsets[i])
        trainer.word_count.push_back(counts[i])
    return trainer.run(num_merges, first_id)


# ------------------------------------------------------------------ encoding
cdef class Encoder:
    """pieces (list of str) -> ids, merging each piece's UTF-8 bytes by rank, with a cache."""
    cdef unordered_map[uint64_t, int32_t] ranks
    cdef int32_t first_id
    cdef public dict cache
    cdef public Py_ssize_t cache_limit
    # scratch buffers reused across pieces
    cdef vector[int32_t] ids, prev, next
    cdef priority_queue[uint64_t] heap

    def __init__(self, const int32_t[:, ::1] merges, int32_t first_id, Py_ssize_t cache_limit=1 << 20):
        cdef Py_ssize_t rank
        for rank in range(merges.shape[0]):
            self.ranks[_key(merges[rank, 0], merges[rank, 1])] = <int32_t>rank
        self.first_id = first_id
        self.cache = {}
        self.cache_limit = cache_limit

    cdef inline int32_t _rank(self, int32_t left, int32_t right):
        cdef unordered_map[uint64_t, int32_t].iterator found = self.ranks.find(_key(left, right))
        if found == self.ranks.end():
            return -1
        return dereference(found).second

    cdef inline void _push(self, int32_t rank, int32_t position):
        # priority_queue is a max-heap: store the complement so the smallest (rank, position) wins
        self.heap.push(~((<uint64_t>rank << 32) | <uint64_t><uint32_t>position))

    cdef Py_ssize_t _merge(self, Py_ssize_t n):
        """Merge self.ids[:n] in place; returns the new length."""
        cdef int32_t* ids = self.ids.data()
        cdef int32_t* prev
        cdef int32_t* nxt
        cdef int32_t i, j, rank
        cdef uint64_t entry
        cdef Py_ssize_t k, length
        if n < 2:
            return n
        self.prev.resize(n)
        self.next.resize(n)
        prev = self.prev.data()
        nxt = self.next.data()
        for k in range(n):
            prev[k] = <int32_t>k - 1
            nxt[k] = <int32_t>k + 1 if k + 1 < n else -1
        for k in range(n - 1):
            rank = self._rank(ids[k], ids[k + 1])
            if rank >= 0:
                self._push(rank, <int32_t>k)
        while not self.heap.empty():
            entry = ~self.heap.top()
            self.heap.pop()
            rank = <int32_t>(entry >> 32)
            i = <int32_t>(entry & 0xFFFFFFFF)
            if ids[i] < 0 or nxt[i] < 0:
                continue
            j = nxt[i]
            if self._rank(ids[i], ids[j]) != rank:
                continue  # stale: the pair at i changed since this entry was pushed
            ids[i] = self.first_id + rank
            ids[j] = -1
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prev[nxt[j]] = i
            if prev[i] >= 0:
                rank = self._rank(ids[prev[i]], ids[i])
                if rank >= 0:
                    self._push(rank, prev[i])
            if nxt[i] >= 0:
                rank = self._rank(ids[i], ids[nxt[i]])
                if rank >= 0:
                    self._push(rank, i)
        length = 0
        i = 0
        while i >= 0:
            ids[length] = ids[i]
            length += 1
            i = nxt[i]
        return length

    def encode_pieces(self, list pieces):
        """Concatenated ids of all pieces, as an int32 NumPy array."""
        cdef vector[int32_t] out
        cdef PyObject* cached
        cdef const char* utf8
        cdef Py_ssize_t size, k, length
        cdef bytes packed
        for piece in pieces:
            cached = PyDict_GetItem(self.cache, piece)
            if cached is NULL:
                utf8 = PyUnicode_AsUTF8AndSize(piece, &size)
                self.ids.resize(size)
                for k in range(size):
                    self.ids[k] = <unsigned char>utf8[k]
                length = self._merge(size)
                packed = PyBytes_FromStringAndSize(<char*>self.ids.data(), length * 4)
                if len(self.cache) >= self.cache_limit:
                    self.cache.clear()
                PyDict_SetItem(self.cache, piece, packed)
                cached = <PyObject*>packed
            size = PyBytes_GET_SIZE(<object>cached) // 4
            k = out.size()
            out.resize(k + size)
            memcpy(out.data() + k, PyBytes_AS_STRING(<object>cached), size * 4)
        result = np.empty(out.size(), dtype=np.int32)
        cdef int32_t[::1] view = result
        if out.size():
            memcpy(&view[0], out.data(), out.size() * 4)
        return result
