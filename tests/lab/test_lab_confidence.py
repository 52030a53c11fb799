"""Lab confidence: reliability bins, expected calibration error, AUROC and the bootstrap."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifm.lab import confidence


def test_ece_of_a_hand_computed_case():
    # bin [0.9, 1]: confidences 0.9, 1.0 (mean 0.95), one right (0.5); bin [0.2, 0.3): 0.25, right (1.0)
    conf = np.array([0.9, 1.0, 0.25, 0.25])
    right = np.array([True, False, True, True])
    table = confidence.reliability_bins(conf, right, bins=10)
    assert table[9]["count"] == 2 and table[9]["confidence"] == pytest.approx(0.95) and table[9]["accuracy"] == 0.5
    assert table[2]["count"] == 2 and table[2]["accuracy"] == 1.0
    expected = 0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.25)
    assert confidence.expected_calibration_error(conf, right, bins=10) == pytest.approx(expected)


def test_a_perfectly_calibrated_set_has_zero_ece():
    conf = np.array([0.25] * 4 + [0.75] * 4)
    right = np.array([True, False, False, False, True, True, True, False])
    assert confidence.expected_calibration_error(conf, right) == pytest.approx(0.0)


def test_reliability_bins_refuse_bad_input():
    with pytest.raises(ValueError, match="must be in"):
        confidence.reliability_bins([1.5], [True])
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        confidence.reliability_bins([0.5, 0.5], [True])


def brute_force_auroc(scores, positive):
    ones = [s for s, p in zip(scores, positive) if p]
    zeros = [s for s, p in zip(scores, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in ones for b in zeros)
    return wins / (len(ones) * len(zeros))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.9, 0.95]), st.booleans()), min_size=2, max_size=30))
def test_auroc_equals_the_pairwise_count(rows):
    scores = [r[0] for r in rows]
    positive = [r[1] for r in rows]
    if all(positive) or not any(positive):
        assert np.isnan(confidence.auroc(scores, positive))
    else:
        assert confidence.auroc(scores, positive) == pytest.approx(brute_force_auroc(scores, positive))


def test_auroc_extremes():
    assert confidence.auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert confidence.auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert confidence.auroc([0.5, 0.5], [True, False]) == 0.5


def test_bootstrap_standard_errors_and_paired_differences():
    rng = np.random.default_rng(0)
    conf = rng.uniform(size=200)
    right = rng.uniform(size=200) < conf  # calibrated by construction
    summary = confidence.calibration_summary(conf, right, bins=10, resamples=200)
    assert summary["ece"] < 0.1 and 0 < summary["ece_se"] < 0.05
    assert 0.6 < summary["auroc"] < 0.9 and 0 < summary["auroc_se"] < 0.1
    same, same_se = confidence.paired_difference((conf, right), (conf, right), confidence.auroc, 100)
    assert same == 0.0 and same_se == 0.0


def test_choose_takes_the_best_option_and_its_softmax():
    items = [{"options": ["a", "b"], "answer": 0}, {"options": ["a", "b", "c"], "answer": 0}]
    conf, right = confidence.choose([np.log([0.75, 0.25]), np.log([0.2, 0.2, 0.6])], items)
    assert conf == pytest.approx([0.75, 0.6]) and right.tolist() == [True, False]


def test_answer_probability_sums_the_phrasings_of_the_greedy_answer_once_each():
    def key(prompt, reply):
        return reply.split()[-1]  # the last word is the answer

    replies = [([1, 2], "lives Tollby"), ([3, 2], "Sure Tollby"), ([1, 2], "lives Tollby"), ([4], "Velmo")]
    logprobs = [np.log(0.3), np.log(0.2), np.log(0.3), np.log(0.4)]
    # the greedy reply (0.3) and its other phrasing (0.2); the repeated sample is the same sequence, Velmo differs
    assert confidence.answer_probability("q", replies, logprobs, key) == pytest.approx(0.5)
    assert confidence.answer_probability("q", replies[:1] * 5, [0.0] * 5, key) == 1.0
