"""A save killed at any instant: load_checkpoint gives the previous complete checkpoint (with a
warning) or the new one, never an error and never a mix; the next save clears the leftovers.

The kill is simulated in-process by `killed_after(k)`: the first k changes the save makes to the
directory (writing a temporary, os.link, os.replace, os.unlink) happen, the next one is cut short
(a temporary is left half-written) and raises `ProcessKilled`, and every later change is refused
too, so no clean-up code runs after the "kill". One test kills a real process with os._exit.
"""
import contextlib
import copy
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minifm.checkpoint as ckpt
from minifm.models import GPT, GPTConfig
from minifm.optim import AdamW

CONFIG = dict(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4)


class ProcessKilled(BaseException):
    """The simulated kill (a BaseException, like a real signal's KeyboardInterrupt, so no `except Exception` stops it)."""


REAL_PROCESS_GONE = ckpt._process_gone


@contextlib.contextmanager
def killed_after(k, only=None):
    """Let k directory changes (of kind `only`, if given: "write", "link", "replace", "unlink") through,
    kill the save at the next one; yields a counter of the changes made (k=None: never kill, only count)."""
    state = {"changes": 0, "killed": False}
    real = {"replace": os.replace, "link": os.link, "unlink": os.unlink, "write": ckpt._write_temporary}

    def change(name, *args):
        if state["killed"]:
            raise ProcessKilled("this process is dead")
        if only is not None and name != only:
            return real[name](*args)
        if k is not None and state["changes"] == k:
            state["killed"] = True
            if name == "write":  # die half-way through writing the temporary
                path, data = args
                real["write"](path, data[: len(data) // 2])
            raise ProcessKilled(f"killed at change {k} ({name})")
        state["changes"] += 1
        return real[name](*args)

    os.replace = lambda *a: change("replace", *a)
    os.link = lambda *a: change("link", *a)
    os.unlink = lambda *a: change("unlink", *a)
    ckpt._write_temporary = lambda *a: change("write", *a)
    try:
        yield state
    finally:
        os.replace, os.link, os.unlink = real["replace"], real["link"], real["unlink"]
        ckpt._write_temporary = real["write"]


@pytest.fixture(autouse=True)
def earlier_processes_are_gone(monkeypatch):
    """Each save stands for a new process: the temporaries of earlier (killed) saves count as stale.
    (fsync is skipped: a killed process loses nothing the kernel holds; power loss is not simulated.)"""
    monkeypatch.setattr(ckpt, "_process_gone", lambda pid: True)
    monkeypatch.setattr(os, "fsync", lambda descriptor: None)


class Run:
    """A tiny policy, value model and optimizer whose every save gets distinct weights and moments;
    `saved[step]` remembers what each save attempt wrote."""

    def __init__(self):
        self.model = GPT(GPTConfig(**CONFIG, seed=0))
        self.value = GPT(GPTConfig(**CONFIG, seed=1))
        self.optimizer = AdamW(self.model.parameters(), lr=1e-2)
        self.ids = np.arange(10).reshape(2, 5) % CONFIG["vocab_size"]
        self.saved, self.step = {}, -1
        self.train_step()  # the optimizer has moments from the start, step 0

    def train_step(self):
        self.optimizer.zero_grad()
        self.model.loss(self.ids[:, :-1], self.ids[:, 1:]).backward()
        self.optimizer.step()
        for parameter in self.value.parameters():
            parameter.data += 1.0
        self.step += 1

    def save(self, directory, optimizer=True, value=True, config=True, kill_at=None, only=None):
        """Save (killed at change `kill_at` of kind `only`, if any); return True if the save completed."""
        self.saved[self.step] = dict(
            model=self.model.state_dict(copy=True), value=self.value.state_dict(copy=True) if value else None,
            moments=self.moments(self.optimizer) if optimizer else None)
        with killed_after(kill_at, only):
            try:
                ckpt.save_checkpoint(directory, self.model, self.optimizer if optimizer else None,
                                     train_state={"step": self.step}, config={"run": 1} if config else None,
                                     extra_models={"value": self.value} if value else None)
            except ProcessKilled:
                return False
        return True

    @staticmethod
    def moments(optimizer):
        return [optimizer.state[p][key].copy() for p in optimizer._all_params() for key in ("exp_avg", "exp_avg_sq")]

    def load(self, directory):
        """Load into fresh objects; return (step loaded, the warning's message or None), after checking
        that every file loaded belongs to that one step."""
        step = ckpt.read_train_state(directory)["step"]
        expected = self.saved[step]
        model = GPT(GPTConfig(**CONFIG, seed=7))
        optimizer = AdamW(model.parameters(), lr=1e-2) if expected["moments"] is not None else None
        value = GPT(GPTConfig(**CONFIG, seed=8)) if expected["value"] is not None else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = ckpt.load_checkpoint(directory, model, optimizer, extra_models={"value": value} if value else None)
        assert state == {"step": step}
        assert ckpt.checkpoint_record(directory)["files"].keys() >= {"model.safetensors"}
        for name, array in expected["model"].items():
            np.testing.assert_array_equal(model.state_dict()[name], array, err_msg=f"model {name}, step {step}")
        if value is not None:
            for name, array in expected["value"].items():
                np.testing.assert_array_equal(value.state_dict()[name], array, err_msg=f"value {name}, step {step}")
        if optimizer is not None:
            for got, want in zip(self.moments(optimizer), expected["moments"]):
                np.testing.assert_array_equal(got, want, err_msg=f"optimizer moments, step {step}")
        messages = [str(w.message) for w in caught if issubclass(w.category, ckpt.CheckpointRecoveredWarning)]
        assert len(messages) <= 1
        return step, (messages[0] if messages else None)


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".prev", ".tmp")))


