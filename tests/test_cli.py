"""The `minifm` command: help on every subcommand, config files, errors, and the lifecycle end to end."""
import json

import pytest

from minifm import cli
from minifm.lifecycle import distinct_n, stage_presets

SUBCOMMANDS = sorted(cli.BUILTIN_COMMANDS) + ["sft", "reward", "ppo", "dpo"]
MY_STAGES = "curate,tokenizer,pretrain,sampling"


@pytest.mark.parametrize("command", SUBCOMMANDS + [None])
def test_help_of_every_subcommand(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: minifm" in text
    if command is None:
        assert all(name in text for name in SUBCOMMANDS)


def test_unknown_config_keys_are_rejected_with_the_valid_list(tmp_path, capsys):
    path = tmp_path / "settings.toml"
    path.write_text('max_stepz = 3\nn-layer = 2\n')
    code = cli.main(["pretrain", "--config", str(path), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown configuration keys ['max_stepz']" in err and "'max_steps'" in err and "'n_layer'" in err
    with pytest.raises(ValueError, match=r"unknown keys \['stepz'\] for stage 'pretrain'.*max_steps"):
        stage_presets("tiny", {"pretrain": {"stepz": 1}})
    with pytest.raises(ValueError, match="unknown lifecycle stage 'pretraining'"):
        stage_presets("tiny", {"pretraining": {}})


def test_config_file_values_and_flag_precedence(tmp_path):
    from minifm.train.loop import TrainConfig
    from minifm.train.pretrain import PretrainConfig

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"max_steps": 7, "lr": 0.01, "n-layer": 3, "curate": False}))
    parser = cli.build_parser()
    args = parser.parse_args(["pretrain", "--config", str(path), "--lr", "0.5"])
    config, train_config = cli.build_dataclasses(args, [PretrainConfig, TrainConfig], cli.read_config_file(path))
    assert (train_config.max_steps, train_config.lr, config.n_layer, config.curate) == (7, 0.5, 3, False)
    assert train_config.batch_size == TrainConfig().batch_size


def test_info_prints_version_backend_and_demo(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "minifm" in out and "backend" in out and "gradient norm" in out


def test_distinct_n_counts_unique_ngrams():
    assert distinct_n([[1, 2, 1, 2]], 1) == 0.5
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)
    assert distinct_n([[1], []], 2) == 0.0


@pytest.mark.slow
def test_lifecycle_tiny_end_to_end_then_generate(tmp_path, capsys):
    code = cli.main(["lifecycle", "--preset", "tiny", "--out", str(tmp_path), "--run-name", "smoke",
                     "--stages", MY_STAGES])
    assert code == 0
    run_dir = tmp_path / "smoke"
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["stages"]) == set(MY_STAGES.split(","))
    pretrain = report["stages"]["pretrain"]
    assert pretrain["val_loss"] < pretrain["first_loss"]
    sampling = report["stages"]["sampling"]["settings"]
    assert set(sampling) == {"greedy", "temperature 0.7", "temperature 1.0", "temperature 1.5", "top-k 10",
                             "top-p 0.9", "min-p 0.1"}
    # the sampling trade-off: hotter sampling is less likely under the model than cooler sampling
    assert sampling["temperature 1.5"]["mean_loglik"] < sampling["temperature 0.7"]["mean_loglik"]
    markdown = (run_dir / "report.md").read_text()
    assert "loss_curve.png" in markdown and "Sampling strategies" in markdown
    for name in ("tokenizer.json", "sampling_tradeoff.png", "pretrain/model.safetensors", "pretrain/loss_curve.png",
                 "pretrain/metrics.jsonl"):
        assert (run_dir / name).stat().st_size > 0, name

    capsys.readouterr()
    code = cli.main(["generate", "--run", str(run_dir / "pretrain"), "--prompt", "Mara lives", "--no-do-sample",
                     "--max-new-tokens", "8"])
    assert code == 0
    assert capsys.readouterr().out.startswith("Mara lives")
