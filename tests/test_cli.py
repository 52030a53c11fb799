"""The `minifm` command: help on every subcommand, --config files on every subcommand (typed, flags win,
unknown keys listed), one-line errors, and the lifecycle end to end followed by `generate`."""
import json

import numpy as np
import pytest

from minifm import cli
from minifm.checkpoint import save_checkpoint
from minifm.lifecycle.presets import settings_for
from minifm.models import BERT, BERTConfig, GPT, GPTConfig, RewardModel
from minifm.data import tinyworld
from minifm.runs import load_any
from minifm.tokenizer import BPETokenizer
from oracles import require
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS
from minifm.train.config import TrainConfig
from minifm.train.pretrain import PretrainConfig

SUBCOMMANDS = [command.name for command in cli.COMMANDS]
MY_STAGES = "curate,tokenizer,pretrain,sampling"


def test_every_lifecycle_step_has_a_subcommand():
    assert set(SUBCOMMANDS) == {"lifecycle", "curate", "tokenize", "pretrain", "generate", "chat", "embed", "convert",
                                "quantize", "sft", "reward", "ppo", "dpo", "lab", "info"}


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
    else:
        assert "--config FILE" in text


def required_arguments(command: str, tmp_path) -> list[str]:
    """The flags a subcommand cannot run without, pointing at paths under tmp_path (none of them written)."""
    out = ["--out", str(tmp_path / "out")]
    model = ["--model", str(tmp_path)]
    return {"generate": ["--run", str(tmp_path)], "chat": model, "embed": model + ["some text"],
            "convert": [str(tmp_path), str(tmp_path / "out")], "quantize": [str(tmp_path), "--dtype", "q8_0"] + out,
            "sft": model + out, "reward": model + out, "dpo": model + out,
            "ppo": model + out + ["--reward-model", str(tmp_path)], "pretrain": out, "tokenize": out,
            "lifecycle": out}.get(command, [])


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_rejects_an_unknown_config_key_before_any_work(command, tmp_path, capsys):
    path = tmp_path / "settings.toml"
    path.write_text("[no_such_stage]\nx = 1\n" if command == "lifecycle" else "no_such_setting = 3\n")
    assert cli.main([command, "--config", str(path)] + required_arguments(command, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_unknown_config_keys_are_listed_with_the_valid_ones(tmp_path, capsys):
    path = tmp_path / "settings.toml"
    path.write_text('max_stepz = 3\nn-layer = 2\n')
    assert cli.main(["pretrain", "--config", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown keys ['max_stepz']" in err and "'max_steps'" in err and "'n_layer'" in err
    with pytest.raises(ValueError, match=r"unknown setting 'stepz' for stage 'pretrain'.*max_steps"):
        settings_for("tiny", {"pretrain": {"stepz": 1}})
    with pytest.raises(ValueError, match="unknown lifecycle stage 'pretraining'"):
        settings_for("tiny", {"pretraining": {}})


@pytest.mark.parametrize("line, message", [
    ('max_steps = "two"', "TrainConfig.max_steps must be an integer, got 'two'"),
    ("max_steps = 2.5", "TrainConfig.max_steps must be an integer, got 2.5"),
    ('curate = "no"', "PretrainConfig.curate must be true or false, got 'no'"),
    ("learning_rate = -1.0", "TrainConfig.learning_rate must be in [0, inf], got -1.0"),
])
def test_config_values_of_the_wrong_type_or_range_are_one_line_errors(line, message, tmp_path, capsys):
    path = tmp_path / "settings.toml"
    path.write_text(line + "\n")
    assert cli.main(["pretrain", "--config", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_config_file_values_and_flag_precedence(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"max_steps": 7, "learning_rate": 0.01, "n-layer": 3, "curate": False}))
    args = cli.build_parser().parse_args(["pretrain", "--config", str(path), "--learning-rate", "0.5"])
    values = cli.common.config_values(args, cli.common.field_names(PretrainConfig, TrainConfig))
    config = cli.common.settings_from(args, PretrainConfig, file_values=values)
    train_config = cli.common.settings_from(args, TrainConfig, file_values=values)
    assert (train_config.max_steps, train_config.learning_rate, config.n_layer, config.curate) == (7, 0.5, 3, False)
    assert train_config.per_device_train_batch_size == TrainConfig().per_device_train_batch_size


def test_tokenize_reads_its_config_file(tmp_path, capsys):
    path = tmp_path / "settings.toml"
    path.write_text("vocab_size = 300\ncorpus_bytes = 20000\n")
    assert cli.main(["tokenize", "--config", str(path), "--out", str(tmp_path), "--run-name", "tok"]) == 0
    assert "trained 300 ids" in capsys.readouterr().out


def test_argparse_prefixes_are_not_accepted(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["curate", "--out", str(tmp_path)])  # --out is not curate's --output
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --out" in capsys.readouterr().err


def test_info_prints_version_backend_and_demo(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "minifm" in out and "backend" in out and "gradient norm" in out


@pytest.mark.parametrize("kind", ["bert", "reward"])
def test_generate_refuses_models_that_do_not_continue_text(kind, tmp_path, capsys):
    if kind == "bert":
        model = BERT(BERTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16))
    else:
        model = RewardModel(GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16)))
    save_checkpoint(tmp_path, model)
    BPETokenizer.train(tinyworld.clean_corpus(5_000), 300, special_tokens=DEFAULT_SPECIAL_TOKENS).save(
        tmp_path / "tokenizer.json")
    assert cli.main(["generate", "--run", str(tmp_path), "--prompt", "Mara"]) == 2
    err = capsys.readouterr().err
    assert ("encoder-only" in err) if kind == "bert" else ("does not generate" in err)


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

    # the trained model and its tokenizer leave as a Hugging Face directory that transformers runs the same
    torch, transformers = require("torch"), require("transformers")
    assert cli.main(["convert", str(run_dir / "pretrain"), str(tmp_path / "hf")]) == 0
    model, tokenizer = load_any(run_dir / "pretrain")
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Mara lives in Tollby. Ivo keeps bees."
    ids = tokenizer.encode(text)
    assert hf_tokenizer(text)["input_ids"] == ids
    with torch.no_grad():
        theirs = exported(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(theirs, model(np.array([ids])).data, atol=2e-5, rtol=2e-5)


# ---------------------------------------------------------------- outputs are checked before any work
TINY_PRETRAIN = ["--max-steps", "2", "--corpus-bytes", "30000", "--vocab-size", "300", "--n-layer", "1",
                 "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--eval-batches", "1", "--disable-tqdm"]
UNWRITABLE = "/proc/sys/minifm-runs"  # a directory nobody may create, not even root


@pytest.mark.parametrize("command", ["pretrain", "tokenize", "lifecycle"])
@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(command, where, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    out = str(target) if where == "file" else UNWRITABLE
    assert cli.main([command, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err, err
    assert ("is a file" in err) if where == "file" else ("no permission to write in /proc/sys" in err)
    assert target.read_text() == "not a directory"


def test_post_training_output_checks(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("x")
    assert cli.main(["sft", "--model", str(tmp_path), "--out", str(target)]) == 2
    assert "--out" in capsys.readouterr().err
    assert cli.main(["curate", "--output", str(tmp_path)]) == 2  # a directory where a file is wanted
    assert "is a directory" in capsys.readouterr().err


def test_generation_lengths_are_validated(tmp_path, capsys):
    for value in ("0", "-5"):
        assert cli.main(["generate", "--run", str(tmp_path), "--max-new-tokens", value]) == 2
        err = capsys.readouterr().err.strip()
        assert f"GenerateSettings.max_new_tokens must be in [1, inf], got {value}" in err


@pytest.mark.slow
def test_a_finished_run_is_never_overwritten_and_resume_uses_its_own_settings(tmp_path, capsys):
    argv = ["pretrain", "--out", str(tmp_path), "--run-name", "r"] + TINY_PRETRAIN
    assert cli.main(argv) == 0
    weights = (tmp_path / "r" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert cli.main(argv) == 2                                            # the same command again
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == weights
    # --resume with no model flags: the run's own settings (n_embd 16, ...) are used, max_steps extended
    assert cli.main(["pretrain", "--out", str(tmp_path), "--run-name", "r", "--resume", "--max-steps", "3",
                     "--disable-tqdm"]) == 0
    assert "resuming with the run's own settings" in capsys.readouterr().out
    state = json.loads((tmp_path / "r" / "train_state.json").read_text())
    assert state["step"] == 3
    assert cli.main(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_flag_says_what_it_does(command):
    subparsers = next(action for action in cli.build_parser()._actions if action.dest == "command")
    parser = subparsers.choices[command]
    assert parser.description
    for action in parser._actions:
        assert action.help and not action.help.startswith("(default"), (command, action.option_strings)


def test_interactive_prompt_cancels_an_answer_on_ctrl_c_and_quits_on_an_empty_line(monkeypatch, capsys):
    from minifm.cli.generate import interactive

    lines = iter(["first", "second", ""])
    monkeypatch.setattr("builtins.input", lambda prompt: next(lines))
    answers = {"first": KeyboardInterrupt(), "second": [" answer"]}

    def complete(prompts):
        answer = answers[prompts[0]]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    interactive(complete)
    out = capsys.readouterr().out
    assert "(cancelled)" in out and "second answer" in out
