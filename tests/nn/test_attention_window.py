"""Sliding-window attention: F.scaled_dot_product_attention(..., window=w) and MultiHeadAttention.window.

The mask is checked against a brute-force double loop; a window covering the whole sequence must give
full attention (the flash path's numbers); a windowed model's output at position t must not move
when a token further back than the window changes (one layer), and the block's no-grad fast path must
not bypass the window; cached decoding with a window equals the full forward.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifm as mf
import minifm.functional as F
from minifm.autograd import gradcheck
from minifm.models import GPT, GPTConfig


def brute_force_window(query_length, key_length, window, q_offset):
    allowed = np.zeros((query_length, key_length), dtype=bool)
    for i in range(query_length):
        for j in range(key_length):
            distance = (i + q_offset) - j
            allowed[i, j] = -window < distance < window
    return allowed


@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 14), st.integers(0, 6))
def test_sliding_window_mask_equals_a_brute_force_mask(query_length, key_length, window, q_offset):
    np.testing.assert_array_equal(F.sliding_window_mask(query_length, key_length, window, q_offset),
                                  brute_force_window(query_length, key_length, window, q_offset))


@pytest.mark.parametrize("window", [0, -1, 2.5, True, "3"])
def test_a_bad_window_is_refused_naming_it(window):
    with pytest.raises(ValueError, match="window must be a positive int"):
        F.sliding_window_mask(4, 4, window)


def random_qkv(rng, batch=2, heads=4, kv_heads=2, steps=7, dim=8, dtype=np.float32):
    q = rng.normal(size=(batch, heads, steps, dim)).astype(dtype)
    k = rng.normal(size=(batch, kv_heads, steps, dim)).astype(dtype)
    v = rng.normal(size=(batch, kv_heads, steps, dim)).astype(dtype)
    return q, k, v


@pytest.mark.parametrize("is_causal", [True, False])
@pytest.mark.parametrize("extra", [0, 5])
def test_a_window_as_long_as_the_sequence_is_full_attention(is_causal, extra, rng):
    q, k, v = random_qkv(rng)
    padding = np.ones((2, 7), dtype=bool)
    padding[1, :2] = False  # left padding in the second row
    full = F.scaled_dot_product_attention(mf.tensor(q), mf.tensor(k), mf.tensor(v), is_causal=is_causal,
                                          key_padding_mask=padding).data  # the flash path
    windowed = F.scaled_dot_product_attention(mf.tensor(q), mf.tensor(k), mf.tensor(v), is_causal=is_causal,
                                              key_padding_mask=padding, window=7 + extra).data  # the dense path
    np.testing.assert_allclose(windowed, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("is_causal", [True, False])
def test_windowed_attention_is_softmax_over_the_keys_in_the_window(is_causal, rng):
    q, k, v = random_qkv(rng, kv_heads=4, dtype=np.float64)
    window = 3
    out = F.scaled_dot_product_attention(mf.tensor(q), mf.tensor(k), mf.tensor(v), is_causal=is_causal,
                                         window=window).data  # (B, H, T, D)
    allowed = brute_force_window(7, 7, window, 0)
    if is_causal:
        allowed &= np.tril(np.ones((7, 7), dtype=bool))
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(8)  # (B, H, T, T)
    scores = np.where(allowed, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(out, weights @ v, rtol=1e-12, atol=1e-12)


def test_windowed_attention_gradients_match_central_differences(rng):
    q, k, v = random_qkv(rng, batch=1, heads=2, kv_heads=1, steps=5, dim=3, dtype=np.float64)
    inputs = [mf.tensor(array, requires_grad=True) for array in (q, k, v)]
    assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True, window=2), *inputs)


def windowed_gpt(window, n_layer=1):
    config = GPTConfig(vocab_size=30, block_size=16, n_layer=n_layer, n_head=2, n_embd=16, pos="rope")
    model = GPT(config)
    for block in model.blocks:
        block.attn.window = window
    return model


def test_a_one_layer_windowed_gpt_does_not_see_past_its_window(rng):
    model = windowed_gpt(window=3)
    ids = rng.integers(0, 30, size=(1, 12))
    changed = ids.copy()
    changed[0, 2] = (ids[0, 2] + 1) % 30
    with mf.no_grad():  # also proves the block's fast path does not bypass the window
        before, after = model(ids).data, model(changed).data
    np.testing.assert_array_equal(before[0, 5:], after[0, 5:])  # positions >= 2 + 3 cannot see position 2
    assert not np.allclose(before[0, 2:5], after[0, 2:5])
    full = windowed_gpt(window=None)
    full.load_state_dict(model.state_dict())
    with mf.no_grad():
        assert not np.allclose(full(ids).data[0, 5:], full(changed).data[0, 5:])


def test_cached_windowed_decoding_equals_the_full_forward(rng):
    model = windowed_gpt(window=4, n_layer=2)
    ids = rng.integers(0, 30, size=(2, 11))
    with mf.no_grad():
        full = model(ids).data  # (B, T, V)
        cache = model.make_cache(2)
        steps = [model(ids[:, :5], cache=cache).data]
        for t in range(5, 11):
            steps.append(model(ids[:, t:t + 1], cache=cache).data)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-5)
    assert "window=4" in repr(model.blocks[0].attn)
