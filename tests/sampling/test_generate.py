"""generate(): KV-cached decoding equals the uncached model, padding, seeds, stops, log-probs, best-of-N."""
import numpy as np
import pytest

from minifm.models import GPT, GPTConfig
from minifm.sampling.generate import GenerateOutput, generate, prepare_prompts


def make_model(vocab=23, block=48, seed=0, dtype="float64", init_std=0.4):
    config = GPTConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=16, seed=seed,
                       dtype=dtype, init_std=init_std)
    return GPT(config)


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def uncached_last_logits(model, ids):
    return model(np.asarray(ids)[None, :]).data[0, -1]  # (V,)


class CharTokenizer:
    """Decodes token i to the letter chr(97 + i % 26): enough to test stop strings."""

    def decode(self, ids):
        return "".join(chr(97 + int(i) % 26) for i in ids)


def test_greedy_is_argmax_of_the_uncached_forward_at_every_step(rng):
    model = make_model()
    prompt = rng.integers(0, 23, size=5).tolist()
    out = generate(model, [prompt], 15, return_logprobs=True)
    sequence = out.sequences[0]
    for step in range(15):
        context = sequence[:5 + step]
        logits = uncached_last_logits(model, context)
        assert sequence[5 + step] == int(np.argmax(logits))
        np.testing.assert_allclose(out.logprobs[0, step], log_softmax(logits)[sequence[5 + step]], atol=1e-9)


def test_cache_and_no_cache_give_the_same_tokens_and_logprobs(rng):
    model = make_model(seed=1)
    prompts = rng.integers(0, 23, size=(3, 4))
    for options in ({}, {"do_sample": True, "top_k": 5, "temperature": 0.8, "seed": 11}):
        cached = generate(model, prompts, 12, return_logprobs=True, **options)
        plain = generate(model, prompts, 12, return_logprobs=True, use_cache=False, **options)
        np.testing.assert_array_equal(cached.sequences, plain.sequences)
        np.testing.assert_allclose(cached.logprobs, plain.logprobs, atol=1e-9)


@pytest.mark.parametrize("do_sample", [False, True])
def test_left_padding_continues_like_the_unpadded_prompt(rng, do_sample):
    model = make_model(seed=2)
    prompts = [rng.integers(0, 23, size=n).tolist() for n in (2, 7, 4)]
    options = {"do_sample": do_sample, "seed": 5, "top_k": 0} if do_sample else {}
    batched = generate(model, prompts, 10, return_logprobs=True, **options)
    assert batched.sequences.shape == (3, 7 + 10)
    for row, prompt in enumerate(prompts):
        np.testing.assert_array_equal(batched.attention_mask[row, :7], [0] * (7 - len(prompt)) + [1] * len(prompt))
        alone = generate(model, [prompt], 10, return_logprobs=True)
        np.testing.assert_allclose(batched.logprobs[row], _logprobs_of(model, prompt, batched.new_tokens(row)),
                                   atol=1e-9)
        if not do_sample:
            assert batched.new_tokens(row) == alone.new_tokens(0)


def _logprobs_of(model, prompt, new_tokens):
    """Log-probabilities of `new_tokens` after `prompt` under the uncached model, one forward pass."""
    full = np.asarray(prompt + new_tokens)
    logits = model(full[None, :-1]).data[0]  # (T-1, V)
    positions = np.arange(len(prompt) - 1, len(full) - 1)
    return log_softmax(logits[positions])[np.arange(len(new_tokens)), full[len(prompt):]]


def test_same_seed_same_output_and_different_seed_differs(rng):
    model = make_model(seed=3, init_std=0.1)
    prompt = rng.integers(0, 23, size=(2, 3))
    first = generate(model, prompt, 20, do_sample=True, seed=7, top_k=0)
    again = generate(model, prompt, 20, do_sample=True, seed=7, top_k=0)
    other = generate(model, prompt, 20, do_sample=True, seed=8, top_k=0)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_eos_stop_sequence_and_stop_string_end_the_row_and_pad_the_rest(rng):
    model = make_model(seed=4)
    prompt = rng.integers(0, 23, size=4).tolist()
    free = generate(model, [prompt], 12, return_dict_in_generate=True).new_tokens(0)
    target = 5  # stop right after the 6th new token
    eos = free[target]
    first_eos = free.index(eos)
    out = generate(model, [prompt], 12, eos_token_id=eos, pad_token_id=0, return_dict_in_generate=True)
    assert out.new_tokens(0) == free[:first_eos + 1]
    assert np.all(out.sequences[0, 4 + first_eos + 1:] == 0)
    assert out.attention_mask[0].sum() == 4 + first_eos + 1

    pair = tuple(free[3:5])
    first_pair = next(i for i in range(1, len(free)) if tuple(free[i - 1:i + 1]) == pair)
    out = generate(model, [prompt], 12, stop=[list(pair)], return_dict_in_generate=True)
    assert out.new_tokens(0) == free[:first_pair + 1]

    tokenizer = CharTokenizer()
    text = tokenizer.decode(free)
    stop_string = text[2:4]
    first_string = next(i for i in range(len(free)) if stop_string in tokenizer.decode(free[:i + 1]))
    out = generate(model, [prompt], 12, stop=stop_string, tokenizer=tokenizer, return_dict_in_generate=True)
    assert out.new_tokens(0) == free[:first_string + 1]
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, [prompt], 3, stop="ab")


