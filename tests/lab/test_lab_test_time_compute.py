"""Lab test-time-compute: the exact best-of-N expectation, majority vote and the best-of-N KL bound."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from minifm.lab import test_time_compute as ttc
from minifm.lab.subjects import majority_vote
from minifm.sampling.best_of_n import best_of_n_kl_bound


def brute_force_best_of_n(scores, values, n):
    """The mean value of the highest-scoring answer over every n-subset (ties: the first in sorted order)."""
    order = np.argsort(scores, kind="stable")
    rank = np.empty(len(scores), dtype=int)
    rank[order] = np.arange(len(scores))
    kept = [values[max(subset, key=lambda i: rank[i])] for subset in itertools.combinations(range(len(scores)), n)]
    return float(np.mean(kept))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-2, 2)), min_size=1, max_size=8), st.data())
def test_expected_best_of_n_equals_the_mean_over_every_subset(pairs, data):
    scores = np.array([p[0] for p in pairs])
    values = np.array([p[1] for p in pairs])
    n = data.draw(st.integers(1, len(pairs)))
    assert ttc.expected_best_of_n(scores, values, n) == pytest.approx(brute_force_best_of_n(scores, values, n),
                                                                      abs=1e-9)


def test_best_of_one_is_the_mean_and_best_of_all_is_the_top_answer():
    scores, values = np.array([0.3, 2.0, -1.0, 0.5]), np.array([1.0, -1.0, 0.5, 0.0])
    assert ttc.expected_best_of_n(scores, values, 1) == pytest.approx(values.mean())
    assert ttc.expected_best_of_n(scores, values, 4) == pytest.approx(-1.0)  # the reward model's favourite is wrong
    assert ttc.expected_best_of_n(values, values, 4) == pytest.approx(1.0)   # the oracle keeps the best
    with pytest.raises(ValueError, match="n must be in"):
        ttc.expected_best_of_n(scores, values, 5)


def test_majority_vote_keeps_the_most_common_answer_and_breaks_ties_by_order():
    assert majority_vote(["a", "b", "b", "c"]) == 1
    assert majority_vote(["c", "a", "a", "c"]) == 0  # a tie: the key seen first
    assert majority_vote(["x"]) == 0
    with pytest.raises(ValueError):
        majority_vote([])


def test_majority_vote_curve_with_all_answers_agreeing_is_their_value():
    keys = [["a"] * 5, ["a", "b", "b", "b", "a"]]
    values = np.array([[1.0] * 5, [0.0, 1.0, 1.0, 1.0, 0.0]])
    picks = ttc.majority_vote_picks(keys, 5, subsets=20, rng=np.random.default_rng(0))
    assert picks.shape == (2, 5, 20)
    curve = ttc.majority_vote_curve(picks, values)
    assert curve.shape == (2, 5)
    assert np.allclose(curve[0], 1.0)
    assert curve[1, 4] == 1.0 and curve[1, 0] == pytest.approx(0.6, abs=0.25)  # N = 1: a random answer


@pytest.mark.parametrize("n", [1, 2, 4, 32])
def test_the_kl_bound_of_best_of_n(n):
    assert best_of_n_kl_bound(n) == pytest.approx(math.log(n) - (n - 1) / n)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=2, max_size=12), st.integers(1, 16))
def test_the_exact_best_of_n_distribution_stays_within_the_kl_bound(weights, n):
    policy = np.array(weights) / np.sum(weights)
    best = ttc.best_of_n_probabilities(policy, n)
    assert best.sum() == pytest.approx(1.0) and (best >= -1e-12).all()
    assert stats.entropy(best, policy) <= best_of_n_kl_bound(n) + 1e-9


def test_the_bound_is_reached_when_every_answer_is_distinct():
    policy = np.full(20_000, 1 / 20_000)  # many equally likely, distinct answers: a continuous policy in the limit
    for n in (2, 8, 32):
        assert stats.entropy(ttc.best_of_n_probabilities(policy, n), policy) == pytest.approx(
            best_of_n_kl_bound(n), abs=2e-3)


def test_selection_curves_shapes_and_the_oracle_dominates():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(5, 6))
    curves = ttc.selection_curves({"oracle": truth, "noise": rng.normal(size=(5, 6))}, truth, truth > 0, 6)
    assert curves["oracle"]["reward"].shape == (5, 6)
    assert (curves["oracle"]["reward"] >= curves["noise"]["reward"] - 1e-12).all()
    assert np.all(np.diff(curves["oracle"]["reward"], axis=1) >= -1e-12)  # the oracle never gets worse with N


def test_curve_changes_find_the_peak_and_pair_the_differences():
    curve = np.array([[0.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
    change = ttc.curve_changes(curve)
    assert change["peak_n"] == 2
    assert change["last_minus_peak"][0] == pytest.approx(-1.0) and change["last_minus_peak"][1] == 0.0
    assert change["last_minus_first"][0] == pytest.approx(0.5)
