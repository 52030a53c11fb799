"""GPT's tied output head during batched decoding (one new token per row, graph recording off) runs on the
few-rows kernel (minifm.kernels.fewrows): the same logits as the recorded path's F.linear up to float32
rounding (another summation order), the same greedy tokens, a row's logits the same bits alone or in a
batch, and the general product wherever the kernel does not apply (float64, graph recording on, several
positions)."""
import numpy as np
import pytest

import minifm as mf
from minifm.kernels import fewrows
from minifm.models import GPT, GPTConfig
from minifm.sampling.generate import generate

from greedy_decoding import count_calls, greedy_with_cache  # tests/models/greedy_decoding.py


def small_gpt(dtype: str = "float32") -> GPT:
    config = GPTConfig(vocab_size=300, block_size=40, n_layer=2, n_head=4, n_embd=64, seed=3, dtype=dtype)
    return GPT(config).eval()




@pytest.fixture
def fewrows_calls(monkeypatch):
    """How many times fewrows.fewrows ran in gpt.py."""
    return count_calls(monkeypatch, fewrows, "fewrows")


@pytest.mark.parametrize("batch", [2, 5, 8])
def test_batched_head_matches_the_recorded_path(batch, fewrows_calls, rng):
    model = small_gpt()
    prompt = rng.integers(0, 300, size=(batch, 6))
    fast_tokens, fast_logits, _ = greedy_with_cache(model, prompt, 10, fast=True)
    if fewrows.applies(np.zeros((batch, 64), np.float32), model.wte.weight.data):
        assert fewrows_calls[0] == 10  # every decoding step's head, never the prompt's
    general_tokens, general_logits, _ = greedy_with_cache(model, prompt, 10, fast=False)
    scale = np.abs(general_logits).max()
    np.testing.assert_allclose(fast_logits, general_logits, rtol=0, atol=1e-5 * scale)
    np.testing.assert_array_equal(fast_tokens, general_tokens)


def test_a_row_has_the_same_logits_alone_or_in_a_batch(rng):
    """Batch 2 and batch 5 both take the kernel, whose summation order depends on the width only."""
    model = small_gpt()
    hidden = rng.standard_normal((5, 1, 64)).astype(np.float32)
    with mf.no_grad():
        together = model.logits_from_hidden(mf.Tensor(hidden)).data  # (5, 1, V)
        pairs = [model.logits_from_hidden(mf.Tensor(hidden[i:i + 2])).data for i in (0, 2)]
    np.testing.assert_array_equal(np.concatenate(pairs), together[:4])
    np.testing.assert_allclose(together[:, 0], hidden[:, 0] @ model.wte.weight.data.T, rtol=1e-5, atol=1e-5)


def test_general_product_where_the_kernel_does_not_apply(fewrows_calls, rng):
    model64 = small_gpt("float64")
    hidden = rng.standard_normal((3, 1, 64))
    with mf.no_grad():
        ours = model64.logits_from_hidden(mf.Tensor(hidden)).data
    np.testing.assert_allclose(ours, hidden @ model64.wte.weight.data.T, rtol=1e-12, atol=1e-12)
    model = small_gpt()
    hidden32 = rng.standard_normal((3, 4, 64)).astype(np.float32)
    with mf.no_grad():
        model.logits_from_hidden(mf.Tensor(hidden32))  # several positions: the prompt's product
    model.logits_from_hidden(mf.Tensor(hidden32[:, :1]))  # graph recording on
    assert fewrows_calls[0] == 0


def test_generate_batch_greedy_equals_the_recorded_path(rng):
    """generate at batch 4 continues each prompt as the recorded path would (same greedy tokens)."""
    model = small_gpt()
    prompt = rng.integers(0, 300, size=(4, 5))
    fast = generate(model, prompt, 8)
    general_tokens, _, _ = greedy_with_cache(model, prompt, 8, fast=False)
    np.testing.assert_array_equal(fast[:, 5:], general_tokens)
