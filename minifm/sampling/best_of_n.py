"""Best-of-N sampling: draw N completions per prompt and keep the one the reward model likes best.

The test-time-compute baseline every RLHF result should be compared with: no weights change, the
policy only spends N times the sampling compute. `best_of_n(model, reward_model, prompts, n)` is a
thin, named entry point over `generate(..., best_of=n, reward_model=...)` (minifm.sampling.generate
does the sampling, the scoring and the selection); `reward_model` is any callable
`(sequences (M, T), attention_mask (M, T)) -> (M,) rewards`, e.g. minifm.models.heads.RewardModel.

Its cost in KL: the selected completion is drawn from a distribution whose KL to the policy is
at most log(n) - (n - 1) / n (Stiennon et al. 2020; exact when all samples are distinct), which
`best_of_n_kl_bound(n)` returns, so best-of-N can be placed on the same reward-vs-KL plot as PPO.
"""
from __future__ import annotations

import math

from minifm.sampling.generate import GenerateOutput, generate


def best_of_n_kl_bound(n: int) -> float:
    """log(n) - (n - 1) / n: the KL(best-of-n || policy) of the selection, an upper bound."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return math.log(n) - (n - 1) / n


def best_of_n(model, reward_model, prompts, n: int, max_new_tokens: int = 24, *, temperature: float = 1.0,
              top_k: int = 0, top_p: float = 1.0, eos_token_id=None, pad_token_id=None, seed=None,
              **generate_kwargs) -> GenerateOutput:
    """For each prompt (token-id lists or a (B, T) array) sample n completions, return the best one.

    The result is a GenerateOutput with one row per prompt; `sequences_scores` holds the chosen
    rewards and `extras["all_rewards"]` the (B, n) rewards of every sample.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if reward_model is None or not callable(reward_model):
        raise TypeError(f"reward_model must be callable (sequences, attention_mask) -> rewards, got {reward_model!r}")
    return generate(model, prompts, max_new_tokens, do_sample=True, temperature=temperature, top_k=top_k,
                    top_p=top_p, eos_token_id=eos_token_id, pad_token_id=pad_token_id, seed=seed, best_of=n,
                    reward_model=reward_model, return_dict_in_generate=True, **generate_kwargs)
