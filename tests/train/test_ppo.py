"""Tests of minifm.train.ppo: the per-token reward layout (KL penalty everywhere, score at the last
token), GAE + whitening wiring, short deterministic PPO and GRPO runs on a bandit task where a
tiny GPT must learn to prefer the rewarded token, and PPO-ptx (the demonstrations' NLL added to the
loss): off it changes nothing, its gradient is PPO's plus ptx_coef times the NLL's, and on its own it
lowers the demonstrations' NLL."""
import dataclasses
import itertools

import numpy as np
import pytest

from minifm import functional as F
from minifm.autograd.grad_mode import no_grad
from minifm.data.batches import IGNORE_INDEX
from minifm.data.conversations import sft_example
from minifm.models import GPT, GPTConfig, ValueModel
from minifm.train import ppo, rl_math

VOCAB, PROMPT, STOP, PAD, GOOD = 8, 1, 7, 0, 5


def tiny_gpt(seed=0, dtype="float32"):
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=16, seed=seed, dtype=dtype))


def bandit_reward(sequences, attention_mask):
    """1 when the first response token (column 1, after the one-token prompt) is GOOD."""
    return (sequences[:, 1] == GOOD).astype(np.float64)


def good_token_probability(policy) -> float:
    with no_grad():
        logits = policy(np.array([[PROMPT]])).data[0, -1].astype(np.float64)
    probs = np.exp(logits - logits.max())
    return float(probs[GOOD] / probs.sum())


def estimator_settings(estimator: str) -> dict:
    """PPOConfig overrides for one advantage estimator (GRPO: groups of 4 samples per prompt)."""
    if estimator == "grpo":
        return {"advantage_estimator": "grpo", "num_generations": 4, "per_device_train_batch_size": 4}
    return {"advantage_estimator": estimator}


def make_trainer(reward_fn=bandit_reward, dtype="float32", ptx_examples=None, **overrides):
    config = ppo.PPOConfig(**{"learning_rate": 3e-2, "per_device_train_batch_size": 16, "num_ppo_epochs": 2,
                              "num_mini_batches": 2, "response_length": 1, "temperature": 1.0, "kl_coef": 0.01,
                              "seed": 0, **overrides})
    value = ValueModel(tiny_gpt(seed=1, dtype=dtype)) if config.advantage_estimator == "gae" else None
    return ppo.PPOTrainer(config, tiny_gpt(dtype=dtype), reward_fn, [[PROMPT]], value_model=value, stop_token_id=STOP,
                          pad_token_id=PAD, ptx_examples=ptx_examples)


def demonstrations():
    """SFT-encoded (input_ids, labels) pairs of different lengths: the prompt, then 1-3 completion tokens."""
    return [sft_example([PROMPT], [GOOD, STOP]), sft_example([PROMPT, 2], [3, GOOD, STOP]),
            sft_example([PROMPT], [4, STOP]), sft_example([PROMPT, 6, 2], [GOOD])]


def reference_nll(policy, examples) -> "Tensor":
    """Mean -log p over every completion token of every example, one unpadded example at a time
    (an independent route to the number collate_sft + sft.sft_loss compute on a padded batch)."""
    total, count = None, 0
    for ids, labels in examples:
        log_probs = F.log_softmax(policy(ids[None, :-1]), axis=-1)  # (1, T-1, V)
        for position in np.flatnonzero(labels[1:] != IGNORE_INDEX):
            term = -log_probs[0, int(position), int(labels[position + 1])]
            total = term if total is None else total + term
            count += 1
    return total / count


def gradients(params) -> list[np.ndarray]:
    """Copies of the parameters' gradients (zeros where a parameter got none)."""
    return [np.zeros_like(p.data) if p.grad is None else np.array(p.grad, copy=True) for p in params]


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
    trainer = make_trainer(advantage_estimator="grpo", num_generations=2, per_device_train_batch_size=2)
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
    with pytest.raises(ValueError, match="ptx_coef"):
        ppo.PPOConfig(ptx_coef=-0.1)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be 1"):
        ppo.PPOConfig(gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match=r"num_mini_batches=5 exceeds the 4 rollouts"):
        ppo.PPOConfig(per_device_train_batch_size=4, num_mini_batches=5)
    with pytest.raises(ValueError, match="max_steps must be an integer"):
        ppo.PPOConfig(max_steps=2.5)
    with pytest.raises(ValueError, match="ptx_examples"):
        make_trainer(ptx_coef=0.5)


@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_short_run_learns_the_rewarded_token(estimator):
    overrides = estimator_settings(estimator)
    trainer = make_trainer(max_steps=12, **overrides)
    before = good_token_probability(trainer.policy)
    history = trainer.train()
    after = good_token_probability(trainer.policy)
    assert before < 0.25
    assert after > 0.8, (before, after, [round(h["reward_mean"], 2) for h in history])
    assert history[-1]["reward_mean"] > history[0]["reward_mean"]
    assert history[-1]["kl"] > 0  # the policy moved away from the frozen reference
    assert good_token_probability(trainer.ref_policy) == pytest.approx(before)
    # the same seed gives the same run
    again = make_trainer(max_steps=12, **overrides)
    again.train()
    assert good_token_probability(again.policy) == pytest.approx(after, rel=1e-6)


