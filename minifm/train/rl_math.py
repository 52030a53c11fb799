"""The objective math shared by the post-training stages (reward model, PPO, GRPO, DPO).

Everything here is a small function over arrays (NumPy) or Tensors (autograd) with the formula in
its docstring; the trainers in sft.py / reward.py / ppo.py / dpo.py only wire these together.
Names follow TRL (kl_coef, cliprange, cliprange_value, vf_coef, gamma, lam, beta, loss_type,
label_smoothing, center_rewards_coefficient) and so do the formulas:

    masked_mean / masked_var / whiten      statistics over the valid (mask == 1) tokens only
    kl_per_token(logprobs, ref_logprobs, estimator)
                                           Schulman's k1 / k2 / k3 estimators of KL(policy || reference)
                                           from tokens sampled from the policy
    gae(rewards, values, gamma, lam, mask) generalised advantage estimation, computed backwards
    clipped_policy_loss                    PPO's clipped surrogate  max(-A r, -A clip(r, 1-c, 1+c))
    clipped_value_loss                     0.5 max((v - R)^2, (clip(v, v_old +- c_v) - R)^2)
    group_relative_advantages              GRPO: (score - mean of its group) / (std of its group + eps)
    bradley_terry_loss                     -log sigmoid(r_chosen - r_rejected - margin) (+ centring)
                                           (log sigmoid is minifm.functional.logsigmoid)
    dpo_loss                               DPO's sigmoid / hinge / ipo losses on log-prob differences
    token_logprobs / entropy_from_logits   log pi(token) from logits (fused cross-entropy), entropy
    FixedKLController / AdaptiveKLController   the KL coefficient, constant or steered to a target KL

Simplifications: masks are float or bool arrays of 0/1 (1 = a real token); in `gae` the valid
tokens of each row must be a prefix (responses are right-padded), which is how PPO lays them out.
"""
from __future__ import annotations

import numpy as np

from minifm import functional as F
from minifm.autograd import ops
from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor, data_of

KL_ESTIMATORS = ("k1", "k2", "k3")
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo")


# ---------------------------------------------------------------------- validation helpers
def _as_float_array(x, name: str) -> np.ndarray:
    array = np.asarray(data_of(x))
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64) if array.dtype.kind != "f" else array
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf (shape {array.shape})")
    return array


def _check_mask(mask, shape, name: str = "mask") -> np.ndarray:
    """A 0/1 float mask of `shape` (None means every entry is valid)."""
    if mask is None:
        return np.ones(shape, dtype=np.float64)
    mask = np.asarray(data_of(mask))
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {mask.shape}")
    if mask.dtype != bool and not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{name} must hold only 0 and 1, got values {np.unique(mask)[:5]}")
    return mask.astype(np.float64)


def _check_same_shape(reference_name: str, reference: np.ndarray, **others) -> None:
    for name, value in others.items():
        if np.shape(data_of(value)) != reference.shape:
            raise ValueError(
                f"{name} must have the shape of {reference_name} {reference.shape}, got {np.shape(data_of(value))}"
            )


# ---------------------------------------------------------------------- masked statistics
def masked_sum(values, mask, axis=None):
    """sum(values * mask) over `axis`; `values` may be an array or a Tensor (then a Tensor comes back)."""
    weights = _check_mask(mask, np.shape(data_of(values)))
    if isinstance(values, Tensor):
        return (values * weights.astype(values.dtype)).sum(axis=axis)
    return np.sum(np.asarray(values) * weights, axis=axis)


def masked_mean(values, mask=None, axis=None):
    """sum(values * mask) / sum(mask): the mean over valid entries only (TRL's masked_mean)."""
    weights = _check_mask(mask, np.shape(data_of(values)))
    count = weights.sum(axis=axis)
    if np.any(count == 0):
        raise ValueError(f"masked_mean: the mask selects no entries (values shape {np.shape(data_of(values))})")
    return masked_sum(values, weights, axis=axis) / (count if np.ndim(count) else float(count))


def masked_var(values, mask=None, unbiased: bool = True) -> float:
    """Variance of the valid entries; with `unbiased` it is scaled by n / (n - 1) (Bessel), as in TRL."""
    values = _as_float_array(values, "values")
    weights = _check_mask(mask, values.shape)
    count = weights.sum()
    if count == 0:
        raise ValueError("masked_var: the mask selects no entries")
    mean = np.sum(values * weights) / count
    variance = np.sum(((values - mean) ** 2) * weights) / count
    if unbiased:
        if count < 2:
            raise ValueError(f"masked_var(unbiased=True) needs at least 2 valid entries, got {int(count)}")
        variance *= count / (count - 1)
    return float(variance)


