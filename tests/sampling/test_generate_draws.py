"""generate's sampling loop draws exactly as `sample` does (one uniform per row from the seeded Generator,
inverse CDF over the processed logits), though it processes the logits once instead of twice: the same
tokens as a hand-written KV-cached loop calling process_logits + sample; process_logits returns a new
array whether or not a repetition penalty or temperature applies."""
import numpy as np
import pytest

import minifm as mf
from minifm.models import GPT, GPTConfig
from minifm.sampling import process_logits, sample
from minifm.sampling.generate import generate


def _manual_sampling(model: GPT, prompt: np.ndarray, steps: int, seed: int, **options) -> np.ndarray:
    """New tokens (B, steps) of a KV-cached loop that calls process_logits then sample, as generate did."""
    rng = np.random.default_rng(seed)
    cache = model.make_cache(prompt.shape[0], prompt.shape[1] + steps)
    context = prompt
    with mf.no_grad():
        logits = model(prompt, cache=cache).data[:, -1]  # (B, V)
        chosen = []
        for _ in range(steps):
            processed = process_logits(logits, input_ids=context, **options)  # (B, V)
            token = sample(processed, rng)  # (B,)
            chosen.append(token)
            context = np.concatenate([context, token[:, None]], axis=1)
            logits = model(token[:, None], cache=cache).data[:, -1]
    return np.stack(chosen, axis=1)


@pytest.mark.parametrize("options", [dict(top_k=0, top_p=0.9), dict(top_k=20, temperature=0.7),
                                     dict(top_k=0, repetition_penalty=1.3, min_p=0.05)])
@pytest.mark.parametrize("batch", [1, 8])
def test_generate_samples_the_tokens_of_process_then_sample(options, batch, rng):
    model = GPT(GPTConfig(vocab_size=200, block_size=32, n_layer=2, n_head=2, n_embd=32, seed=1)).eval()
    prompt = rng.integers(0, 200, size=(batch, 4))
    ours = generate(model, prompt, 12, do_sample=True, seed=7, **options)[:, 4:]
    theirs = _manual_sampling(model, prompt, 12, seed=7, **options)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("options", [{}, dict(top_p=0.5), dict(temperature=2.0), dict(repetition_penalty=1.5)])
def test_process_logits_returns_a_new_array(options, rng):
    logits = rng.standard_normal((3, 50)).astype(np.float32)
    before = logits.copy()
    ids = rng.integers(0, 50, size=(3, 6))
    out = process_logits(logits, input_ids=ids, **options)
    assert out is not logits and not np.shares_memory(out, logits)
    out[...] = 0.0
    np.testing.assert_array_equal(logits, before)
