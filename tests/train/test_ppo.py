"""Tests of minifm.train.ppo: the per-token reward layout (KL penalty everywhere, score at the last
token), GAE + whitening wiring, and short deterministic PPO and GRPO runs on a bandit task where a
tiny GPT must learn to prefer the rewarded token."""
import numpy as np
import pytest

from minifm.autograd.grad_mode import no_grad
from minifm.models import GPT, GPTConfig
from minifm.train import ppo, rl_math

VOCAB, PROMPT, STOP, PAD, GOOD = 8, 1, 7, 0, 5


def tiny_gpt(seed=0):
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=16, seed=seed))


def bandit_reward(sequences, attention_mask):
    """1 when the first response token (column 1, after the one-token prompt) is GOOD."""
    return (sequences[:, 1] == GOOD).astype(np.float64)


def good_token_probability(policy) -> float:
    with no_grad():
        logits = policy(np.array([[PROMPT]])).data[0, -1].astype(np.float64)
    probs = np.exp(logits - logits.max())
    return float(probs[GOOD] / probs.sum())


def make_trainer(**overrides):
    config = ppo.PPOConfig(**{"learning_rate": 3e-2, "batch_size": 16, "num_ppo_epochs": 2, "num_mini_batches": 2,
                              "response_length": 1, "temperature": 1.0, "kl_coef": 0.01, "seed": 0, **overrides})
    value = ppo.ValueModel(tiny_gpt(seed=1)) if config.advantage_estimator == "gae" else None
    return ppo.PPOTrainer(config, tiny_gpt(), bandit_reward, [[PROMPT]], value_model=value, stop_token_id=STOP,
                          pad_token_id=PAD)


def test_rewards_hold_kl_penalty_per_token_and_score_at_the_last_token(rng):
    trainer = make_trainer(kl_coef=0.3, kl_estimator="k3", gamma=0.9, lam=0.7)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=float)
    batch = {"response_mask": mask, "logprobs": rng.normal(-2, 0.5, size=(2, 4)),
             "ref_logprobs": rng.normal(-2, 0.5, size=(2, 4)), "values": rng.normal(size=(2, 4)),
             "scores": np.array([1.5, -0.5])}
    out = trainer.advantages(batch)
    log_ratio = batch["ref_logprobs"] - batch["logprobs"]
    kl = (np.exp(log_ratio) - 1 - log_ratio) * mask
    expected_rewards = -0.3 * kl
    expected_rewards[0, 2] += 1.5
    expected_rewards[1, 1] -= 0.5
    np.testing.assert_allclose(out["rewards"], expected_rewards, rtol=1e-12)
    advantages, returns = rl_math.gae(expected_rewards, batch["values"], 0.9, 0.7, mask)
    np.testing.assert_allclose(out["returns"], returns, rtol=1e-12)
    np.testing.assert_allclose(out["advantages"], rl_math.whiten(advantages, mask) * mask, rtol=1e-12)


def test_grpo_advantages_are_group_relative_scores():
    trainer = make_trainer(advantage_estimator="grpo", num_generations=2, batch_size=2)
    mask = np.array([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=float)
    batch = {"response_mask": mask, "logprobs": np.zeros((4, 2)), "ref_logprobs": np.zeros((4, 2)),
             "values": np.zeros((4, 2)), "scores": np.array([1.0, 0.0, 2.0, 2.0])}
    out = trainer.advantages(batch)
    group = rl_math.group_relative_advantages(batch["scores"], 2)
    np.testing.assert_allclose(out["advantages"], group[:, None] * mask)
    assert out["rewards"] is None


def test_config_validation():
    with pytest.raises(ValueError, match="kl_estimator"):
        ppo.PPOConfig(kl_estimator="k2")
    with pytest.raises(ValueError, match="num_generations"):
        ppo.PPOConfig(advantage_estimator="grpo", num_generations=1)
    with pytest.raises(ValueError, match="value_model"):
        ppo.PPOTrainer(ppo.PPOConfig(response_length=1), tiny_gpt(), bandit_reward, [[PROMPT]], stop_token_id=STOP,
                       pad_token_id=PAD)
    with pytest.raises(ValueError, match="block_size"):
        make_trainer(response_length=24)


@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_short_run_learns_the_rewarded_token(estimator):
    overrides = {"advantage_estimator": estimator}
    if estimator == "grpo":
        overrides.update(num_generations=4, batch_size=4)
    trainer = make_trainer(**overrides)
    before = good_token_probability(trainer.policy)
    history = trainer.train(num_iterations=12)
    after = good_token_probability(trainer.policy)
    assert before < 0.25
    assert after > 0.8, (before, after, [round(h["reward_mean"], 2) for h in history])
    assert history[-1]["reward_mean"] > history[0]["reward_mean"]
    assert history[-1]["kl"] > 0  # the policy moved away from the frozen reference
    assert good_token_probability(trainer.ref_policy) == pytest.approx(before)
    # the same seed gives the same run
    again = make_trainer(**overrides)
    again.train(num_iterations=12)
    assert good_token_probability(again.policy) == pytest.approx(after, rel=1e-6)
