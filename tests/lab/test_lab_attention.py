"""lab attention: the passkey sequences put the answer exactly k tokens back and never in the input; the loss
by position is the per-position cross-entropy; the windowed model really is windowed.
(The sliding-window mask itself is tested in tests/nn/test_attention_window.py.)"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minifm as mf
from minifm.lab import attention


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 80), st.integers(1, 6), st.integers(0, 10_000))
def test_passkey_answers_sit_exactly_k_tokens_back(length, queries, seed):
    vocabulary = attention.PasskeyVocabulary(n_values=5, n_fillers=7)
    if queries > length - 1 - max(1, length // 8):
        with pytest.raises(ValueError, match="too short"):
            attention.passkey_batch(np.random.default_rng(seed), 3, length, vocabulary, queries)
        return
    inputs, targets, distances = attention.passkey_batch(np.random.default_rng(seed), 6, length, vocabulary, queries)
    assert inputs.shape == targets.shape == distances.shape == (6, length)
    assert inputs.min() >= 0 and inputs.max() < vocabulary.size
    for row in range(6):
        asked = np.flatnonzero(targets[row] != attention.IGNORE_INDEX)
        assert asked.size == queries and (inputs[row, asked] == vocabulary.query).all()
        assert (distances[row, asked] > 0).all()
        assert (distances[row][targets[row] == attention.IGNORE_INDEX] == -1).all()
        passkey_positions = asked - distances[row, asked]
        assert len(set(passkey_positions)) == 1  # one passkey per sequence
        position = passkey_positions[0]
        assert inputs[row, position - 1] == vocabulary.key
        assert (targets[row, asked] == inputs[row, position]).all() and inputs[row, position] < vocabulary.n_values
        assert np.sum(inputs[row] == vocabulary.key) == 1 and np.sum(inputs[row] < vocabulary.n_values) == 1


def test_passkey_distances_are_log_uniform_so_short_ones_are_common():
    vocabulary = attention.PasskeyVocabulary(n_values=16, n_fillers=16)
    _, targets, distances = attention.passkey_batch(np.random.default_rng(0), 2000, 64, vocabulary, 6)
    asked = distances[targets != attention.IGNORE_INDEX]
    assert asked.min() == 1 and asked.max() >= 56
    assert 0.35 < np.mean(asked < 8) < 0.65  # about half below 8 in [1, ~60): log-uniform, not uniform (~12%)


class PositionStub:
    """logits[b, t] = table[t]: a 'model' whose prediction depends only on the position."""

    def __init__(self, table):
        self.table = table  # (T, V)

    def eval(self):
        return self

    def __call__(self, ids):
        ids = np.asarray(ids)
        return mf.tensor(np.broadcast_to(self.table[:ids.shape[1]], ids.shape + self.table.shape[1:]).copy())


def test_loss_by_position_is_the_mean_cross_entropy_at_each_position(rng):
    table = rng.normal(size=(5, 9)).astype(np.float32)  # T = 5, V = 9
    windows = rng.integers(0, 9, size=(7, 6))  # (n, T + 1)
    log_probs = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    expected = [-np.mean([log_probs[t, windows[row, t + 1]] for row in range(7)]) for t in range(5)]
    np.testing.assert_allclose(attention.loss_by_position(PositionStub(table), windows, batch_size=3), expected,
                               rtol=1e-5)


def test_build_gpt_windows_every_layer_and_accuracy_bins_group_distances():
    settings_ = dict(n_layer=3, n_head=2, n_embd=8)
    model = attention.build_gpt(settings_, vocab_size=10, block_size=12, window=3, seed=0)
    assert [block.attn.window for block in model.blocks] == [3, 3, 3]
    assert all(block.attn.window is None for block in attention.build_gpt(settings_, 10, 12, None, 0).blocks)
    run = {"correct_by_distance": [0, 1, 2, 0, 0, 3, 1], "count_by_distance": [0, 2, 2, 1, 0, 4, 2]}
    bins, accuracies = attention.accuracy_bins(run, width=2)
    assert bins == [(1, 2), (3, 4), (5, 6)]
    np.testing.assert_allclose(accuracies, [3 / 4, 0 / 1, 4 / 6])
