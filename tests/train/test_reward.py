"""Tests of minifm.train.reward: the head reads the last non-padding token, padding cannot change a
reward, the gradient matches finite differences, and training learns a toy preference."""
import numpy as np
import pytest

from minifm.autograd.grad_mode import no_grad
from minifm.models import GPT, GPTConfig
from minifm.models.heads import RewardModel, last_token_index
from minifm.train import reward as rw

PAD = 0


def tiny_gpt(vocab=12, seed=0, dtype="float32"):
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=8, seed=seed, dtype=dtype))


def test_last_token_index_left_and_right_padding():
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(last_token_index(mask), [2, 4, 0])
    with pytest.raises(ValueError, match="no tokens"):
        last_token_index(np.array([[0, 0]]))


def test_reward_is_head_of_last_real_token_and_ignores_padding(rng):
    model = RewardModel(tiny_gpt(dtype="float64"))
    model.score_head.weight.data[...] = rng.normal(size=model.score_head.weight.shape)
    ids = np.array([[3, 4, 5, PAD, PAD], [6, 7, 8, 9, 10]])
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    rewards = model.score(ids, mask)
    with no_grad():
        _, hidden = model.backbone(ids, attention_mask=mask, return_hidden=True)
    weight, bias = model.score_head.weight.data, model.score_head.bias.data
    expected = [hidden.data[0, 2] @ weight[0] + bias[0], hidden.data[1, 4] @ weight[0] + bias[0]]
    np.testing.assert_allclose(rewards, expected, rtol=1e-10)
    # whatever sits in the padding slots, the reward of row 0 is the same as the unpadded sequence alone
    other = ids.copy()
    other[0, 3:] = [9, 9]
    np.testing.assert_allclose(model.score(other, mask)[0], rewards[0], rtol=1e-10)
    np.testing.assert_allclose(model.score(ids[:1, :3])[0], rewards[0], rtol=1e-10)


def test_reward_gradient_matches_finite_differences(rng):
    """d sum(v * rewards) / d parameter by backward() vs central differences (float64), through the
    head, the last-token gather and the whole backbone."""
    model = RewardModel(tiny_gpt(dtype="float64"))
    model.score_head.weight.data[...] = rng.normal(size=model.score_head.weight.shape)
    ids = np.array([[3, 4, 5, PAD], [6, 7, 8, 9]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    projection = rng.normal(size=2)
    (model(ids, mask) * projection).sum().backward()
    eps = 1e-6
    for name in ("score_head.weight", "backbone.wte.weight", "backbone.blocks.0.attn.q_proj.weight"):
        param = dict(model.named_parameters())[name]
        analytic = param.grad.copy()
        flat = param.data.reshape(-1)
        for index in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            original = flat[index]
            flat[index] = original + eps
            plus = float(model.score(ids, mask) @ projection)
            flat[index] = original - eps
            minus = float(model.score(ids, mask) @ projection)
            flat[index] = original
            assert analytic.reshape(-1)[index] == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8), name


def test_training_learns_a_toy_preference():
    """Sequences that end in token 7 are preferred over those ending in token 3."""
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(32):
        prefix = list(rng.integers(1, 10, size=3))
        pairs.append({"chosen": prefix + [7], "rejected": prefix + [3], "prompt_length": 3, "margin": 0.0})
    model = RewardModel(tiny_gpt(seed=2))
    config = rw.RewardConfig(learning_rate=1e-2, max_steps=40, per_device_train_batch_size=16, warmup_steps=2,
                             center_rewards_coefficient=0.01)
    rw.train_reward_model_encoded(model, pairs, PAD, config)
    held_out = [list(rng.integers(1, 10, size=3)) for _ in range(20)]
    chosen = model.score(np.array([h + [7] for h in held_out]))
    rejected = model.score(np.array([h + [3] for h in held_out]))
    assert np.mean(chosen > rejected) == 1.0
    # the centring term keeps the rewards near zero mean
    assert abs(np.mean(np.concatenate([chosen, rejected]))) < np.std(np.concatenate([chosen, rejected]))


def test_best_of_n_keeps_the_highest_reward_sample():
    from minifm.sampling.best_of_n import best_of_n, best_of_n_kl_bound

    policy = tiny_gpt(seed=3)

    def count_of_token_5(sequences, attention_mask):
        return np.sum((sequences == 5) & (attention_mask == 1), axis=1).astype(np.float64)

    prompts = [[1, 2], [3, 4, 6]]
    out = best_of_n(policy, count_of_token_5, prompts, n=6, max_new_tokens=5, seed=0)
    assert out.sequences.shape[0] == 2
    np.testing.assert_array_equal(out.sequences_scores, out.extras["all_rewards"].max(axis=1))
    np.testing.assert_array_equal(count_of_token_5(out.sequences, out.attention_mask), out.sequences_scores)
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(4) == pytest.approx(np.log(4) - 0.75)
    with pytest.raises(ValueError, match="n must be"):
        best_of_n(policy, count_of_token_5, prompts, n=0)
