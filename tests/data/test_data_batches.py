"""Batch builders: packing preserves tokens, MLM proportions (binomial tests), span-corruption round trip,
post-training padding and shuffled batches; all seeded and reproducible."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from minifm.data import batches as b


# ------------------------------------------------------------------ causal LM
@given(st.lists(st.lists(st.integers(0, 200), max_size=30), min_size=1, max_size=8), st.integers(1, 16))
def test_packing_preserves_the_token_stream(docs, block_size):
    stream = [t for d in docs for t in d + [999]]
    if len(stream) < block_size + 1:
        with pytest.raises(ValueError, match="block_size"):
            b.pack_causal_lm(docs, block_size, eos_id=999)
        return
    packed = b.pack_causal_lm(docs, block_size, eos_id=999)
    assert packed.dtype == np.int64 and packed.shape == ((len(stream) - 1) // block_size, block_size + 1)
    rebuilt = np.concatenate([packed[:, :-1].ravel(), packed[-1:, -1]])
    np.testing.assert_array_equal(rebuilt, stream[: rebuilt.size])
    np.testing.assert_array_equal(packed[1:, 0], packed[:-1, -1])        # windows overlap by one token


def test_causal_lm_batches_shift_and_cover_every_window(rng):
    packed = b.pack_causal_lm([list(range(50)), list(range(100, 170))], 8, eos_id=255)
    seen = []
    for inputs, targets in b.causal_lm_batches(packed, 4, rng):
        assert inputs.shape == targets.shape and inputs.shape[1] == 8 and inputs.dtype == np.int64
        np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
        seen += [tuple(row) for row in inputs]
    assert sorted(seen) == sorted(tuple(row) for row in packed[:, :-1])
    again = [x for x, _ in b.causal_lm_batches(packed, 4, np.random.default_rng(1234))]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate([x for x, _ in b.causal_lm_batches(
        packed, 4, np.random.default_rng(1234))]))


# ------------------------------------------------------------------ BERT masking
def test_mlm_proportions_follow_80_10_10(rng):
    vocab, mask_id, specials = 500, 3, [0, 1, 2, 3]
    ids = rng.integers(0, vocab, size=(200, 128))
    ids[:, 0] = 0                                                      # a [CLS]-like special per row
    inputs, labels = b.mask_for_mlm(ids, rng, mask_id, vocab, specials)
    special = np.isin(ids, specials)
    selected = labels != -100
    assert not (selected & special).any()
    np.testing.assert_array_equal(inputs[special], ids[special])        # specials untouched
    np.testing.assert_array_equal(labels[selected], ids[selected])
    n_eligible, n_selected = int((~special).sum()), int(selected.sum())
    assert stats.binomtest(n_selected, n_eligible, 0.15).pvalue > 1e-4
    masked = int((inputs[selected] == mask_id).sum())
    unchanged = int((inputs[selected] == ids[selected]).sum())
    replaced = n_selected - masked - unchanged
    # a random replacement equals the original with probability 1/|non-special vocab|: fold it into "unchanged"
    p_same = 0.1 / (vocab - len(specials))
    observed = [masked, replaced, unchanged]
    expected = n_selected * np.array([0.8, 0.1 - p_same, 0.1 + p_same])
    assert stats.chisquare(observed, expected).pvalue > 1e-4
    assert not np.isin(inputs[selected & (inputs != ids) & (inputs != mask_id)], specials).any()


def test_mlm_is_seeded_and_validates(rng):
    ids = np.arange(40).reshape(2, 20)
    first = b.mask_for_mlm(ids, np.random.default_rng(5), 1, 64, [0, 1])
    second = b.mask_for_mlm(ids, np.random.default_rng(5), 1, 64, [0, 1])
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="vocab_size"):
        b.mask_for_mlm([70], rng, 1, 64, [0])
    with pytest.raises(TypeError, match="rng"):
        b.mask_for_mlm(ids, 5, 1, 64, [0])


# ------------------------------------------------------------------ T5 span corruption
SENTINEL_IDS = list(range(1000, 1032))


@given(st.integers(2, 400), st.integers(0, 2**32 - 1), st.floats(0.05, 0.5), st.floats(1.0, 5.0))
def test_span_corruption_round_trips(length, seed, density, mean_span):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 1000, size=length)
    num_noise = min(max(int(round(length * density)), 1), length - 1)
    num_spans = min(max(int(round(num_noise / mean_span)), 1), num_noise, length - num_noise)
    if num_spans > len(SENTINEL_IDS):
        with pytest.raises(ValueError, match="sentinel"):
            b.span_corruption(tokens, rng, SENTINEL_IDS, density, mean_span)
        return
    encoder, decoder = b.span_corruption(tokens, rng, SENTINEL_IDS, density, mean_span)
    np.testing.assert_array_equal(b.fill_sentinels(encoder, decoder, SENTINEL_IDS), tokens)
    used = [t for t in decoder.tolist() if t in SENTINEL_IDS]
    assert used == SENTINEL_IDS[:num_spans]                              # sentinels in order, once each
    assert [t for t in encoder.tolist() if t in SENTINEL_IDS] == used
    assert decoder.size - num_spans == num_noise                          # exactly the noise tokens
    assert encoder.size - num_spans == length - num_noise
    assert encoder[0] not in SENTINEL_IDS                                 # T5 starts with kept tokens


def test_span_lengths_average_mean_span_length(rng):
    lengths = []
    for _ in range(300):
        _, decoder = b.span_corruption(rng.integers(0, 1000, size=200), rng, SENTINEL_IDS, 0.15, 3.0)
        cuts = np.flatnonzero(np.isin(decoder, SENTINEL_IDS))
        lengths += np.diff(np.append(cuts, decoder.size)).tolist()
    assert abs(np.mean(lengths) - 1 - 3.0) < 0.1                         # 30 noise tokens / 10 spans exactly


# ------------------------------------------------------------------ post-training rows
@given(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=9), min_size=1, max_size=6), st.integers(0, 4))
def test_pad_right_keeps_rows_left_aligned_with_a_matching_mask(rows, extra):
    width = max(len(r) for r in rows) + extra
    ids, mask = b.pad_right(rows, pad_id=99, length=width)
    assert ids.shape == mask.shape == (len(rows), width) and ids.dtype == mask.dtype == np.int64
    for row, (row_ids, row_mask) in zip(rows, zip(ids, mask)):
        np.testing.assert_array_equal(row_ids[:len(row)], row)
        assert (row_ids[len(row):] == 99).all()
        np.testing.assert_array_equal(row_mask, np.arange(width) < len(row))
    with pytest.raises(ValueError, match="no rows"):
        b.pad_right([], 0)


@given(st.integers(1, 30), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_shuffled_batches_cover_each_item_once_per_epoch(n_items, batch_size, seed):
    items = list(range(n_items))
    size = min(batch_size, n_items)
    per_epoch = n_items // size
    stream = b.shuffled_batches(items, batch_size)(np.random.default_rng(seed))
    epoch = [next(stream) for _ in range(per_epoch)]
    assert all(len(batch) == size for batch in epoch)
    seen = [item for batch in epoch for item in batch]
    assert len(set(seen)) == len(seen)                                  # no item twice within an epoch
    again = b.shuffled_batches(items, batch_size)(np.random.default_rng(seed))
    assert [next(again) for _ in range(per_epoch)] == epoch             # the rng alone fixes the order
    with pytest.raises(ValueError, match="no training examples"):
        b.shuffled_batches([], 2)