def count_changes(tmp_path, **files):
    """How many directory changes a save over an existing checkpoint makes (one full save, counted)."""
    run = Run()
    run.save(tmp_path / "count", **files)
    run.train_step()
    with killed_after(None) as counter:
        ckpt.save_checkpoint(tmp_path / "count", run.model, run.optimizer if files.get("optimizer", True) else None,
                             train_state={"step": 1}, config={"run": 1} if files.get("config", True) else None,
                             extra_models={"value": run.value} if files.get("value", True) else None)
    return counter["changes"]


@pytest.mark.parametrize("files", [dict(), dict(optimizer=False, value=False, config=False)], ids=["all", "model-only"])
def test_a_save_killed_at_any_change_loads_the_old_or_the_new_checkpoint(tmp_path, files):
    names = {"model.safetensors", "config.json", "train_state.json"} | (
        {"optimizer.safetensors", "value.safetensors"} if not files else set())  # config.json: the model's config
    total = count_changes(tmp_path, **files)
    # per file: write its temporary, unlink a stale <name>.prev, link <name>.prev, rename, remove <name>.prev
    assert total == 5 * len(names)
    outcomes, fresh = set(), Run()
    for k in range(total):
        directory = tmp_path / f"k{k}"
        run = copy.deepcopy(fresh)
        assert run.save(directory, **files)
        run.train_step()
        assert not run.save(directory, kill_at=k, **files)
        step, message = run.load(directory)
        assert step in (0, 1), k
        if message is not None:  # only the old checkpoint is ever recovered from .prev
            assert step == 0 and str(directory) in message and "step 0" in message, (k, message)
        outcomes.add((step, message is not None))
        # the next save (a new process) completes and leaves exactly the checkpoint's files
        run.train_step()
        assert run.save(directory, **files)
        assert run.load(directory) == (2, None)
        assert leftovers(directory) == [], k
        assert {p.name for p in directory.iterdir()} == names
    # every kind of outcome happened: old untouched, old recovered from .prev, new
    assert outcomes == {(0, False), (0, True), (1, False)}


@pytest.mark.parametrize("first_kill, expected", [
    (dict(kill_at=1, only="replace"), 0),  # killed mid-renames: the .prev set (step 0) is the newest whole one
    (dict(kill_at=6, only="unlink"), 1),   # killed while removing .prev: step 1 is whole, it becomes the .prev
], ids=["mid-renames", "while-removing-prev"])
def test_two_killed_saves_in_a_row_keep_the_newest_whole_checkpoint(tmp_path, first_kill, expected):
    run = Run()
    assert run.save(tmp_path)
    run.train_step()
    assert not run.save(tmp_path, **first_kill)
    run.train_step()
    assert not run.save(tmp_path, kill_at=2, only="replace")
    step, message = run.load(tmp_path)
    assert step == expected and message is not None and f"step {expected}" in message


