"""Beam search: one beam is greedy, results are sorted by score, enough beams find the brute-force optimum."""
import itertools

import numpy as np
import pytest

from minifm.models import GPT, GPTConfig
from minifm.sampling.beam import beam_search
from minifm.sampling.generate import DecoderStepper, StopChecker, generate


def make_model(vocab, seed=0):
    return GPT(GPTConfig(vocab_size=vocab, block_size=24, n_layer=2, n_head=2, n_embd=16, seed=seed,
                         dtype="float64", init_std=0.5))


def log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sum_logprob(model, prompt, continuation):
    full = np.asarray(list(prompt) + list(continuation))
    logp = log_softmax(model(full[None, :-1]).data[0])  # (T-1, V)
    rows = np.arange(len(prompt) - 1, len(full) - 1)
    return float(logp[rows, full[len(prompt):]].sum())


def brute_force(model, prompt, vocab, length, eos=None, length_penalty=1.0):
    """Every continuation of up to `length` tokens (ending at eos or at the length), best score first."""
    scored = []
    for n in range(1, length + 1):
        for tokens in itertools.product(range(vocab), repeat=n):
            if eos is not None and eos in tokens[:-1]:
                continue
            if n < length and (eos is None or tokens[-1] != eos):
                continue
            scored.append((sum_logprob(model, prompt, tokens) / n ** length_penalty, list(tokens)))
    scored.sort(key=lambda entry: -entry[0])
    return scored


def test_one_beam_equals_greedy(rng):
    model = make_model(17)
    prompts = rng.integers(0, 17, size=(3, 4))
    greedy = generate(model, prompts, 9)
    ids = np.asarray(prompts)
    beams = beam_search(DecoderStepper(model, 4 + 9), ids, np.ones_like(ids), num_beams=1, max_new_tokens=9,
                        stopper=StopChecker())
    np.testing.assert_array_equal(beams.sequences, greedy)


def test_enough_beams_match_brute_force_without_eos():
    vocab, length, prompt = 3, 3, [1, 0]
    model = make_model(vocab, seed=1)
    expected = brute_force(model, prompt, vocab, length)
    out = generate(model, [prompt], length, num_beams=9, num_return_sequences=5, return_dict_in_generate=True)
    for row in range(5):
        assert out.new_tokens(row) == expected[row][1]
        np.testing.assert_allclose(out.sequences_scores[row], expected[row][0], atol=1e-9)
    assert np.all(np.diff(out.sequences_scores) <= 0)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0, -1.0])
def test_enough_beams_match_brute_force_with_eos_and_length_penalty(length_penalty):
    vocab, length, prompt, eos = 3, 3, [2], 0
    model = make_model(vocab, seed=2)
    expected = brute_force(model, prompt, vocab, length, eos=eos, length_penalty=length_penalty)
    out = generate(model, [prompt], length, num_beams=27, num_return_sequences=4, eos_token_id=eos,
                   length_penalty=length_penalty, return_dict_in_generate=True, return_logprobs=True)
    for row in range(4):
        assert out.new_tokens(row) == expected[row][1]
        np.testing.assert_allclose(out.sequences_scores[row], expected[row][0], atol=1e-9)
        np.testing.assert_allclose(out.logprobs[row, :out.num_generated[row]].sum(),
                                   sum_logprob(model, prompt, out.new_tokens(row)), atol=1e-9)


def test_beam_scores_are_sorted_and_recomputable_for_a_batch(rng):
    model = make_model(13, seed=3)
    prompts = [rng.integers(0, 13, size=n).tolist() for n in (3, 5)]
    out = generate(model, prompts, 6, num_beams=4, num_return_sequences=4, eos_token_id=2, length_penalty=1.3,
                   return_dict_in_generate=True)
    for b, prompt in enumerate(prompts):
        rows = range(b * 4, b * 4 + 4)
        scores = out.sequences_scores[list(rows)]
        assert np.all(np.diff(scores) <= 0)
        for row in rows:
            tokens = out.new_tokens(row)
            recomputed = sum_logprob(model, prompt, tokens) / len(tokens) ** 1.3
            np.testing.assert_allclose(out.sequences_scores[row], recomputed, atol=1e-9)


def test_beam_search_is_at_least_as_likely_as_greedy(rng):
    model = make_model(11, seed=4)
    prompt = rng.integers(0, 11, size=3).tolist()
    greedy = generate(model, [prompt], 5)[0, 3:].tolist()
    beam = generate(model, [prompt], 5, num_beams=6, length_penalty=0.0, return_dict_in_generate=True)
    assert beam.sequences_scores[0] >= sum_logprob(model, prompt, greedy) - 1e-9


def test_beam_sampling_is_refused():
    model = make_model(5)
    with pytest.raises(ValueError, match="beam sampling"):
        generate(model, [[1]], 2, num_beams=2, do_sample=True)
