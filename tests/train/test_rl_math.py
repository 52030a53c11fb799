"""Tests of minifm.train.rl_math: each objective against an independent NumPy formula, gradients
against finite differences, GAE against a hand-computed episode, KL estimators against exact KL."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import minifm as mf
from minifm.autograd import gradcheck
from minifm.train import rl_math as rm


def _t(array, requires_grad=True):
    return mf.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def _log_sigmoid_np(x):
    return -np.logaddexp(0.0, -x)


# ---------------------------------------------------------------------- masked statistics, whitening
def test_whiten_matches_numpy_over_valid_entries(rng):
    values = rng.normal(3.0, 2.0, size=(4, 6))
    mask = np.ones((4, 6))
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    valid = values[mask == 1]
    expected = (values - valid.mean()) / np.sqrt(valid.var(ddof=1) + 1e-8)
    np.testing.assert_allclose(rm.whiten(values, mask), expected, rtol=1e-12)
    out = rm.whiten(values, mask)[mask == 1]
    assert abs(out.mean()) < 1e-10 and abs(out.std(ddof=1) - 1) < 1e-6
    kept_mean = rm.whiten(values, mask, shift_mean=False)[mask == 1]
    np.testing.assert_allclose(kept_mean.mean(), valid.mean(), rtol=1e-10)


def test_masked_mean_rejects_empty_mask_and_nan():
    with pytest.raises(ValueError, match="no entries"):
        rm.masked_mean(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        rm.whiten(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="mask must have shape"):
        rm.masked_mean(np.ones((2, 2)), np.ones((2, 3)))


# ---------------------------------------------------------------------- KL estimators
def _categorical_pair(rng, size):
    policy = rng.dirichlet(np.ones(size))
    reference = rng.dirichlet(np.ones(size))
    return policy, reference


def test_kl_estimators_exact_expectations(rng):
    for _ in range(5):
        policy, reference = _categorical_pair(rng, 6)
        exact = float(np.sum(policy * (np.log(policy) - np.log(reference))))
        lp, ref = np.log(policy), np.log(reference)
        for estimator in ("k1", "k3"):
            expectation = float(np.sum(policy * rm.kl_per_token(lp, ref, estimator)))
            assert expectation == pytest.approx(exact, rel=1e-10, abs=1e-12)
        # k2 = 0.5 log^2 ratio is biased in general
        k2_expectation = float(np.sum(policy * rm.kl_per_token(lp, ref, "k2")))
        assert abs(k2_expectation - exact) > 1e-6
        assert np.all(rm.kl_per_token(lp, ref, "k3") >= 0)
        assert np.all(rm.kl_per_token(lp, ref, "k2") >= 0)


def test_kl_estimators_sampled_means_are_unbiased(rng):
    policy, reference = _categorical_pair(rng, 5)
    exact = float(np.sum(policy * (np.log(policy) - np.log(reference))))
    samples = rng.choice(5, size=20000, p=policy)
    lp, ref = np.log(policy)[samples], np.log(reference)[samples]
    for estimator in ("k1", "k3"):
        estimates = rm.kl_per_token(lp, ref, estimator)
        result = stats.ttest_1samp(estimates, exact)
        assert result.pvalue > 1e-3, (estimator, estimates.mean(), exact)
    # k3 has lower variance than k1 when the distributions are close
    close = 0.9 * policy + 0.1 * reference
    lp_close = np.log(policy)[samples]
    ref_close = np.log(close)[samples]
    assert rm.kl_per_token(lp_close, ref_close, "k3").var() < rm.kl_per_token(lp_close, ref_close, "k1").var()


def test_kl_estimator_name_checked():
    with pytest.raises(ValueError, match="kl_estimator"):
        rm.kl_per_token(np.zeros(3), np.zeros(3), "k4")


@given(seed=st.integers(0, 2**16), estimator=st.sampled_from(rm.KL_ESTIMATORS))
def test_kl_estimators_on_tensors_equal_the_array_form_and_have_the_right_gradient(seed, estimator):
    """GRPO puts the estimate in its loss: the Tensor form gives the array form's values, and its
    gradient with respect to logprobs is d/dlp of the formula (checked against finite differences)."""
    rng = np.random.default_rng(seed)
    logprobs, ref = rng.normal(-2, 0.7, size=(3, 4)), rng.normal(-2, 0.7, size=(3, 4))
    as_tensor = rm.kl_per_token(_t(logprobs), ref, estimator)
    np.testing.assert_allclose(as_tensor.data, rm.kl_per_token(logprobs, ref, estimator), rtol=1e-12, atol=1e-15)
    gradcheck(lambda lp: rm.kl_per_token(lp, ref, estimator).sum(), _t(logprobs))
    with pytest.raises(ValueError, match="ref_logprobs must have the shape"):
        rm.kl_per_token(_t(logprobs), ref[:, :2], estimator)


# ---------------------------------------------------------------------- GAE
def test_gae_matches_hand_computed_episode():
    gamma, lam = 0.9, 0.8
    rewards = np.array([[1.0, 0.0, 2.0, 9.0]])
    values = np.array([[0.5, 1.0, 1.5, 7.0]])
    mask = np.array([[1, 1, 1, 0]])
    # episode ends after t=2: V(3) = 0
    d2 = 2.0 + gamma * 0.0 - 1.5
    d1 = 0.0 + gamma * 1.5 - 1.0
    d0 = 1.0 + gamma * 1.0 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    advantages, returns = rm.gae(rewards, values, gamma, lam, mask)
    np.testing.assert_allclose(advantages, [[a0, a1, a2, 0.0]], rtol=1e-12)
    np.testing.assert_allclose(returns, [[a0 + 0.5, a1 + 1.0, a2 + 1.5, 0.0]], rtol=1e-12)


@given(st.integers(1, 6), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_gae_lambda_one_gives_discounted_returns(steps, gamma, lam, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(2, steps))
    values = rng.normal(size=(2, steps))
    _, returns = rm.gae(rewards, values, gamma, 1.0)
    discounted = np.zeros_like(rewards)
    running = np.zeros(2)
    for t in reversed(range(steps)):
        running = rewards[:, t] + gamma * running
        discounted[:, t] = running
    np.testing.assert_allclose(returns, discounted, rtol=1e-9, atol=1e-9)
    # lam = 0: one-step TD errors
    advantages, _ = rm.gae(rewards, values, gamma, 0.0)
    next_values = np.concatenate([values[:, 1:], np.zeros((2, 1))], axis=1)
    np.testing.assert_allclose(advantages, rewards + gamma * next_values - values, rtol=1e-9, atol=1e-9)


def test_gae_rejects_non_prefix_mask():
    with pytest.raises(ValueError, match="prefix"):
        rm.gae(np.zeros((1, 3)), np.zeros((1, 3)), mask=np.array([[1, 0, 1]]))


def test_group_relative_advantages_matches_numpy(rng):
    scores = rng.normal(size=12)
    out = rm.group_relative_advantages(scores, 4)
    groups = scores.reshape(3, 4)
    expected = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(out, expected.reshape(-1), rtol=1e-12)
    np.testing.assert_allclose(out.reshape(3, 4).sum(1), 0.0, atol=1e-10)
    with pytest.raises(ValueError, match="num_generations"):
        rm.group_relative_advantages(scores, 5)


# ---------------------------------------------------------------------- clipped PPO losses
def _policy_loss_np(logprobs, old, adv, mask, cliprange):
    ratio = np.exp(logprobs - old)
    terms = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - cliprange, 1 + cliprange))
    return np.sum(terms * mask) / mask.sum()


def test_clipped_policy_loss_value_and_gradient(rng):
    shape = (3, 5)
    old = rng.normal(size=shape)
    # keep ratios away from the clip kinks so finite differences are valid
    offsets = rng.choice([-0.6, -0.1, 0.05, 0.4], size=shape) + rng.uniform(-0.02, 0.02, size=shape)
    logprobs = old + offsets
    adv = rng.normal(size=shape)
    mask = np.ones(shape)
    mask[2, 3:] = 0
    loss, stats_ = rm.clipped_policy_loss(_t(logprobs), old, adv, mask, cliprange=0.2)
    assert loss.item() == pytest.approx(_policy_loss_np(logprobs, old, adv, mask, 0.2), rel=1e-12)
    ratio = np.exp(offsets)
    clipped_larger = -adv * np.clip(ratio, 0.8, 1.2) > -adv * ratio
    assert stats_["clipfrac"] == pytest.approx(np.sum(clipped_larger * mask) / mask.sum())
    assert stats_["approxkl"] == pytest.approx(0.5 * np.sum(offsets**2 * mask) / mask.sum())
    gradcheck(lambda x: rm.clipped_policy_loss(x, old, adv, mask, 0.2)[0], _t(logprobs))


@given(st.floats(0.05, 0.5), st.floats(0.1, 3.0), st.floats(0.01, 2.0))
def test_clipped_objective_is_flat_outside_the_clip_range(cliprange, advantage_size, beyond):
    old = np.zeros((1, 2))
    # positive advantage beyond 1 + cliprange, negative advantage below 1 - cliprange
    log_ratio = np.array([[np.log(1 + cliprange) + beyond, np.log(1 - cliprange) - beyond]])
    adv = np.array([[advantage_size, -advantage_size]])
    x = _t(log_ratio)
    loss, stats_ = rm.clipped_policy_loss(x, old, adv, cliprange=cliprange)
    loss.backward()
    np.testing.assert_array_equal(x.grad, 0.0)
    assert stats_["clipfrac"] == 1.0
    moved, _ = rm.clipped_policy_loss(_t(log_ratio + 0.3 * np.array([[1.0, -1.0]])), old, adv, cliprange=cliprange)
    assert moved.item() == pytest.approx(loss.item(), rel=1e-12)
    # on the other side of the range the objective is not clipped: gradient = -A * ratio / n
    inside = np.array([[np.log(1 - cliprange) - beyond, np.log(1 + cliprange) + beyond]])
    y = _t(inside)
    rm.clipped_policy_loss(y, old, adv, cliprange=cliprange)[0].backward()
    np.testing.assert_allclose(y.grad, -adv * np.exp(inside) / 2, rtol=1e-10)


def test_clipped_value_loss_value_and_gradient(rng):
    shape = (2, 6)
    old = rng.normal(size=shape)
    values = old + rng.choice([-0.5, -0.1, 0.1, 0.5], size=shape) + rng.uniform(-0.02, 0.02, size=shape)
    returns = rng.normal(size=shape)
    mask = np.ones(shape)
    mask[1, 4:] = 0
    loss, stats_ = rm.clipped_value_loss(_t(values), old, returns, mask, cliprange_value=0.2)
    clipped = np.clip(values, old - 0.2, old + 0.2)
    e1, e2 = (values - returns) ** 2, (clipped - returns) ** 2
    assert loss.item() == pytest.approx(0.5 * np.sum(np.maximum(e1, e2) * mask) / mask.sum(), rel=1e-12)
    assert stats_["vf_clipfrac"] == pytest.approx(np.sum((e2 > e1) * mask) / mask.sum())
    gradcheck(lambda v: rm.clipped_value_loss(v, old, returns, mask, 0.2)[0], _t(values))


# ---------------------------------------------------------------------- Bradley-Terry
def test_bradley_terry_matches_numpy_and_gradcheck(rng):
    chosen, rejected, margin = rng.normal(size=5), rng.normal(size=5), rng.uniform(0, 1, size=5)
    for margin_arg, centre in ((None, None), (margin, 0.01)):
        loss = rm.bradley_terry_loss(_t(chosen), _t(rejected), margin_arg, centre)
        m = 0.0 if margin_arg is None else margin
        expected = np.mean(-_log_sigmoid_np(chosen - rejected - m))
        if centre:
            expected += centre * np.mean((chosen + rejected) ** 2)
        assert loss.item() == pytest.approx(expected, rel=1e-12)
        gradcheck(lambda c, r: rm.bradley_terry_loss(c, r, margin_arg, centre), _t(chosen), _t(rejected))


def test_bradley_terry_gradient_raises_chosen_and_lowers_rejected(rng):
    c, r = _t(rng.normal(size=4)), _t(rng.normal(size=4))
    rm.bradley_terry_loss(c, r).backward()
    assert np.all(c.grad < 0) and np.all(r.grad > 0)  # descent raises r_chosen, lowers r_rejected
    np.testing.assert_allclose(c.grad, -r.grad)


# ---------------------------------------------------------------------- DPO
def _dpo_np(pc, pr, rc, rr, beta, loss_type, ls):
    h = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        return -_log_sigmoid_np(beta * h) * (1 - ls) - _log_sigmoid_np(-beta * h) * ls
    if loss_type == "hinge":
        return np.maximum(0.0, 1 - beta * h)
    return (h - 1 / (2 * beta)) ** 2


@pytest.mark.parametrize("loss_type,label_smoothing", [("sigmoid", 0.0), ("sigmoid", 0.2), ("hinge", 0.0),
                                                      ("ipo", 0.0)])
def test_dpo_losses_match_numpy_and_gradcheck(rng, loss_type, label_smoothing):
    pc, pr, rc, rr = (rng.normal(-5, 2, size=6) for _ in range(4))
    beta = 0.3
    if loss_type == "hinge":  # keep away from the kink at beta * h = 1
        h = (pc - pr) - (rc - rr)
        pc = pc + np.where(np.abs(1 - beta * h) < 0.05, 0.5, 0.0)
    losses, chosen_rewards, rejected_rewards = rm.dpo_loss(_t(pc), _t(pr), rc, rr, beta, loss_type, label_smoothing)
    np.testing.assert_allclose(losses.data, _dpo_np(pc, pr, rc, rr, beta, loss_type, label_smoothing), rtol=1e-12)
    np.testing.assert_allclose(chosen_rewards, beta * (pc - rc))
    np.testing.assert_allclose(rejected_rewards, beta * (pr - rr))
    gradcheck(lambda a, b: rm.dpo_loss(a, b, rc, rr, beta, loss_type, label_smoothing)[0], _t(pc), _t(pr))


@given(st.floats(1e-4, 2.0), st.floats(0.0, 0.5))
def test_dpo_sigmoid_gradient_at_reference(beta, label_smoothing):
    """At policy == reference (logits h = 0) d loss / d policy_chosen_logps = -beta/2 * (1 - 2 label_smoothing):
    it vanishes as beta -> 0 and at label_smoothing = 0.5, and is equal and opposite for the rejected side."""
    logps = np.array([-3.0, -7.5])
    chosen, rejected = _t(logps), _t(logps[::-1].copy())
    losses, _, _ = rm.dpo_loss(chosen, rejected, logps, logps[::-1].copy(), beta, "sigmoid", label_smoothing)
    losses.sum().backward()
    expected = -beta / 2 * (1 - 2 * label_smoothing)
    np.testing.assert_allclose(chosen.grad, expected, atol=1e-12)
    np.testing.assert_allclose(rejected.grad, -expected, atol=1e-12)
    assert np.all(np.abs(chosen.grad) <= beta / 2 + 1e-15)


def test_dpo_sigmoid_gradient_weights_misordered_pairs_more(rng):
    """The gradient's size is beta * sigmoid(-beta h): larger when the implicit reward ranks the pair wrong."""
    beta = 0.5
    h = np.array([-4.0, -1.0, 0.0, 1.0, 4.0])
    chosen = _t(h.copy())
    losses, _, _ = rm.dpo_loss(chosen, _t(np.zeros(5)), np.zeros(5), np.zeros(5), beta)
    losses.sum().backward()
    np.testing.assert_allclose(-chosen.grad, beta / (1 + np.exp(beta * h)), rtol=1e-12)
    assert np.all(np.diff(-chosen.grad) < 0)


