"""No traceback from any command-line input: every subcommand, driven with hypothesis-drawn flags and
values (well-formed, wrong-typed, out of range, missing, unwritable or wrong-kind paths), exits 0, or
exits 2 with exactly one line on stderr.

The expensive work behind each command (training, the lifecycle, BPE training, generation) is
replaced by stubs that record their call: this test is about everything before the work starts
(parsing, --config files, typed settings, path checks), which is where a user's mistakes land.
The work's own input errors are tested where the work is (tests/train, tests/lifecycle, ...).
"""
import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minifm import cli
from minifm.cli import data as data_command
from minifm.cli import generate as generate_command
from minifm.cli import lifecycle as lifecycle_command
from minifm.cli import post_training as post_training_command
from minifm.cli import pretrain as pretrain_command
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

SUBCOMMANDS = [command.name for command in cli.COMMANDS]


def flags_of(command: str) -> list:
    """(flag, argparse action) of every optional flag of a subcommand, --help excluded."""
    subparsers = next(action for action in cli.build_parser()._actions if action.dest == "command")
    parser = subparsers.choices[command]
    return [(action.option_strings[0], action) for action in parser._actions
            if action.option_strings and action.option_strings[0] not in ("-h", "--help")]


def path_values(tmp_path) -> list[str]:
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("Mara lives in Tollby.\n\nTollby lies by the sea.\n")
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("this is = not [toml\n")
    return [str(a_file), str(tmp_path), str(tmp_path / "missing"), "/proc/sys/minifm-nope", str(bad_config),
            str(a_file / "below-a-file")]


def value_strategy(tmp_path):
    return st.one_of(
        st.sampled_from(["0", "1", "2", "-1", "2.5", "1e6", "-1e-3", "nan", "inf", "two", "", "true", "no",
                         "tinyworld", "gpt", "lora", "grpo", "9" * 30]),
        st.sampled_from(path_values(tmp_path)),
        st.text(max_size=12),
    )


SMALL_CORPUS = ["Mara lives in Tollby. Tollby lies by the sea and has a red harbour with many boats.",
                "Ivo keeps bees on the hill above the town; the honey is sold at the market on Fridays."] * 4


class Stub:
    """Stands in for an expensive function: records that it was reached and returns `result`."""

    def __init__(self, result):
        self.result = result

    def __call__(self, *args, **kwargs):
        return self.result


def small_corpus(source, corpus_bytes):
    """read_texts for the test: the user's paths for real, a small fixed corpus for the generated ones."""
    if source in data_command.GENERATED_CORPORA:
        return SMALL_CORPUS
    return REAL_READ_TEXTS(source, corpus_bytes)


REAL_READ_TEXTS = data_command.read_texts
TINY_TOKENIZER = BPETokenizer.train(SMALL_CORPUS, 300, special_tokens=DEFAULT_SPECIAL_TOKENS)


def stub_the_work(patch) -> None:
    patch.setattr(pretrain_command, "run_pretraining", Stub({}))
    patch.setattr(lifecycle_command, "run_lifecycle", Stub({}))
    patch.setattr(data_command, "read_texts", small_corpus)
    patch.setattr(data_command.tinyworld, "generate_documents", Stub([]))
    patch.setattr(data_command.BPETokenizer, "train", Stub(TINY_TOKENIZER))
    patch.setattr(data_command, "fertility", Stub({}))
    patch.setattr(data_command, "format_table", Stub(""))
    patch.setattr(generate_command, "generate", Stub(None))
    for name in ("sft_stage", "reward_stage", "ppo_stage", "dpo_stage"):
        patch.setattr(post_training_command, name, Stub(None))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_any_flags_give_exit_0_or_one_clear_line(tmp_path, data):
    command = data.draw(st.sampled_from(SUBCOMMANDS), label="command")
    flags = flags_of(command)
    argv = [command]
    for flag, action in data.draw(st.lists(st.sampled_from(flags), max_size=3, unique_by=lambda f: f[0]),
                                  label="flags"):
        argv.append(flag)
        if action.nargs != 0:  # store_true / BooleanOptionalAction flags take no value
            argv.append(data.draw(value_strategy(tmp_path), label=flag))
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(stderr):
        patch.chdir(tmp_path)  # the default --out (runs/) lands in the test's folder
        stub_the_work(patch)
        try:
            code = cli.main(argv)
        except SystemExit as exit_info:  # argparse: a bad flag (2) or --version (0)
            code = exit_info.code
    message = stderr.getvalue().strip()
    assert "Traceback" not in message, (argv, message)
    assert code in (0, 2), (argv, code, message)
    if code == 2:
        assert len(message.splitlines()) == 1 and "error" in message, (argv, message)