# ---------------------------------------------------------------------- PPO-ptx
@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_ptx_coef_zero_leaves_the_update_bit_identical(estimator):
    """With ptx_coef = 0, handing the trainer demonstrations changes nothing: same draws, same weights."""
    overrides = estimator_settings(estimator)
    plain = make_trainer(max_steps=3, **overrides)
    with_demos = make_trainer(max_steps=3, ptx_examples=demonstrations(), ptx_coef=0.0, **overrides)
    plain_history, demos_history = plain.train(), with_demos.train()
    for (name, a), (_, b) in zip(plain.policy.state_dict().items(), with_demos.policy.state_dict().items()):
        assert np.array_equal(a, b), name
    assert [h["policy_loss"] for h in plain_history] == [h["policy_loss"] for h in demos_history]
    assert all(h["ptx_loss"] is None for h in demos_history)
    # a positive coefficient does change the weights, so the comparison above can fail
    mixed = make_trainer(max_steps=3, ptx_examples=demonstrations(), ptx_coef=1.0, **overrides)
    mixed.train()
    assert any(not np.array_equal(a, b) for a, b in zip(plain.policy.state_dict().values(),
                                                       mixed.policy.state_dict().values()))


@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_ptx_gradient_is_ppo_gradient_plus_coef_times_nll_gradient(estimator):
    """float64: grad(ppo_loss + c NLL) == grad(ppo_loss) + c grad(NLL), the NLL computed independently."""
    coef = 0.7
    overrides = estimator_settings(estimator)
    trainer = make_trainer(dtype="float64", ptx_examples=demonstrations(), ptx_coef=coef, **overrides)
    batch = trainer.rollout()
    targets = trainer.advantages(batch)
    rows = np.arange(batch["sequences"].shape[0])
    examples = demonstrations()
    trainer.ptx_batches = itertools.repeat(examples)  # the same demonstration mini-batch every time
    params = trainer.params

    combined, stats = trainer.minibatch_loss(batch, targets, rows)
    combined.backward()
    combined_grads = gradients(params)
    trainer.optimizer.zero_grad()

    trainer.config = dataclasses.replace(trainer.config, ptx_coef=0.0)  # plain PPO, separate backward pass
    ppo_only, ppo_stats = trainer.minibatch_loss(batch, targets, rows)
    ppo_only.backward()
    ppo_grads = gradients(params)
    trainer.optimizer.zero_grad()
    assert "ptx_loss" not in ppo_stats

    nll = reference_nll(trainer.policy, examples)
    nll.backward()
    nll_grads = gradients(params)
    trainer.optimizer.zero_grad()

    assert stats["ptx_loss"] == pytest.approx(float(nll.item()), rel=1e-12)
    assert combined.item() == pytest.approx(ppo_only.item() + coef * nll.item(), rel=1e-12, abs=1e-12)
    assert any(np.abs(g).max() > 1e-6 for g in nll_grads)  # the NLL term really moves the policy
    for combined_grad, ppo_grad, nll_grad in zip(combined_grads, ppo_grads, nll_grads):
        np.testing.assert_allclose(combined_grad, ppo_grad + coef * nll_grad, rtol=1e-9, atol=1e-12)


def test_ptx_term_alone_lowers_the_demonstrations_nll():
    """With a zero reward and no KL penalty every advantage is 0, so plain PPO leaves the policy where
    it is; PPO-ptx then moves it only through the NLL term, which must fall."""
    def zero_reward(sequences, attention_mask):
        return np.zeros(sequences.shape[0])

    examples = demonstrations()

    def demo_nll(trainer):
        with no_grad():
            return float(trainer.ptx_loss(examples).item())

    plain = make_trainer(reward_fn=zero_reward, kl_coef=0.0, learning_rate=1e-2, max_steps=3)
    before = demo_nll(plain)
    plain.train()
    assert demo_nll(plain) == pytest.approx(before, rel=1e-6)  # no advantage, no move

    mixed = make_trainer(reward_fn=zero_reward, kl_coef=0.0, learning_rate=1e-2, ptx_examples=examples,
                         ptx_coef=1.0, ptx_batch_size=2, max_steps=3)
    assert demo_nll(mixed) == pytest.approx(before, rel=1e-6)  # the same start
    history = mixed.train()
    after = demo_nll(mixed)
    assert after < 0.8 * before, (before, after, [h["ptx_loss"] for h in history])
    assert all(h["ptx_loss"] is not None and np.isfinite(h["ptx_loss"]) for h in history)
