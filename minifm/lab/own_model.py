"""minifm's own models for the laboratory: the lifecycle's pre-trained GPT, SFT model, reward model and DPO model.

Several experiments study "minifm's own SFT model". They build it exactly as `minifm lifecycle` does,
with the lifecycle's stage functions and presets (no training code here):

    pretrain()       curate_stage -> tokenizer_stage -> pretrain_stage   (minifm/lifecycle/pretraining.py)
    sft()            sft_stage on a copy of the pre-trained GPT          (minifm/lifecycle/post_training.py)
    reward_model()   reward_stage, started from the SFT model
    dpo()            dpo_stage from the SFT model (the SFT model is its reference)

at one of the lifecycle's presets ("tiny" for tests, "default" for the reports), optionally with a few
settings changed (`overrides`, checked by minifm.lifecycle.presets.settings_for).

They are built once per --out folder and shared by every experiment run into it: the files live in
OUT/lab-models/lifecycle-PRESET[-HASH]/ in the lifecycle's own layout (tokenizer.json, pretrain/, sft/,
reward/, dpo/) with their own subruns.json, so the second experiment finds them "kept" and all the
experiments study the very same models. HASH names the overrides, so changed settings never reuse
models built with others. A lock file (POSIX flock) makes a second experiment started at the same
time wait for the first to finish building instead of training the same files twice.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
from pathlib import Path

from minifm.checkpoint import has_checkpoint
from minifm.lab.common import LabRun
from minifm.lifecycle.post_training import dpo_stage, reward_stage, sft_stage
from minifm.lifecycle.presets import settings_for
from minifm.lifecycle.pretraining import curate_stage, pretrain_stage, tokenizer_stage
from minifm.runs import load_model, load_run

try:  # POSIX; elsewhere two experiments started at once into one --out must not share a build
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

SHARED_FOLDER = "lab-models"
# the experiments' tiny presets all build these (seconds, for tests): the lifecycle's tiny preset made smaller
TINY_OVERRIDES = {"curate": {"corpus_bytes": 60_000}, "pretrain": {"max_steps": 20},
                  "post_training": {"n_train_pairs": 64, "n_eval_pairs": 16, "sft": {"max_steps": 10},
                                    "reward": {"max_steps": 4}, "ppo": {"max_steps": 2}}}


@contextlib.contextmanager
def build_lock(directory: Path):
    """Hold an exclusive lock on directory/.lock while a model is built (a no-op without fcntl)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w", encoding="utf-8") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def models_directory(out: Path, preset: str, overrides: dict | None) -> Path:
    """OUT/lab-models/lifecycle-PRESET, with a short hash of the overrides when there are any."""
    name = f"lifecycle-{preset}"
    if overrides:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode("utf-8")).hexdigest()[:8]
        name += f"-{digest}"
    return Path(out) / SHARED_FOLDER / name


