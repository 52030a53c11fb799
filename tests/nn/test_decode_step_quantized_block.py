"""The one-token decoding step of a block whose seven projections are QuantizedLinear (TransformerBlock's fast
path -> minifm.kernels.decode_step.decode_quantized_layer): the same logits, caches and greedy tokens as the
general path (one quantized product per call through minifm.kernels.quantized), on tiny Llama-style models
in Q8_0, Q4_0 and Q4_1 and on SmolLM2-135M-Instruct's own Q4_1 file; the same bits on 1, 2 and 3 threads;
a block mixing float and quantized projections, or with a bias, takes the general path with its numbers.

Tolerances. Float32 inputs (quantize_input off): the fused step's products have the quantized kernel's bits
(the same block-dot loops, tests/kernels/test_decode_step_quantized_kernel.py), and its norms, RoPE and
attention sum in another order than the general path's kernels, so logits agree to 1e-5 of the largest
(tiny) and 1e-4 (SmolLM2, 30 layers; measured ~2e-6), caches to 1e-5, and the greedy tokens are equal.
Int8 inputs: a product's input rounded to int8 is a step function of it, so a float32 rounding difference
upstream can move one input by one int8 step, dx = max|block| / 127, which moves every output of that
product by dx |w| (a step in a normed input touches all of q, k and v). Measured, each block run both ways
on the same input and cache: tiny models 1e-7 of the largest output (1e-4 where a step happened), SmolLM2
1.6e-4 of the largest and 7.7e-4 of the RMS at worst over its 30 blocks; greedy continuations then drift
apart after some tokens, as between any two summation orders under int8 rounding. Asserted: 2e-3 of the
block's largest value and 1e-2 of its RMS; and on SmolLM2 the two int8 paths are equally far (within 2x)
from the float32-input model (the int8 rounding's own error, ~1% of the hidden state's RMS).
"""
import numpy as np
import pytest

import minifm as mf
from minifm.autograd.tensor import Tensor
from minifm.kernels import decode_step, threads
from minifm.models import GPT, GPTConfig
from minifm.nn import Linear
from minifm.nn.block import TransformerBlock
from minifm.nn.quantized import QuantizedLinear, convert_linears, set_int8_activations
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained

FORMATS = ("q8_0", "q4_0", "q4_1")


def tiny_quantized_llama(weight_type: str, seed: int = 0, **overrides) -> GPT:
    """A tiny Llama-style GPT (widths in whole blocks of 32) with every Linear stored as `weight_type`."""
    config = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, mlp="swiglu",
                  pos="rope", norm="rmsnorm", bias=False, mlp_hidden=96, seed=seed)
    config.update(overrides)
    model = GPT(GPTConfig(**config)).eval()
    convert_linears(model, weight_type)
    return model


@pytest.fixture
def quantized_step_calls(monkeypatch):
    """How many times decode_step.decode_quantized_layer ran (the wrapped function still runs)."""
    calls = [0]
    original = decode_step.decode_quantized_layer

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(decode_step, "decode_quantized_layer", counted)
    return calls


def greedy(model: GPT, prompt: np.ndarray, steps: int, fast: bool):
    """(tokens (steps,), logits (steps, V), cache) of a greedy KV-cached loop on the fast path (graph recording
    off) or the general autograd path (recording on)."""
    cache = model.make_cache(1, prompt.shape[1] + steps)
    with mf.no_grad():
        logits = model(prompt, cache=cache).data[0, -1]  # (V,)
    tokens, seen = [], []
    for _ in range(steps):
        token = int(logits.argmax())
        tokens.append(token)
        if fast:
            with mf.no_grad():
                logits = model(np.array([[token]]), cache=cache).data[0, -1]
        else:
            logits = model(np.array([[token]]), cache=cache).data[0, -1]
        seen.append(logits)
    return np.array(tokens), np.stack(seen), cache