def whiten(values, mask=None, shift_mean: bool = True, eps: float = 1e-8) -> np.ndarray:
    """(values - mean) / sqrt(var + eps) over the valid entries (unbiased var, TRL's masked_whiten).

    With shift_mean=False the mean is added back, so only the scale changes (how TRL whitens
    rewards). Entries outside the mask are transformed too but carry no meaning.
    """
    values = _as_float_array(values, "values")
    weights = _check_mask(mask, values.shape)
    mean = np.sum(values * weights) / max(weights.sum(), 1.0)
    whitened = (values - mean) / np.sqrt(masked_var(values, weights) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


# ---------------------------------------------------------------------- KL estimators
def kl_per_token(logprobs, ref_logprobs, estimator: str = "k1"):
    """Per-token estimate of KL(policy || reference) from tokens sampled from the policy.

    With log_ratio = ref_logprobs - logprobs = log(ref(x) / policy(x)):
        k1 = -log_ratio                         unbiased, can be negative per token
        k2 = 0.5 * log_ratio ** 2               biased, always >= 0, low variance
        k3 = (exp(log_ratio) - 1) - log_ratio   unbiased and always >= 0 (Schulman 2020)
    E_{x ~ policy}[k1] = E[k3] = KL(policy || reference) exactly.

    `logprobs` may be an array (PPO's per-token KL penalty: an array comes back) or a Tensor (GRPO's
    KL term in the loss: a Tensor comes back, differentiable with respect to logprobs); ref_logprobs
    is an array of the same shape.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    ref_logprobs = _as_float_array(ref_logprobs, "ref_logprobs")
    if isinstance(logprobs, Tensor):
        _check_same_shape("logprobs", logprobs.data, ref_logprobs=ref_logprobs)
        log_ratio = ref_logprobs.astype(logprobs.dtype) - logprobs  # (..., T) Tensor
    else:
        logprobs = _as_float_array(logprobs, "logprobs")
        _check_same_shape("logprobs", logprobs, ref_logprobs=ref_logprobs)
        log_ratio = ref_logprobs - logprobs  # (..., T)
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if isinstance(log_ratio, Tensor):
        # the same k3 written with exp, as autograd has no expm1 (near r = 0 the value keeps exp's rounding)
        return log_ratio.exp() - log_ratio - 1.0
    return np.expm1(log_ratio) - log_ratio  # expm1: exact near r = 0, so k3 >= 0 holds in floating point


# ---------------------------------------------------------------------- advantages
def gae(rewards, values, gamma: float = 1.0, lam: float = 0.95, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over (batch, T) per-token rewards and value estimates.

    Computed backwards from the last token, with V(T) = 0 after the episode ends:
        delta_t     = rewards_t + gamma * V_{t+1} - V_t
        advantage_t = delta_t + gamma * lam * advantage_{t+1}
        returns_t   = advantage_t + V_t
    Rewards and values outside the mask are treated as 0 so the episode ends at its last valid
    token; advantages and returns there are 0. Returns (advantages, returns), both (batch, T).
    """
    rewards = _as_float_array(rewards, "rewards")
    values = _as_float_array(values, "values")
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (batch, T), got shape {rewards.shape}")
    _check_same_shape("rewards", rewards, values=values)
    if not 0.0 <= gamma <= 1.0 or not 0.0 <= lam <= 1.0:
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    weights = _check_mask(mask, rewards.shape)
    if np.any(np.diff(weights, axis=1) > 0):
        raise ValueError("gae: each row of mask must be a prefix of ones followed by zeros (right padding)")
    rewards, values = rewards * weights, values * weights
    steps = rewards.shape[1]
    advantages = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[0], dtype=rewards.dtype)  # advantage_{t+1}
    for t in reversed(range(steps)):
        next_values = values[:, t + 1] if t + 1 < steps else 0.0
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages *= weights
    returns = (advantages + values) * weights
    return advantages, returns


def group_relative_advantages(scores, num_generations: int, scale_rewards: bool = True,
                              eps: float = 1e-4) -> np.ndarray:
    """GRPO's advantages: each completion's score minus the mean of its group of `num_generations`.

    scores (batch,) hold consecutive groups (completions of the same prompt next to each other).
    With scale_rewards the difference is divided by (group std + eps) (unbiased std, as TRL).
    """
    scores = _as_float_array(scores, "scores")
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D (batch,), got shape {scores.shape}")
    if num_generations < 2 or scores.shape[0] % num_generations:
        raise ValueError(
            f"num_generations must be >= 2 and divide the batch size {scores.shape[0]}, got {num_generations}"
        )
    groups = scores.reshape(-1, num_generations)  # (prompts, num_generations)
    centred = groups - groups.mean(axis=1, keepdims=True)
    if scale_rewards:
        centred = centred / (groups.std(axis=1, ddof=1, keepdims=True) + eps)
    return centred.reshape(-1)


