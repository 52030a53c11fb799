"""GPT's one-token decoding step (TransformerBlock's no-grad fast path -> minifm.kernels.decode_step, and the
streaming product for the tied head): the same logits, caches and greedy tokens as the general (autograd)
path, on a tiny Llama-style model and on SmolLM2-135M-Instruct (float32), and the general path where the
step does not apply (a padding mask, two sequences, a GELU model).

Measured on SmolLM2 (float32, 24 greedy tokens after a chat prompt): the same tokens; logits differ from the
general path's by at most ~1e-5 of the largest logit (float32 sums in another order). Asserted: 1e-4."""
import numpy as np
import pytest

from minifm.kernels import decode_step
from minifm.models import GPT, GPTConfig
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained

from greedy_decoding import count_calls, greedy_with_cache  # tests/models/greedy_decoding.py


def tiny_llama(seed: int = 0, **overrides) -> GPT:
    config = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=48, mlp="swiglu",
                  pos="rope", norm="rmsnorm", bias=False, mlp_hidden=80, seed=seed)
    config.update(overrides)
    return GPT(GPTConfig(**config)).eval()




@pytest.fixture
def decode_step_calls(monkeypatch):
    """How many times decode_step.decode_layer ran."""
    return count_calls(monkeypatch, decode_step, "decode_layer")


def test_tiny_llama_decoding_equals_the_general_path(decode_step_calls):
    model = tiny_llama()
    prompt = np.random.default_rng(0).integers(0, 64, size=(1, 5))
    fast_tokens, fast_logits, fast_cache = greedy_with_cache(model, prompt, 12, fast=True)
    assert decode_step_calls[0] == 12 * 2  # every step, every layer
    slow_tokens, slow_logits, slow_cache = greedy_with_cache(model, prompt, 12, fast=False)
    assert decode_step_calls[0] == 12 * 2  # the general path never calls it
    np.testing.assert_array_equal(fast_tokens, slow_tokens)
    scale = np.abs(slow_logits).max()
    np.testing.assert_allclose(fast_logits, slow_logits, rtol=0, atol=1e-5 * scale)
    for layer in range(2):
        np.testing.assert_allclose(fast_cache.keys[layer], slow_cache.keys[layer], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fast_cache.values[layer], slow_cache.values[layer], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["padding mask", "two sequences", "gelu model", "float64"])
def test_other_cases_take_the_general_path_with_the_same_numbers(case, decode_step_calls):
    rng = np.random.default_rng(1)
    mask = None
    if case == "gelu model":
        model = tiny_llama(mlp="gelu", norm="layernorm")
    elif case == "float64":
        model = tiny_llama(dtype="float64")
    else:
        model = tiny_llama()
    prompt = rng.integers(0, 64, size=(2 if case == "two sequences" else 1, 5))
    if case == "padding mask":
        mask = np.array([[0, 1, 1, 1, 1]])
    fast_tokens, fast_logits, _ = greedy_with_cache(model, prompt, 6, fast=True, attention_mask=mask)
    assert decode_step_calls[0] == 0
    slow_tokens, slow_logits, _ = greedy_with_cache(model, prompt, 6, fast=False, attention_mask=mask)
    np.testing.assert_array_equal(fast_tokens, slow_tokens)
    np.testing.assert_allclose(fast_logits, slow_logits, rtol=1e-5, atol=1e-5 * np.abs(slow_logits).max())


def test_smollm2_greedy_decoding_equals_the_general_path(smollm2_gguf, decode_step_calls):
    model = GPT.from_pretrained(smollm2_gguf, dtype="float32").eval()
    tokenizer = tokenizer_from_pretrained(smollm2_gguf)
    messages = [{"role": "user", "content": "Name three rivers in Europe and say which sea each one flows into."}]
    prompt = np.array([tokenizer.apply_chat_template(messages, add_generation_prompt=True)])  # (1, T)
    fast_tokens, fast_logits, _ = greedy_with_cache(model, prompt, 24, fast=True)
    assert decode_step_calls[0] == 24 * model.config.n_layer
    slow_tokens, slow_logits, _ = greedy_with_cache(model, prompt, 24, fast=False)
    np.testing.assert_array_equal(fast_tokens, slow_tokens)
    gap = np.abs(fast_logits - slow_logits).max() / np.abs(slow_logits).max()
    assert gap <= 1e-4, gap
