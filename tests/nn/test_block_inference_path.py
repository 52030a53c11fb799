"""The no-grad inference fast path of TransformerBlock gives the same numbers as the recorded path.

"The same numbers" means bit for bit: the fast path runs the general path's Function forwards on raw
arrays, in the same order. Checked on drawn small GPT configs covering every option the fast path
handles (RoPE, SwiGLU and both GELU MLPs, GQA/MQA, RMSNorm/LayerNorm, biases and q/k/v-only biases),
in float32 and float64, with and without a KV cache, with and without left padding.
"""
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifm as mf
from minifm.models import GPT, GPTConfig
from minifm.nn.attention import KVCache
from minifm.nn.block import TransformerBlock


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_cached_no_grad_steps_equal_recorded_forward(norm, n_kv_head, rng):
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, n_kv_head=n_kv_head, norm=norm)
    model = GPT(config)
    ids = rng.integers(0, 50, size=(3, 10))
    recorded = model(ids).data  # graph recording on: the general path, (B, T, V)
    block = model.blocks[0]
    assert not block._can_run_inference_path(mf.Tensor(np.zeros((1, 1, 32), np.float32), requires_grad=True))
    with mf.no_grad():
        assert block._can_run_inference_path(mf.Tensor(np.zeros((1, 1, 32), np.float32)))
        np.testing.assert_allclose(model(ids).data, recorded, rtol=0, atol=0)
        cache = KVCache(config.n_layer, 3, config.n_kv_head or config.n_head, 8, 16)
        steps = [model(ids[:, :6], cache=cache).data[:, -1]]
        for t in range(6, 10):
            steps.append(model(ids[:, t:t + 1], cache=cache).data[:, -1])
    np.testing.assert_allclose(np.stack(steps[1:], 1), recorded[:, 6:10], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(steps[0], recorded[:, 5], rtol=1e-4, atol=1e-5)


def test_llama_style_block_takes_the_fast_path():
    """RoPE + SwiGLU + GQA + RMSNorm without biases (the SmolLM2 / Llama layout) runs on raw arrays."""
    config = GPTConfig(vocab_size=40, block_size=32, n_layer=1, n_head=6, n_kv_head=2, n_embd=48, mlp="swiglu",
                       pos="rope", norm="rmsnorm", bias=False)
    block = GPT(config).blocks[0]
    with mf.no_grad():
        assert block._can_run_inference_path(mf.Tensor(np.zeros((1, 1, 48), np.float32)))


@st.composite
def gpt_cases(draw):
    """(config, ids (B, T), attention_mask (B, T) or None, prompt length) for a small drawn GPT."""
    kv_heads = draw(st.sampled_from([1, 2]))
    n_head = kv_heads * draw(st.sampled_from([1, 2, 3]))
    head_dim = draw(st.sampled_from([4, 8]))
    bias = draw(st.booleans())
    config = GPTConfig(
        vocab_size=31, block_size=24, n_layer=2, n_head=n_head, n_kv_head=kv_heads, n_embd=n_head * head_dim,
        pos=draw(st.sampled_from(["learned", "rope"])), norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
        mlp=draw(st.sampled_from(["gelu", "gelu_tanh", "swiglu"])), bias=bias,
        qkv_bias=draw(st.sampled_from([None, not bias])), mlp_hidden=draw(st.sampled_from([8, 20])),
        rope_base=draw(st.sampled_from([10000.0, 100000.0])), dtype=draw(st.sampled_from(["float32", "float64"])),
        seed=draw(st.integers(0, 3)),
    )
    batch, steps = draw(st.integers(1, 5)), draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**16))
    ids = np.random.default_rng(seed).integers(0, config.vocab_size, size=(batch, steps))
    mask = None
    if draw(st.booleans()):  # left padding: each row starts after 0..steps-2 padding tokens
        mask = np.ones((batch, steps), dtype=np.int64)
        for row in range(batch):
            mask[row, :draw(st.integers(0, steps - 2))] = 0
    prompt = draw(st.integers(1, steps - 1))
    return config, ids, mask, prompt


def _run(model, ids, mask, prompt, use_cache):
    """Logits (B, T, V) for the whole sequence: one forward, or a cached prompt then one step per token."""
    if not use_cache:
        return model(ids, attention_mask=mask).data
    cache = model.make_cache(ids.shape[0], ids.shape[1])
    pieces = [model(ids[:, :prompt], attention_mask=None if mask is None else mask[:, :prompt], cache=cache).data]
    for t in range(prompt, ids.shape[1]):
        step_mask = None if mask is None else mask[:, :t + 1]
        pieces.append(model(ids[:, t:t + 1], attention_mask=step_mask, cache=cache).data)
    return np.concatenate(pieces, axis=1)


@given(case=gpt_cases(), use_cache=st.booleans())
def test_fast_path_equals_general_path_exactly(case, use_cache):
    config, ids, mask, prompt = case
    model = GPT(config)
    general = _run(model, ids, mask, prompt, use_cache)  # recording on: every block takes the general path
    # the one-token float32 step and head of minifm.kernels.decode_step sum in another order (equal up to
    # rounding: tests/models/test_decode_step_gpt.py); here the rest of the fast path must be bit-exact
    with mf.no_grad(), mock.patch.object(TransformerBlock, "_can_run_decode_step", return_value=False), \
            mock.patch("minifm.models.gpt.is_grad_enabled", return_value=True):
        assert all(block._can_run_inference_path(mf.Tensor(np.zeros((1, 1, config.n_embd), config.dtype)))
                   for block in model.blocks)
        fast = _run(model, ids, mask, prompt, use_cache)
    assert fast.dtype == np.dtype(config.dtype)
    np.testing.assert_array_equal(fast, general)


@given(case=gpt_cases())
def test_cached_decoding_matches_one_forward(case):
    """The fast path's KV-cached steps give (to rounding) the logits of one forward over the whole sequence."""
    config, ids, mask, prompt = case
    model = GPT(config)
    with mf.no_grad():
        whole = _run(model, ids, mask, prompt, use_cache=False)
        stepped = _run(model, ids, mask, prompt, use_cache=True)
    real = np.ones(ids.shape, dtype=bool) if mask is None else mask.astype(bool)
    tolerance = 1e-4 if config.dtype == "float32" else 1e-10
    np.testing.assert_allclose(stepped[real], whole[real], rtol=tolerance, atol=tolerance)