class OwnModels:
    """The lifecycle's models at one preset, built on first use and kept (see the module docstring).

    models = OwnModels(lab, "default")
    model, tokenizer = models.pretrained()
    sft = models.sft(); reward = models.reward_model(); dpo = models.dpo()
    models.figures          {"pretrain": {...}, "sft": {...}, ...}: what each build measured
    """

    def __init__(self, lab: LabRun, preset: str, overrides: dict | None = None):
        self.lab, self.preset, self.overrides = lab, preset, overrides or {}
        self.settings = settings_for(preset, self.overrides)
        self.settings["pretrain"]["disable_tqdm"] = True  # a TrainConfig field; the lab logs its own progress
        self.directory = models_directory(lab.directory.parent, preset, self.overrides)
        self.figures: dict[str, dict] = {}
        self._loaded: dict[str, object] = {}

    def describe(self) -> str:
        """One line for a report's setup section."""
        p = self.settings["pretrain"]
        return (f"minifm's own GPT as `minifm lifecycle --preset {self.preset}` builds it ({p['n_layer']} layers x "
                f"{p['n_embd']} wide, block {p['block_size']}, {p['max_steps']} pre-training steps on tinyworld, "
                f"then SFT on tinyworld's instructions), shared in {self.directory}")

    def _build(self, key: str, compute) -> dict:
        with build_lock(self.directory):
            # re-read under the lock: another experiment may have finished this build meanwhile
            runs = LabRun("models", self.settings, self.directory, self.preset, log=self.lab.log)
            self.figures[key] = runs.sub_run(key, compute)
        return self.figures[key]

    def pretrained(self):
        """(pre-trained GPT, tokenizer): curate -> tokenizer -> pretrain, the lifecycle's first stages."""
        if "pretrained" not in self._loaded:
            def build():
                outputs = {}
                with contextlib.redirect_stdout(io.StringIO()):  # the stages print their tables
                    outputs["curate"] = curate_stage(self.directory, self.settings["curate"], outputs)
                    outputs["tokenizer"] = tokenizer_stage(self.directory, self.settings["tokenizer"], outputs)
                    outputs["pretrain"] = pretrain_stage(self.directory, self.settings["pretrain"], outputs,
                                                         resume=True)
                figures = outputs["pretrain"]["figures"]
                return {key: figures[key] for key in ("params", "steps", "tokens", "val_loss", "val_ppl")}

            self._build("pretrain", build)
            model, tokenizer = load_run(self.directory / "pretrain")
            model.eval()
            self._loaded["pretrained"] = (model, tokenizer)
        return self._loaded["pretrained"]

    def tokenizer(self):
        return self.pretrained()[1]

    def sft(self):
        """The SFT model: sft_stage on a copy of the pre-trained GPT (checkpoint in sft/)."""
        return self._stage_model("sft", self._train_sft)

    def reward_model(self):
        """The reward model: reward_stage from the SFT model on tinyworld's preference pairs (reward/)."""
        return self._stage_model("reward", self._train_reward)

    def dpo(self):
        """The DPO model: dpo_stage from the SFT model on the same pairs (dpo/)."""
        return self._stage_model("dpo", self._train_dpo)

    def post_training_settings(self) -> dict:
        """A copy of the preset's post_training table (sft, reward, ppo, dpo and the shared keys)."""
        return copy.deepcopy(self.settings["post_training"])

    def _stage_model(self, stage: str, train) -> object:
        if stage not in self._loaded:
            self._build(stage, train)
            model = load_model(self.directory / stage)
            model.eval()
            self._loaded[stage] = model
        return self._loaded[stage]

    def _train_sft(self) -> dict:
        model, tokenizer = self.pretrained()
        policy = copy.deepcopy(model)
        figures = sft_stage(policy, tokenizer, self.directory, self.settings["post_training"], log=self.lab.log,
                            resume=has_checkpoint(self.directory / "sft"))
        return {key: figures[key] for key in ("accuracy_before", "accuracy_after", "ground_truth_reward_before",
                                              "ground_truth_reward_after", "final_loss", "steps")}

    def _train_reward(self) -> dict:
        sft = self.sft()
        _, metrics = reward_stage(sft, self.tokenizer(), self.directory, self.settings["post_training"],
                                  log=self.lab.log, resume=has_checkpoint(self.directory / "reward"))
        return {key: metrics[key] for key in ("preference_accuracy", "pearson_r", "spearman_r", "n_pairs", "steps")}

    def _train_dpo(self) -> dict:
        sft = self.sft()
        sft.requires_grad_(False)  # the frozen reference; dpo_stage trains a copy
        _, metrics = dpo_stage(sft, self.tokenizer(), self.directory, self.settings["post_training"],
                               log=self.lab.log, resume=has_checkpoint(self.directory / "dpo"))
        return {"final_loss": metrics["final_loss"], "steps": metrics["steps"]}


__all__ = ["OwnModels", "SHARED_FOLDER", "TINY_OVERRIDES", "build_lock", "models_directory"]