def test_without_hard_links_the_prev_set_is_a_copy(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted (simulated: a file system without hard links)")

    monkeypatch.setattr(os, "link", no_links)
    run = Run()
    assert run.save(tmp_path)
    run.train_step()
    assert not run.save(tmp_path, kill_at=5 + 2, only="replace")  # 5 copies are renamed to <name>.prev, then 2 files
    assert (tmp_path / "model.safetensors.prev").stat().st_ino != (tmp_path / "model.safetensors").stat().st_ino
    step, message = run.load(tmp_path)
    assert step == 0 and message is not None
    run.train_step()
    assert run.save(tmp_path) and run.load(tmp_path) == (2, None) and leftovers(tmp_path) == []


def test_a_kill_during_the_very_first_save_leaves_no_checkpoint_and_no_mix(tmp_path):
    for k in range(10):
        directory = tmp_path / f"k{k}"
        run = Run()
        if run.save(directory, kill_at=k):
            assert run.load(directory) == (0, None)
            continue
        if (directory / "train_state.json").exists():
            assert run.load(directory) == (0, None)
        else:
            with pytest.raises(FileNotFoundError, match="train_state.json is missing"):
                ckpt.load_checkpoint(directory, GPT(GPTConfig(**CONFIG)))


@settings(max_examples=25)
@given(saves=st.lists(st.fixed_dictionaries(dict(
    optimizer=st.booleans(), value=st.booleans(), config=st.booleans(),
    kill_at=st.one_of(st.none(), st.integers(0, 30)))), min_size=1, max_size=5))
def test_any_sequence_of_killed_and_finished_saves_loads_a_whole_recent_checkpoint(tmp_path_factory, saves):
    directory = tmp_path_factory.mktemp("run")
    run = Run()
    last_complete = None
    for save in saves:
        run.train_step()
        completed = run.save(directory, **save)
        if completed:
            last_complete = run.step
            assert leftovers(directory) == []
        if last_complete is None and not (directory / "train_state.json").exists():
            continue  # nothing was ever completed: no checkpoint (checked in the test above)
        step, message = run.load(directory)
        # the last completed save, or a later one that got as far as its manifest; never older
        assert last_complete is None or step >= last_complete
        assert step in run.saved
        if message is not None:
            assert step < run.step


def test_a_corrupt_or_missing_manifest_falls_back_to_the_prev_set(tmp_path):
    run = Run()
    run.save(tmp_path)
    run.train_step()
    assert not run.save(tmp_path, kill_at=4, only="replace")  # killed just before the manifest's rename
    step, message = run.load(tmp_path)  # every file is new, the manifest old: the hashes do not match
    assert step == 0 and "did not complete" in message
    (tmp_path / "train_state.json").unlink()  # a new file, not an in-place edit: that would reach the .prev
    (tmp_path / "train_state.json").write_text("{ not json")  # hard link too (see the module docstring)
    step, message = run.load(tmp_path)
    assert step == 0 and "did not complete" in message
    (tmp_path / "train_state.json").unlink()
    step, message = run.load(tmp_path)
    assert step == 0 and "did not complete" in message
    run.train_step()
    assert run.save(tmp_path)
    assert run.load(tmp_path) == (2, None) and leftovers(tmp_path) == []


def test_without_a_whole_prev_set_the_hash_error_is_raised_as_before(tmp_path):
    run = Run()
    run.save(tmp_path)
    (tmp_path / "config.json").write_text('{"run": 2}')
    (tmp_path / "train_state.json.prev").write_text("{}")  # a .prev manifest that lists nothing valid
    with pytest.raises(ckpt.CheckpointError, match="config.json: SHA-256 differs"):
        run.load(tmp_path)


def test_a_real_process_killed_between_renames(tmp_path):
    """os._exit (no clean-up of any kind) after the second rename of the second save."""
    script = textwrap.dedent(f"""
        import os, sys
        import minifm.checkpoint as ckpt
        from minifm.models import GPT, GPTConfig
        model = GPT(GPTConfig(**{CONFIG!r}, seed=0))
        ckpt.save_checkpoint(sys.argv[1], model, train_state={{"step": 0}}, config={{"run": 1}})
        for p in model.parameters():
            p.data += 1.0
        real_replace, calls = os.replace, []
        def replace(*args):
            calls.append(args)
            if len(calls) == 2:
                os._exit(9)
            real_replace(*args)
        os.replace = replace
        ckpt.save_checkpoint(sys.argv[1], model, train_state={{"step": 1}}, config={{"run": 1}})
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    names = leftovers(tmp_path)
    assert [n for n in names if n.endswith(".prev")] == ["config.json.prev", "model.safetensors.prev",
                                                         "train_state.json.prev"]
    # model.safetensors was renamed; config.json's rename was the one killed: its and the manifest's temporaries stay
    temporaries = sorted(n.split(".")[1] for n in names if n.endswith(".tmp"))
    assert temporaries == ["config", "train_state"], names
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 0  # old manifest, new files

    model = GPT(GPTConfig(**CONFIG, seed=5))
    with pytest.warns(ckpt.CheckpointRecoveredWarning, match=rf"{tmp_path}: .*\(step 0\)"):
        assert ckpt.load_checkpoint(tmp_path, model) == {"step": 0}
    for name, array in GPT(GPTConfig(**CONFIG, seed=0)).state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], array, err_msg=name)

    # the next save, with the real "has that process ended?" check, removes the dead process's temporaries
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ckpt, "_process_gone", REAL_PROCESS_GONE)
        ckpt.save_checkpoint(tmp_path, model, train_state={"step": 2}, config={"run": 1})
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "train_state.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ckpt.load_checkpoint(tmp_path, GPT(GPTConfig(**CONFIG))) == {"step": 2}

