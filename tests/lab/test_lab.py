"""minifm lab: the experiments' tiny presets end to end (report, plots, kept sub-runs), and the maths they use."""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifm import cli
from minifm.lab import EXPERIMENTS, run_experiment
from minifm.lab import scaling
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr, settings_fingerprint
from minifm.models.sizes import param_count


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_tiny_preset_writes_its_report_and_a_rerun_keeps_every_sub_run(name, tmp_path):
    lines = []
    lab = run_experiment(name, preset="tiny", out=tmp_path, log=lines.append)
    report = json.loads((lab.directory / "report.json").read_text())
    markdown = (lab.directory / "report.md").read_text()
    assert report["experiment"] == name and report["preset"] == "tiny"
    assert "## Question" in markdown and "## What it shows" in markdown
    for image in [part.split(")")[0] for part in markdown.split("](")[1:]]:
        assert (lab.directory / image).stat().st_size > 0, image
    assert any("done in" in line for line in lines)
    again = []
    run_experiment(name, preset="tiny", out=tmp_path, log=again.append)
    assert not any("done in" in line for line in again) and any(": kept" in line for line in again)


def test_scaling_fit_recovers_a_known_law():
    rng = np.random.default_rng(0)
    n = np.repeat([1e3, 3e3, 1e4, 3e4, 1e5], 4)
    d = np.tile([1e4, 3e4, 1e5, 3e5], 5)
    truth = np.array([1.5, math.log(30.0), math.log(60.0), 0.4, 0.3])
    loss = scaling.scaling_law(truth, n, d) + rng.normal(0, 1e-4, n.size)
    fit = scaling.fit_scaling_law(n, d, loss)
    assert fit["alpha"] == pytest.approx(0.4, abs=0.02) and fit["beta"] == pytest.approx(0.3, abs=0.02)
    assert fit["E"] == pytest.approx(1.5, abs=0.05) and fit["r_squared"] > 0.999


def test_compute_optimal_size_minimises_the_fitted_loss():
    fit = {"E": 1.0, "A": 50.0, "B": 80.0, "alpha": 0.35, "beta": 0.3}
    flops = 1e15
    n_opt, d_opt = scaling.compute_optimal(fit, flops)
    assert 6 * n_opt * d_opt == pytest.approx(flops)
    sizes = np.geomspace(n_opt / 30, n_opt * 30, 2001)
    losses = scaling.scaling_law([fit["E"], math.log(fit["A"]), math.log(fit["B"]), fit["alpha"], fit["beta"]],
                                 sizes, flops / (6 * sizes))
    assert sizes[np.argmin(losses)] == pytest.approx(n_opt, rel=0.01)


@given(st.lists(st.tuples(st.floats(1, 1e9), st.floats(0, 10)), min_size=1, max_size=30))
def test_frontier_is_the_lower_envelope(points):
    envelope = scaling.frontier(points)
    assert [loss for _, loss in envelope] == sorted((loss for _, loss in envelope), reverse=True)
    for compute, loss in points:  # no point is below the envelope at or after its compute
        reached = [l for c, l in envelope if c <= compute]
        assert reached and min(reached) <= loss


def test_the_chapters_named_models_are_within_one_percent():
    for name, (config, published, _) in scaling.NAMED_MODELS.items():
        assert abs(param_count(config) - published) / published < 0.01, name


def test_helpers_and_sub_run_files(tmp_path):
    lab = LabRun("demo", {"x": 1}, tmp_path / "lab-demo", "tiny", log=lambda line: None)
    assert lab.sub_run("a", lambda: {"value": 1.5})["value"] == 1.5
    assert LabRun("demo", {}, tmp_path / "lab-demo", "tiny", log=lambda line: None).sub_run(
        "a", lambda: pytest.fail("a kept sub-run must not run again"))["value"] == 1.5
    assert markdown_table(["a", "b"], [[1, 0.123456], ["x", float("nan")]]).splitlines()[2:] == \
        ["| 1 | 0.1235 |", "| x | n/a |"]
    mean, stderr = mean_and_stderr([1.0, 2.0, 3.0])
    assert mean == 2.0 and stderr == pytest.approx(1 / math.sqrt(3))


def test_the_command(tmp_path, capsys):
    assert cli.main(["lab", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in EXPERIMENTS) and "min" in listed
    assert cli.main(["lab"]) == 2
    assert "--list" in capsys.readouterr().err
    assert cli.main(["lab", "scaling", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err


def test_settings_fingerprint_changes_with_any_setting_but_not_with_the_seed_count():
    base = {"steps": 10, "width": 16, "seeds": 1}
    assert settings_fingerprint(base) == settings_fingerprint(dict(base, seeds=3))
    assert settings_fingerprint(base) == settings_fingerprint({"width": 16, "steps": 10})  # order does not matter
    assert len({settings_fingerprint(base), settings_fingerprint(dict(base, steps=11)),
                settings_fingerprint(dict(base, width=[16]))}) == 3
