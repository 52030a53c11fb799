"""The BPE hot loops: compiled == reference == a naive full-recount oracle, for training and encoding."""
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minifm.kernels import bpe as kb
from minifm.kernels._backend import compiled

from tokenizer_corpus import stdlib_sample

shared_fixture = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def merge_left_to_right(word, pair, new_id):
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def naive_train(words, counts, num_merges, first_id=256):
    """Recount every pair from scratch before each merge: slow, obviously right."""
    words = [list(w) for w in words]
    merges = []
    for k in range(num_merges):
        pair_counts = Counter()
        for word, count in zip(words, counts):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
        live = {pair: n for pair, n in pair_counts.items() if n > 0}
        if not live:
            break
        best = min(live, key=lambda pair: (-live[pair], pair))
        merges.append(best)
        words = [merge_left_to_right(word, best, first_id + k) for word in words]
    return np.array(merges, dtype=np.int32).reshape(-1, 2)


def naive_encode(data: bytes, merges, first_id=256):
    """Apply every merge in rank order to the whole piece."""
    ids = list(data)
    for rank, (left, right) in enumerate(merges):
        ids = merge_left_to_right(ids, (left, right), first_id + rank)
    return ids


def flatten(words):
    symbols = np.array([s for w in words for s in w], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in words])]).astype(np.int64)
    return symbols, offsets


# small alphabets make ties, overlaps ("aaaa") and repeated pairs common
corpora = st.lists(
    st.tuples(st.lists(st.integers(0, 4), max_size=14), st.integers(0, 6)), min_size=1, max_size=25
)


@shared_fixture
@given(corpus=corpora, num_merges=st.integers(0, 40))
def test_training_matches_the_full_recount_oracle(kernel_path, corpus, num_merges):
    words = [w for w, _ in corpus]
    counts = np.array([c for _, c in corpus], dtype=np.int64)
    symbols, offsets = flatten(words)
    got = kb.train_merges(symbols, offsets, counts, num_merges)
    expected = naive_train(words, counts.tolist(), num_merges)
    np.testing.assert_array_equal(got, expected)


def test_compiled_and_reference_training_agree_on_real_text():
    kernel = compiled("bpe")
    if kernel is None:
        pytest.skip("compiled bpe kernel not built (or MINIFM_KERNELS=reference)")
    from minifm.tokenizer.pretokenize import pretokenize

    counts = Counter()
    for text in stdlib_sample(60_000):
        counts.update(pretokenize(text, "gpt4"))
    words = [list(w.encode("utf-8")) for w in counts]
    symbols, offsets = flatten(words)
    weights = np.array(list(counts.values()), dtype=np.int64)
    reference = kb.train_merges_reference(symbols, offsets, weights, 400)
    fast = kernel.train_merges(symbols, offsets, weights, 400, 256)
    assert reference.shape == (400, 2)
    np.testing.assert_array_equal(fast, reference)


def test_training_stops_when_no_pair_is_left(kernel_path):
    symbols, offsets = flatten([[1, 2, 3], [7]])
    merges = kb.train_merges(symbols, offsets, np.array([2, 5]), 10)
    np.testing.assert_array_equal(merges, naive_train([[1, 2, 3], [7]], [2, 5], 10))
    assert merges.shape == (2, 2)


def test_training_rejects_inconsistent_word_arrays():
    with pytest.raises(ValueError, match="offsets"):
        kb.train_merges(np.array([1, 2, 3]), np.array([0, 2]), np.array([1, 1]), 3)
    with pytest.raises(ValueError, match="counts"):
        kb.train_merges(np.array([1, 2]), np.array([0, 2]), np.array([-1]), 3)
    with pytest.raises(ValueError, match="num_merges"):
        kb.train_merges(np.array([1, 2]), np.array([0, 2]), np.array([1]), -1)


byte_strings = st.lists(st.sampled_from(b"ab c"), max_size=60).map(bytes)


@shared_fixture
@given(corpus=st.lists(byte_strings, min_size=1, max_size=12), pieces=st.lists(byte_strings, max_size=8),
       num_merges=st.integers(0, 30))
def test_encoding_matches_rank_order_application(kernel_path, corpus, pieces, num_merges):
    words = [list(w) for w in corpus]
    symbols, offsets = flatten(words)
    merges = kb.train_merges(symbols, offsets, np.ones(len(words), dtype=np.int64), num_merges)
    encoder = kb.make_encoder(merges)
    texts = [p.decode("ascii") for p in pieces]
    got = np.asarray(encoder.encode_pieces(texts)).tolist()
    expected = [i for p in pieces for i in naive_encode(p, merges.tolist())]
    assert got == expected
    # the cache must give the same answer the second time
    assert np.asarray(encoder.encode_pieces(texts)).tolist() == expected


@pytest.mark.parametrize("piece", ["a" * 5000, "ab" * 2500, "abc " * 900 + "a"])
def test_long_pieces_compiled_equals_reference(piece):
    kernel = compiled("bpe")
    if kernel is None:
        pytest.skip("compiled bpe kernel not built (or MINIFM_KERNELS=reference)")
    words = [list(b"aaaa"), list(b"abab"), list(b"abc a"), list(b"bc ab")]
    symbols, offsets = flatten(words)
    merges = kb.train_merges_reference(symbols, offsets, np.array([3, 2, 2, 1]), 12)
    fast = kernel.Encoder(merges, 256).encode_pieces([piece]).tolist()
    reference = kb.ReferenceEncoder(merges).encode_pieces([piece])
    assert fast == reference
    assert fast == naive_encode(piece.encode(), merges.tolist())