@pytest.mark.parametrize("weight_type", FORMATS)
def test_tiny_quantized_decoding_equals_the_general_path(weight_type, quantized_step_calls):
    model = tiny_quantized_llama(weight_type)
    assert all(type(block.attn.q_proj) is QuantizedLinear for block in model.blocks)
    prompt = np.random.default_rng(0).integers(0, 64, size=(1, 5))
    fast_tokens, fast_logits, fast_cache = greedy(model, prompt, 12, fast=True)
    assert quantized_step_calls[0] == 12 * 2  # every step, every layer
    slow_tokens, slow_logits, slow_cache = greedy(model, prompt, 12, fast=False)
    assert quantized_step_calls[0] == 12 * 2  # the general path never calls it
    np.testing.assert_array_equal(fast_tokens, slow_tokens)
    np.testing.assert_allclose(fast_logits, slow_logits, rtol=0, atol=1e-5 * np.abs(slow_logits).max())
    for layer in range(2):
        np.testing.assert_allclose(fast_cache.keys[layer], slow_cache.keys[layer], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fast_cache.values[layer], slow_cache.values[layer], rtol=1e-5, atol=1e-6)


def _block_outputs_both_ways(model: GPT, prompt: np.ndarray, token: int):
    """[(fast, general)] outputs of every block for one decoded token, each block run both ways on the same
    input (the general path's output of the block before) and the same cache state."""
    pairs = []
    with mf.no_grad():
        cache = model.make_cache(1, prompt.shape[1] + 1)
        model(prompt, cache=cache)
        x = model.wte(np.array([[token]]))  # (1, 1, E)
        for index, block in enumerate(model.blocks):
            saved = cache.keys[index].copy(), cache.values[index].copy()
            fast = block(x, cache=cache, layer_index=index).data  # the fused step (the decode step applies)
            cache.keys[index][...], cache.values[index][...] = saved
            original = TransformerBlock._can_run_decode_step
            TransformerBlock._can_run_decode_step = lambda *args: False
            try:
                slow = block(x, cache=cache, layer_index=index).data  # the general no-grad arithmetic
            finally:
                TransformerBlock._can_run_decode_step = original
            pairs.append((fast, slow))
            x = Tensor._from_array(slow)
    return pairs


def _assert_int8_blocks_agree(pairs):
    for fast, slow in pairs:
        gap = np.abs(fast - slow)
        assert gap.max() <= 2e-3 * np.abs(slow).max(), (gap.max(), np.abs(slow).max())
        assert np.sqrt(np.mean(gap ** 2)) <= 1e-2 * np.sqrt(np.mean(slow ** 2))


@pytest.mark.parametrize("weight_type", FORMATS)
def test_tiny_int8_activations_blocks_agree_with_the_general_path(weight_type, quantized_step_calls):
    model = tiny_quantized_llama(weight_type, seed=1)
    set_int8_activations(model, True)
    prompt = np.random.default_rng(1).integers(0, 64, size=(1, 6))
    _assert_int8_blocks_agree(_block_outputs_both_ways(model, prompt, 7))
    assert quantized_step_calls[0] == 2


@pytest.mark.parametrize("case", ["one float projection", "bias", "mixed input rounding"])
def test_mixed_blocks_take_a_clean_path(case, quantized_step_calls):
    """A float Linear among the quantized projections, or a bias: the general path, with its numbers. Input
    rounding set on some projections only: the fused step, rounding exactly those products' inputs."""
    model = tiny_quantized_llama("q8_0", seed=2)
    block = model.blocks[1]
    if case == "one float projection":
        block.mlp.up_proj = block.mlp.up_proj.to_linear()
        assert type(block.mlp.up_proj) is Linear
    elif case == "bias":
        block.attn.o_proj.bias = mf.nn.Parameter(np.full(64, 0.1, dtype=np.float32), requires_grad=False)
    else:
        block.attn.k_proj.quantize_input = block.mlp.down_proj.quantize_input = True
    prompt = np.random.default_rng(2).integers(0, 64, size=(1, 5))
    fast_tokens, fast_logits, _ = greedy(model, prompt, 6, fast=True)
    expected_calls = 6 * 2 if case == "mixed input rounding" else 6  # block 1 falls back in the other cases
    assert quantized_step_calls[0] == expected_calls
    slow_tokens, slow_logits, _ = greedy(model, prompt, 6, fast=False)
    if case == "mixed input rounding":
        return _assert_int8_blocks_agree(_block_outputs_both_ways(model, prompt, int(fast_tokens[0])))
    np.testing.assert_array_equal(fast_tokens, slow_tokens)
    np.testing.assert_allclose(fast_logits, slow_logits, rtol=0, atol=1e-5 * np.abs(slow_logits).max())