def test_finished_rows_do_not_stop_the_others(rng):
    model = make_model(seed=5)
    prompts = rng.integers(0, 23, size=(4, 3))
    free = generate(model, prompts, 10)
    eos = int(free[0, 3 + 1])  # row 0 stops after its second new token
    out = generate(model, prompts, 10, eos_token_id=eos, pad_token_id=22, return_dict_in_generate=True)
    for row in range(4):
        tokens = free[row, 3:].tolist()
        expected = tokens[:tokens.index(eos) + 1] if eos in tokens else tokens
        assert out.new_tokens(row) == expected


def test_sampling_draws_from_the_processed_distribution_first_token():
    scipy_stats = pytest.importorskip("scipy.stats")
    model = make_model(vocab=7, seed=6, init_std=0.3)
    prompt = np.array([[1, 2, 3]])
    logits = uncached_last_logits(model, prompt[0])
    probs = np.exp(log_softmax(logits / 0.7))
    n = 2000
    tokens = generate(model, np.repeat(prompt, n, axis=0), 1, do_sample=True, temperature=0.7, top_k=0,
                      seed=0)[:, -1]
    counts = np.bincount(tokens, minlength=7)
    assert scipy_stats.chisquare(counts, probs * n).pvalue > 1e-4


def test_num_return_sequences_rows_are_adjacent_and_seeded():
    model = make_model(seed=7, init_std=0.1)
    out = generate(model, [[1, 2], [3]], 6, do_sample=True, num_return_sequences=3, seed=1)
    assert out.shape == (6, 2 + 6)
    assert np.all(out[:3, :2] == [1, 2]) and np.all(out[3:, 1] == 3)


def test_logprobs_and_scores_shapes_and_values(rng):
    model = make_model(seed=8)
    out = generate(model, [[4, 5, 6]], 5, do_sample=True, temperature=2.0, top_k=3, seed=3, output_scores=True,
                   return_logprobs=True)
    assert isinstance(out, GenerateOutput)
    assert len(out.scores) == 5 and out.scores[0].shape == (1, 23)
    for step, processed in enumerate(out.scores):
        assert np.isfinite(processed).sum() == 3  # top_k=3 kept three tokens
        assert np.isfinite(processed[0, out.sequences[0, 3 + step]])
    np.testing.assert_allclose(out.logprobs[0], _logprobs_of(model, [4, 5, 6], out.new_tokens(0)), atol=1e-9)


def test_best_of_n_keeps_the_highest_reward_sample():
    model = make_model(seed=9, init_std=0.1)

    def reward(sequences, attention_mask):
        return (sequences[:, 2:] == 3).sum(axis=1).astype(float)

    all_samples = generate(model, [[1, 2]], 8, do_sample=True, num_return_sequences=6, seed=4)
    best = generate(model, [[1, 2]], 8, best_of=6, reward_model=reward, seed=4, return_dict_in_generate=True)
    rewards = reward(all_samples, None)
    assert best.sequences_scores[0] == rewards.max()
    assert any(np.array_equal(best.sequences[0], row) for row in all_samples[rewards == rewards.max()])


def test_prepare_prompts_and_bad_arguments():
    ids, mask = prepare_prompts([[5, 6, 7], [8]], pad_token_id=1)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [1, 1, 8]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])
    model = make_model()
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[1], []], 2)
    with pytest.raises(ValueError, match="block_size"):
        generate(model, [[1, 2]], 100)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [[1]], 2, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], 2, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="input_ids"):
        generate(model, [[1, 99]], 2)
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate(model, [[1]], 2, num_return_sequences=2)


def test_generate_keeps_the_training_mode_and_the_dropout_rng():
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=8, dropout=0.2))
    model.train()
    state = dict(model.rng.bit_generator.state)
    generate(model, [[1, 2]], 4)
    assert model.training
    assert model.rng.bit_generator.state == state


def test_encoder_decoder_greedy_matches_the_uncached_decoder_and_t5_greedy_decode(rng):
    from minifm.models import T5, T5Config

    model = T5(T5Config(vocab_size=19, block_size=32, n_layer=1, n_head=2, n_embd=16, dtype="float64",
                        init_std=0.4))
    prompts = rng.integers(1, 19, size=(2, 5))
    cached = generate(model, prompts, 7, return_logprobs=True)
    plain = generate(model, prompts, 7, return_logprobs=True, use_cache=False)
    np.testing.assert_array_equal(cached.sequences, plain.sequences)
    np.testing.assert_allclose(cached.logprobs, plain.logprobs, atol=1e-9)
    assert np.all(cached.sequences[:, 0] == model.config.decoder_start_token_id)
    np.testing.assert_array_equal(cached.sequences[:, 1:], model.greedy_decode(prompts, 7))
    sampled = generate(model, prompts, 7, do_sample=True, seed=2)
    np.testing.assert_array_equal(sampled, generate(model, prompts, 7, do_sample=True, seed=2))