def test_dpo_argument_errors():
    x = _t(np.zeros(2))
    with pytest.raises(ValueError, match="loss_type"):
        rm.dpo_loss(x, x, np.zeros(2), np.zeros(2), loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        rm.dpo_loss(x, x, np.zeros(2), np.zeros(2), beta=0.0)
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        rm.dpo_loss(x, x, np.zeros(3), np.zeros(2))


# ---------------------------------------------------------------------- log-probs, entropy, KL controllers
def test_token_logprobs_and_entropy_match_numpy(rng):
    logits = rng.normal(size=(2, 3, 7))
    ids = rng.integers(0, 7, size=(2, 3))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    out = rm.token_logprobs(_t(logits), ids)
    np.testing.assert_allclose(out.data, np.take_along_axis(log_probs, ids[..., None], -1)[..., 0], rtol=1e-10)
    gradcheck(lambda z: rm.token_logprobs(z, ids), _t(logits))
    np.testing.assert_allclose(rm.entropy_from_logits(logits), -np.sum(np.exp(log_probs) * log_probs, -1), rtol=1e-10)


def test_adaptive_kl_controller_moves_toward_target():
    controller = rm.AdaptiveKLController(0.1, target=6.0, horizon=100)
    controller.update(12.0, n_steps=10)  # error clipped to +0.2
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    before = controller.value
    controller.update(5.4, n_steps=10)  # error -0.1
    assert controller.value == pytest.approx(before * (1 - 0.1 * 10 / 100))
    assert rm.FixedKLController(0.05).update(100.0, 10) == 0.05
    with pytest.raises(ValueError, match="current_kl"):
        controller.update(float("nan"), 1)
