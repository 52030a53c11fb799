"""Lab alignment: matched compute, paired differences over seeds and the correlation interval."""
import math

import numpy as np
import pytest
from scipy import stats

from minifm.lab import alignment
from minifm.lifecycle.presets import settings_for


def test_the_methods_backpropagate_as_many_sequences_at_the_default_preset():
    post = settings_for("default")["post_training"]
    counts = {method: alignment.backward_sequences(method, alignment.method_settings(method, post, seed=0))
              for method in ("PPO", "GRPO", "DPO", "PPO-ptx")}
    assert counts["PPO"] == counts["GRPO"] == counts["DPO"] == 30 * 32 * 2
    assert counts["PPO-ptx"] == counts["PPO"] + 30 * 2 * 2 * 16  # its demonstrations come on top


def test_method_settings_change_only_what_the_method_needs():
    post = settings_for("default")["post_training"]
    grpo = alignment.method_settings("GRPO", post, seed=2)["ppo"]
    assert grpo["advantage_estimator"] == "grpo" and grpo["per_device_train_batch_size"] == 8 and grpo["seed"] == 2
    assert alignment.method_settings("PPO", post, 1)["ppo"]["ptx_coef"] == 0.0
    assert alignment.method_settings("PPO-ptx", post, 1)["ppo"]["ptx_coef"] == post["ppo"]["ptx_coef"]
    assert alignment.method_settings("DPO", post, 1)["dpo"]["max_steps"] == 60
    assert post["ppo"].get("seed") is None  # the lifecycle's table is not changed in place
    with pytest.raises(ValueError, match="unknown method"):
        alignment.method_settings("RLAIF", post, 0)


def test_paired_over_seeds_is_the_paired_t_test():
    first, second = [0.10, 0.20, 0.15], [0.30, 0.31, 0.40]
    result = alignment.paired_over_seeds(first, second)
    differences = np.subtract(second, first)
    assert result["mean"] == pytest.approx(differences.mean())
    assert result["se"] == pytest.approx(differences.std(ddof=1) / math.sqrt(3))
    assert result["p_value"] == pytest.approx(stats.ttest_rel(second, first).pvalue)
    assert math.isnan(alignment.paired_over_seeds([0.1], [0.2])["p_value"])


def test_pearson_interval_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    y = x + rng.normal(size=80)
    result = stats.pearsonr(x, y)
    low, high = alignment.pearson_interval(result.statistic, 80)
    interval = result.confidence_interval(0.95)
    assert low == pytest.approx(interval.low, abs=1e-6) and high == pytest.approx(interval.high, abs=1e-6)
    assert all(math.isnan(v) for v in alignment.pearson_interval(0.5, 3))