@pytest.mark.parametrize("int8", [False, True])
def test_same_bits_on_one_two_and_three_threads(int8):
    model = tiny_quantized_llama("q4_1", seed=3, n_embd=128, mlp_hidden=384, n_head=4, n_kv_head=2)
    set_int8_activations(model, int8)
    prompt = np.random.default_rng(3).integers(0, 64, size=(1, 5))
    previous = threads.num_threads()
    runs = []
    try:
        for count in (1, 2, 3):
            threads.set_num_threads(count)
            tokens, logits, cache = greedy(model, prompt, 6, fast=True)
            runs.append((tokens, logits, cache.keys[1].copy(), cache.values[1].copy()))
    finally:
        threads.set_num_threads(previous)
    for run in runs[1:]:
        for ours, first in zip(run, runs[0]):
            np.testing.assert_array_equal(ours, first)


@pytest.fixture(scope="module")
def smollm2_q4_1(smollm2_gguf):
    return GPT.from_pretrained(smollm2_gguf).eval()  # the file's own Q4_1 blocks (and Q8_0 embedding)


def _chat_prompt(path) -> np.ndarray:
    tokenizer = tokenizer_from_pretrained(path)
    messages = [{"role": "user", "content": "Name three rivers in Europe and say which sea each one flows into."}]
    return np.array([tokenizer.apply_chat_template(messages, add_generation_prompt=True)])  # (1, T)


def test_smollm2_quantized_greedy_decoding_equals_the_general_path(smollm2_q4_1, smollm2_gguf, quantized_step_calls):
    model = smollm2_q4_1
    model.use_int8_activations(False)
    assert all(type(block.mlp.down_proj) is QuantizedLinear for block in model.blocks)
    prompt = _chat_prompt(smollm2_gguf)
    fast_tokens, fast_logits, fast_cache = greedy(model, prompt, 16, fast=True)
    assert quantized_step_calls[0] == 16 * model.config.n_layer
    slow_tokens, slow_logits, slow_cache = greedy(model, prompt, 16, fast=False)
    np.testing.assert_array_equal(fast_tokens, slow_tokens)
    gap = np.abs(fast_logits - slow_logits).max() / np.abs(slow_logits).max()
    assert gap <= 1e-4, gap
    for layer in (0, model.config.n_layer - 1):
        scale = np.abs(slow_cache.keys[layer]).max()
        np.testing.assert_allclose(fast_cache.keys[layer], slow_cache.keys[layer], rtol=0, atol=1e-4 * scale)


def test_smollm2_int8_activations_blocks_agree_with_the_general_path(smollm2_q4_1, smollm2_gguf):
    model = smollm2_q4_1
    prompt = _chat_prompt(smollm2_gguf)
    try:
        model.use_int8_activations(True)
        int8_pairs = _block_outputs_both_ways(model, prompt, 504)
    finally:
        model.use_int8_activations(False)
    _assert_int8_blocks_agree(int8_pairs)
    exact = [slow for _, slow in _block_outputs_both_ways(model, prompt, 504)]
    last_exact = exact[-1]
    fast_error = np.sqrt(np.mean((int8_pairs[-1][0] - last_exact) ** 2))
    slow_error = np.sqrt(np.mean((int8_pairs[-1][1] - last_exact) ** 2))
    assert 0.5 * slow_error <= fast_error <= 2 * slow_error, (fast_error, slow_error)