# ---------------------------------------------------------------------- PPO losses (autograd)
def clipped_policy_loss(logprobs: Tensor, old_logprobs, advantages, mask=None,
                        cliprange: float = 0.2) -> tuple[Tensor, dict]:
    """PPO's clipped surrogate, averaged over valid tokens.

        ratio   = exp(logprobs - old_logprobs)
        loss    = masked_mean(max(-advantages * ratio, -advantages * clip(ratio, 1 - cliprange, 1 + cliprange)))
    The stats dict holds clipfrac (share of tokens where the clipped term is the larger) and
    approxkl = 0.5 * masked_mean((logprobs - old_logprobs) ** 2), as TRL logs them.
    """
    if not isinstance(logprobs, Tensor):
        raise TypeError(f"logprobs must be a Tensor (it carries the gradient), got {type(logprobs).__name__}")
    if cliprange <= 0:
        raise ValueError(f"cliprange must be > 0, got {cliprange}")
    old = _as_float_array(old_logprobs, "old_logprobs").astype(logprobs.dtype)
    adv = _as_float_array(advantages, "advantages").astype(logprobs.dtype)
    _check_same_shape("logprobs", logprobs.data, old_logprobs=old, advantages=adv)
    weights = _check_mask(mask, logprobs.shape)
    log_ratio = logprobs - old  # (B, T)
    ratio = log_ratio.exp()  # (B, T)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * ops.clip(ratio, 1.0 - cliprange, 1.0 + cliprange)  # (B, T)
    loss = masked_mean(ops.maximum(unclipped, clipped), weights)
    with no_grad():
        stats = {
            "clipfrac": float(masked_mean((clipped.data > unclipped.data).astype(np.float64), weights)),
            "approxkl": float(0.5 * masked_mean(log_ratio.data.astype(np.float64) ** 2, weights)),
        }
    return loss, stats


def clipped_value_loss(values: Tensor, old_values, returns, mask=None,
                       cliprange_value: float = 0.2) -> tuple[Tensor, dict]:
    """PPO's clipped value loss, averaged over valid tokens.

        values_clipped = clip(values, old_values - cliprange_value, old_values + cliprange_value)
        loss = 0.5 * masked_mean(max((values - returns) ** 2, (values_clipped - returns) ** 2))
    The stats dict holds vf_clipfrac (share of tokens where the clipped error is the larger).
    """
    if not isinstance(values, Tensor):
        raise TypeError(f"values must be a Tensor (it carries the gradient), got {type(values).__name__}")
    if cliprange_value <= 0:
        raise ValueError(f"cliprange_value must be > 0, got {cliprange_value}")
    old = _as_float_array(old_values, "old_values").astype(values.dtype)
    target = _as_float_array(returns, "returns").astype(values.dtype)
    _check_same_shape("values", values.data, old_values=old, returns=target)
    weights = _check_mask(mask, values.shape)
    # clip(v, old - c, old + c) written as old + clip(v - old, -c, c) so the bounds are scalars
    values_clipped = old + ops.clip(values - old, -cliprange_value, cliprange_value)  # (B, T)
    error_unclipped = (values - target) ** 2  # (B, T)
    error_clipped = (values_clipped - target) ** 2  # (B, T)
    loss = 0.5 * masked_mean(ops.maximum(error_unclipped, error_clipped), weights)
    with no_grad():
        stats = {"vf_clipfrac": float(masked_mean((error_clipped.data > error_unclipped.data).astype(np.float64),
                                                  weights))}
    return loss, stats


