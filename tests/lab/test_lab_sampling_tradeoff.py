"""Lab sampling: distinct-n, agreement, the repetition profile and the rule table's arithmetic."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifm.lab import sampling_tradeoff as lab_sampling
from minifm.lab.subjects import Draws, pairwise_agreement
from minifm.lifecycle.evaluation import distinct_n


def test_distinct_n_counts_unique_ngrams_over_a_prompts_samples():
    samples = [[1, 2, 3], [1, 2, 4]]
    assert distinct_n(samples, 1) == pytest.approx(4 / 6)
    assert distinct_n(samples, 2) == pytest.approx(3 / 4)  # (1,2) twice, (2,3), (2,4)
    assert distinct_n([[5, 5, 5]] * 3, 1) == pytest.approx(1 / 9)  # greedy's one answer repeated S times
    assert distinct_n([[7]], 2) == 0.0


@given(st.lists(st.sampled_from("abcd"), min_size=2, max_size=12))
def test_pairwise_agreement_is_the_share_of_agreeing_pairs(keys):
    pairs = [(i, j) for i in range(len(keys)) for j in range(len(keys)) if i != j]
    assert pairwise_agreement(keys) == pytest.approx(sum(keys[i] == keys[j] for i, j in pairs) / len(pairs))


def test_agreement_of_one_sample_and_of_all_different():
    assert pairwise_agreement(["a"]) == 1.0
    assert pairwise_agreement(["a", "b", "c"]) == 0.0


def test_repeated_positions_and_the_profile():
    assert lab_sampling.repeated_positions([1, 2, 1, 2, 1, 2], n=2) == [False, False, True, True, True]
    # prompt [9, 9, 9, 9] then a loop of 1, 2: 4-grams repeat from generated position 4 on
    profile = lab_sampling.repetition_profile([[9, 9, 9, 9, 1, 2, 1, 2, 1, 2, 1, 2]], [4], n=4)
    flags = dict(profile["by_position"])
    assert flags[0] == 0.0 and flags[3] == 0.0 and flags[4] == 0.0 and flags[5] == 1.0
    assert profile["median_first_repeat"] == 5 and profile["texts_with_a_repeat"] == 1.0
    none = lab_sampling.repetition_profile([[1, 2, 3, 4, 5, 6]], [2], n=4)
    assert none["repeated_share"] == 0.0 and none["median_first_repeat"] is None


def test_rules_cover_greedy_temperature_top_k_and_top_p():
    labels = [label for label, _ in lab_sampling.rules([0.0, 0.7], [5], [0.9])]
    assert labels == ["greedy (T=0)", "T=0.7", "top-k 5 (T=1)", "top-p 0.9 (T=1)"]
    options = dict(lab_sampling.rules([0.0, 0.7], [5], [0.9]))
    assert options["greedy (T=0)"] == {"do_sample": False} and options["T=0.7"]["top_k"] == 0


def fake_draws():
    correct = np.array([[True, True, False], [False, False, False]])
    return Draws(prompts=["p", "q"], replies=[["a", "a", "b"], ["c", "d", "c"]],
                 tokens=[[[1], [1], [2]], [[3], [4], [3]]], logprob=np.array([[-1.0, -1.0, -2.0], [-3.0, -1.0, -3.0]]),
                 length=np.ones((2, 3), dtype=int) * 2, correct=correct, reward=np.where(correct, 1.0, -1.0),
                 keys=[["a", "a", "b"], ["c", "d", "c"]])


def test_summarise_a_known_set_of_draws():
    summary = lab_sampling.summarise(fake_draws())
    assert summary["accuracy"] == pytest.approx((2 / 3 + 0) / 2)
    assert summary["majority_accuracy"] == pytest.approx(0.5)  # prompt p's majority "a" is right, q's "c" is not
    assert summary["agreement"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert summary["loglik_per_token"] == pytest.approx(-11 / 12)
    pooled = lab_sampling.pool([fake_draws(), fake_draws()])
    assert pooled.shape == (2, 6) and len(pooled.keys[0]) == 6


def test_truncation_is_compared_with_temperature_at_the_same_diversity():
    results = {"greedy (T=0)": {"distinct_2": 0.1, "accuracy": 0.5}, "T=1": {"distinct_2": 0.5, "accuracy": 0.1},
               "top-p 0.8 (T=1)": {"distinct_2": 0.3, "accuracy": 0.4}, "top-k 3 (T=1)": {"distinct_2": 0.9,
                                                                                        "accuracy": 0.0}}
    assert lab_sampling.above_temperature_curve(results, "top-p 0.8 (T=1)") == pytest.approx(0.1)
    assert lab_sampling.above_temperature_curve(results, "top-k 3 (T=1)") is None  # outside the curve's range


def test_majority_vote_is_compared_with_greedy_prompt_by_prompt():
    results = {"greedy (T=0)": {"per_prompt_accuracy": [1.0, 0.0, 0.0, 1.0]},
               "T=0.5": {"per_prompt_majority": [True, True, False, True]}}
    mean, stderr = lab_sampling.paired_gain(results, "T=0.5", "per_prompt_majority", "greedy (T=0)")
    assert mean == pytest.approx(0.25) and stderr == pytest.approx(0.25)
    assert lab_sampling.paired_gain({"a": {}, "b": {}}, "a", "per_prompt_majority", "b") is None