# ---------------------------------------------------------------------- preference losses (autograd)
def bradley_terry_loss(rewards_chosen: Tensor, rewards_rejected: Tensor, margin=None,
                       center_rewards_coefficient: float | None = None) -> Tensor:
    """Reward-model loss on (batch,) scalar rewards of the chosen and rejected responses.

        loss = mean(-log sigmoid(rewards_chosen - rewards_rejected - margin))
             + center_rewards_coefficient * mean((rewards_chosen + rewards_rejected) ** 2)
    The centring term (Eisenstein et al. 2023, TRL's center_rewards_coefficient) pulls the rewards
    toward zero mean; margin (batch,) is optional.
    """
    for name, value in (("rewards_chosen", rewards_chosen), ("rewards_rejected", rewards_rejected)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(value).__name__}")
        if value.ndim != 1:
            raise ValueError(f"{name} must be 1-D (batch,), got shape {value.shape}")
    if rewards_chosen.shape != rewards_rejected.shape:
        raise ValueError(f"rewards_chosen {rewards_chosen.shape} and rewards_rejected {rewards_rejected.shape} differ")
    difference = rewards_chosen - rewards_rejected  # (B,)
    if margin is not None:
        margin = _as_float_array(margin, "margin").astype(difference.dtype)
        _check_same_shape("rewards_chosen", rewards_chosen.data, margin=margin)
        difference = difference - margin
    loss = (-F.logsigmoid(difference)).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((rewards_chosen + rewards_rejected) ** 2).mean()
    return loss


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps, ref_rejected_logps,
             beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Direct preference optimisation losses (batch,) from summed response log-probabilities.

        logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
        sigmoid: -log sigmoid(beta * logits) * (1 - label_smoothing) - log sigmoid(-beta * logits) * label_smoothing
        hinge:   relu(1 - beta * logits)
        ipo:     (logits - 1 / (2 * beta)) ** 2
    Returns (losses, chosen_rewards, rejected_rewards) with the implicit rewards
    beta * (policy_logps - ref_logps) as arrays (no gradient), as TRL reports them.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5 + 1e-12:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing only applies to loss_type='sigmoid', got loss_type={loss_type!r}")
    for name, value in (("policy_chosen_logps", policy_chosen_logps), ("policy_rejected_logps", policy_rejected_logps)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(value).__name__}")
        if value.ndim != 1:
            raise ValueError(f"{name} must be 1-D (batch,), got shape {value.shape}")
    dtype = policy_chosen_logps.dtype
    ref_chosen = _as_float_array(ref_chosen_logps, "ref_chosen_logps").astype(dtype)
    ref_rejected = _as_float_array(ref_rejected_logps, "ref_rejected_logps").astype(dtype)
    _check_same_shape("policy_chosen_logps", policy_chosen_logps.data, policy_rejected_logps=policy_rejected_logps,
                      ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected)
    logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen - ref_rejected)  # (B,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1.0 - label_smoothing)
        if label_smoothing:
            losses = losses - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "hinge":
        losses = ops.relu(1.0 - beta * logits)
    else:
        losses = (logits - 1.0 / (2.0 * beta)) ** 2
    chosen_rewards = beta * (policy_chosen_logps.data - ref_chosen)
    rejected_rewards = beta * (policy_rejected_logps.data - ref_rejected)
    return losses, chosen_rewards, rejected_rewards


# ---------------------------------------------------------------------- log-probabilities and entropy
def token_logprobs(logits: Tensor, token_ids) -> Tensor:
    """log softmax(logits)[..., token_ids] for logits (..., V) and integer token_ids (...).

    Uses the fused cross-entropy (log pi(token) = -cross_entropy) so no (..., V) log-softmax
    tensor is kept for backward.
    """
    ids = np.asarray(data_of(token_ids))
    if ids.dtype.kind not in "iu":
        raise TypeError(f"token_ids must be integers, got dtype {ids.dtype}")
    if logits.shape[:-1] != ids.shape:
        raise ValueError(f"logits shape {logits.shape} needs token_ids of shape {logits.shape[:-1]}, got {ids.shape}")
    return -F.cross_entropy(logits, ids.astype(np.int64), reduction="none")


def entropy_from_logits(logits) -> np.ndarray:
    """Entropy of softmax(logits) over the last axis: logsumexp(z) - sum(softmax(z) * z)."""
    z = np.asarray(data_of(logits), dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_normaliser = np.log(np.exp(z).sum(axis=-1, keepdims=True))
    probs = np.exp(z - log_normaliser)
    return (log_normaliser[..., 0] - np.sum(probs * z, axis=-1))


# ---------------------------------------------------------------------- KL coefficient controllers
class FixedKLController:
    """A constant KL coefficient (`value`); `update` does nothing."""

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class AdaptiveKLController:
    """Steer the KL coefficient so the measured KL approaches `target` (Ziegler et al. 2019).

        error = clip(current_kl / target - 1, -0.2, 0.2)
        value = value * (1 + error * n_steps / horizon)
    A KL above target raises the coefficient (a tighter leash), below target lowers it.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float = 10000):
        if init_kl_coef <= 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"init_kl_coef, target and horizon must be > 0, got {init_kl_coef}, {target}, {horizon}"
            )
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        if not np.isfinite(current_kl):
            raise ValueError(f"current_kl must be finite, got {current_kl}")
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
