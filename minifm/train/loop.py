"""The one training loop every stage uses (pre-training now; SFT, reward model, DPO, ... reuse it).

A stage supplies three things and the loop does the rest:
  loss_fn(model, batch) -> (loss Tensor (scalar, a mean over the batch's tokens), n_tokens int)
  batches(rng)          -> an iterator of batches whose order depends only on the numpy Generator
  eval_fn(model)        -> dict of held-out metrics (optional; called under no_grad in eval mode)

One optimizer update ("step") =
  for each of grad_accum micro-batches: loss, n = loss_fn(model, batch); (n * loss).backward()
  divide the accumulated gradients by the total n  (so the update equals the big-batch gradient
                                                     of the token-mean loss, whatever each n is)
  clip_grad_norm(params, clip); lr = schedule(step + 1); optimizer.step()

Around it: a tqdm bar (loss, tokens/s, ETA), a JSON line per step in metrics.jsonl, evaluation every
`eval_every` steps, an atomic checkpoint (minifm.checkpoint) every `save_every` steps and at the
end. Safety:
  * resume (`resume=True`) restores weights, optimizer moments and step, the schedule position, the
    data order and the dropout RNG, and continues bit-for-bit: the data iterator is rebuilt from
    the seed and advanced past the micro-batches already consumed (then the RNG state is compared
    with the saved one, so a non-deterministic iterator is caught), and `model.rng` gets its saved
    state back;
  * Ctrl-C finishes the current step, saves a checkpoint and raises `TrainingInterrupted` (a second
    Ctrl-C aborts at once); a KeyboardInterrupt raised inside a step discards that half step and
    saves the last completed one;
  * a NaN/inf loss or gradient norm stops the run with `NonFiniteLossError` *without* saving, so
    the last good checkpoint on disk stays the one to resume from.

Simplifications: one process, one model, one optimizer; micro-batches are weighted by their
n_tokens (pass `accumulate="mean"` to weight them equally); metrics are appended per step.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minifm.autograd.grad_mode import no_grad


# ---------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Hyper-parameters of the shared loop (names follow nanoGPT / HF TrainingArguments where they exist)."""

    max_steps: int = 200          # optimizer updates
    batch_size: int = 16          # sequences per micro-batch (the stage's batch builder reads it)
    lr: float = 1e-3              # peak learning rate
    min_lr: float = 1e-4          # floor of the cosine / linear decay
    warmup_steps: int = 20        # linear warm-up from 0 to lr
    schedule: str = "cosine"      # "cosine" | "linear" | "constant" (after warm-up)
    grad_accum: int = 1           # micro-batches per update
    accumulate: str = "tokens"    # weight of a micro-batch in the update: "tokens" (n_tokens) | "mean" (equal)
    clip: float = 1.0             # max global gradient norm (0 = no clipping)
    weight_decay: float = 0.1     # AdamW decoupled decay, applied to matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    eval_every: int = 100         # evaluate every N steps (0 = only at the end)
    save_every: int = 0           # checkpoint every N steps (0 = only at the end)
    seed: int = 0                 # seeds the data order
    progress: bool = True         # show the tqdm bar

    # fields that may differ between a run and its resumption without changing its trajectory
    RESUME_FREE = ("max_steps", "eval_every", "save_every", "progress")

    def __post_init__(self):
        checks = [
            ("max_steps", self.max_steps >= 0), ("batch_size", self.batch_size >= 1), ("lr", self.lr >= 0),
            ("min_lr", self.min_lr >= 0), ("warmup_steps", self.warmup_steps >= 0),
            ("schedule", self.schedule in ("cosine", "linear", "constant")), ("grad_accum", self.grad_accum >= 1),
            ("accumulate", self.accumulate in ("tokens", "mean")), ("clip", self.clip >= 0),
            ("weight_decay", self.weight_decay >= 0), ("beta1", 0 <= self.beta1 < 1),
            ("beta2", 0 <= self.beta2 < 1), ("eps", self.eps > 0), ("eval_every", self.eval_every >= 0),
            ("save_every", self.save_every >= 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} has an invalid value: {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; valid keys: {valid}")
        return cls(**values)


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN/inf; the run stopped and saved nothing new."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: a checkpoint of the last completed step was saved (resume with resume=True)."""

    def __init__(self, message: str, step: int, checkpoint_dir: str | None):
        super().__init__(message)
        self.step = step
        self.checkpoint_dir = checkpoint_dir


@dataclass
class TrainResult:
    step: int                      # optimizer updates done in total
    tokens: int                    # tokens seen in total
    elapsed_s: float               # training wall time in total (all resumptions)
    history: list                  # every metrics row of this run (steps and evaluations)
    final_eval: dict               # the last evaluation's metrics (empty without eval_fn)
    run_dir: str | None

    def losses(self) -> list[float]:
        return [row["loss"] for row in self.history if "loss" in row]


# ---------------------------------------------------------------------------------------- helpers
def make_schedule(config: TrainConfig):
    """The `lr = schedule(t)` callable of minifm.optim.schedules named by config.schedule."""
    from minifm.optim import schedules

    total = max(config.max_steps, 1)
    warmup = min(config.warmup_steps, total)
    if config.schedule == "constant":
        return schedules.constant(config.lr)
    if config.schedule == "linear":
        return schedules.warmup_linear(config.lr, warmup, total, min_lr=min(config.min_lr, config.lr))
    return schedules.warmup_cosine(config.lr, warmup, total, min_lr=min(config.min_lr, config.lr))


def learning_rate(step: int, config: TrainConfig) -> float:
    """LR of update number `step` (0-based). The schedule is read at step + 1 so the first update is not
    wasted at lr = 0 (the schedules start their warm-up from 0 at t = 0); it reaches min_lr at the last."""
    return float(make_schedule(config)(step + 1))


def make_optimizer(model, config: TrainConfig):
    """AdamW with weight decay on weight matrices only (no decay on biases, norms, embeddings)."""
    from minifm.optim import AdamW, param_groups_for_weight_decay

    groups = param_groups_for_weight_decay(model, config.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (every parameter has requires_grad=False)")
    return AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)


def _global_grad_norm(params) -> float:
    total = 0.0
    for p in params:
        if p.grad is not None:
            total += float(np.sum(np.square(p.grad, dtype=np.float64)))
    return math.sqrt(total)


def read_metrics(path) -> list[dict]:
    """The rows of a metrics.jsonl file (an empty list when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _rng_state(rng) -> dict | None:
    return None if rng is None else copy.deepcopy(rng.bit_generator.state)


# ---------------------------------------------------------------------------------------- trainer
class Trainer:
    """Runs the shared loop for one stage (see the module docstring); `fit()` returns a TrainResult."""

    def __init__(self, model, loss_fn, batches, config: TrainConfig, run_dir=None, optimizer=None, eval_fn=None,
                 stage: str = "train", run_config: dict | None = None, extra_state: dict | None = None):
        if not callable(loss_fn) or not callable(batches):
            raise TypeError("loss_fn(model, batch) and batches(rng) must be callables")
        self.model = model
        self.loss_fn = loss_fn
        self.batches = batches
        self.config = config
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.optimizer = optimizer if optimizer is not None else make_optimizer(model, config)
        self.eval_fn = eval_fn
        self.stage = stage
        self.run_config = dict(run_config or {})
        self.extra_state = dict(extra_state or {})
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.schedule = make_schedule(config)
        self._interrupt_requested = False

    # ------------------------------------------------------------------ state
    def _snapshot(self, step, tokens, micro_batches, elapsed, data_rng) -> dict:
        """Everything besides weights/optimizer that a bit-for-bit resume needs, at a step boundary."""
        return {
            "stage": self.stage, "step": step, "tokens": tokens, "micro_batches": micro_batches,
            "elapsed_s": elapsed, "data_rng_state": _rng_state(data_rng),
            "model_rng_state": _rng_state(getattr(self.model, "rng", None)),
            "train_config": self.config.to_dict(), "extra": self.extra_state,
        }

    def save(self, snapshot: dict) -> None:
        if self.run_dir is None:
            return
        from minifm.checkpoint import save_checkpoint

        run_config = dict(self.run_config)
        run_config.setdefault("train", self.config.to_dict())
        run_config.setdefault("stage", self.stage)
        save_checkpoint(self.run_dir, self.model, optimizer=self.optimizer, train_state=snapshot, config=run_config)

    def _load(self) -> dict:
        from minifm.checkpoint import load_checkpoint

        if self.run_dir is None or not (self.run_dir / "train_state.json").exists():
            raise FileNotFoundError(f"resume: no checkpoint (train_state.json) in {self.run_dir}")
        state = load_checkpoint(self.run_dir, self.model, optimizer=self.optimizer)
        if state.get("stage") != self.stage:
            raise ValueError(f"resume: the checkpoint in {self.run_dir} is from stage {state.get('stage')!r}, "
                             f"not {self.stage!r}")
        saved = state.get("train_config", {})
        current = self.config.to_dict()
        changed = sorted(k for k in current if k not in TrainConfig.RESUME_FREE and saved.get(k) != current[k])
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(f"resume: these settings differ from the checkpoint's and would change the run: {details}")
        if state.get("model_rng_state") is not None and getattr(self.model, "rng", None) is not None:
            self.model.rng.bit_generator.state = state["model_rng_state"]
        return state

    # ------------------------------------------------------------------ one update
    def _update(self, step: int, batch_iter) -> tuple[float, int, float, float]:
        """One optimizer step over grad_accum micro-batches; returns (loss, tokens, grad_norm, lr)."""
        config = self.config
        self.optimizer.zero_grad()
        weighted_loss, total_weight, tokens = 0.0, 0.0, 0
        for micro in range(config.grad_accum):
            try:
                batch = next(batch_iter)
            except StopIteration:
                raise RuntimeError(f"the batch iterator ran out at step {step}; batches(rng) must not end "
                                   "before max_steps * grad_accum micro-batches") from None
            self._micro_batches += 1
            loss, n_tokens = self.loss_fn(self.model, batch)
            value = float(np.asarray(loss.data))
            if not math.isfinite(value):
                raise NonFiniteLossError(self._nonfinite_message(f"the loss is {value}", step, micro))
            weight = float(n_tokens) if config.accumulate == "tokens" else 1.0
            if config.grad_accum == 1:
                loss.backward()
            else:
                (loss * weight).backward()
            weighted_loss += value * weight
            total_weight += weight
            tokens += int(n_tokens)
        if config.grad_accum > 1 and total_weight > 0:
            for p in self.params:
                if p.grad is not None:
                    p.grad = p.grad * np.asarray(1.0 / total_weight, dtype=p.grad.dtype)
        if config.clip > 0:
            from minifm.optim import clip_grad_norm

            grad_norm = float(clip_grad_norm(self.params, config.clip, error_if_nonfinite=False))
        else:
            grad_norm = _global_grad_norm(self.params)
        if not math.isfinite(grad_norm):
            raise NonFiniteLossError(self._nonfinite_message(f"the gradient norm is {grad_norm}", step, None))
        lr = float(self.schedule(step + 1))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._in_update = True
        self.optimizer.step()
        self._in_update = False
        return weighted_loss / max(total_weight, 1e-300), tokens, grad_norm, lr

    def _nonfinite_message(self, what: str, step: int, micro) -> str:
        where = f"step {step}" + ("" if micro is None else f", micro-batch {micro}")
        last = self._last_saved_step
        kept = (f"the last good checkpoint (step {last}) in {self.run_dir} is kept" if last is not None
                else "no checkpoint had been saved yet")
        return (f"training stopped: {what} at {where} of stage {self.stage!r}; {kept}. "
                "Try a lower lr, a longer warm-up or gradient clipping.")

    # ------------------------------------------------------------------ evaluation / logging
    def evaluate(self) -> dict:
        if self.eval_fn is None:
            return {}
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        try:
            with no_grad():
                metrics = dict(self.eval_fn(self.model))
        finally:
            self.model.train(was_training)
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise NonFiniteLossError(f"evaluation metric {name} is {value}")
        return metrics

    def _log(self, row: dict) -> None:
        self.history.append(row)
        if self._metrics_handle is not None:
            self._metrics_handle.write(json.dumps(row) + "\n")
            self._metrics_handle.flush()

    def _on_sigint(self, signum, frame):
        if self._interrupt_requested:
            raise KeyboardInterrupt  # second Ctrl-C: stop at once
        self._interrupt_requested = True
        from tqdm import tqdm

        tqdm.write("Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again to abort without saving)")

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> TrainResult:
        from tqdm import tqdm

        config = self.config
        self.history = []
        self._in_update = False
        self._last_saved_step = None
        step, tokens, elapsed_before, micro_done = 0, 0, 0.0, 0
        if resume:
            state = self._load()
            step, tokens = int(state["step"]), int(state["tokens"])
            elapsed_before, micro_done = float(state["elapsed_s"]), int(state["micro_batches"])
            self._last_saved_step = step
        data_rng = np.random.default_rng(config.seed)
        batch_iter = iter(self.batches(data_rng))
        for _ in range(micro_done):  # replay the data order up to where the checkpoint left it
            next(batch_iter)
        if resume and state.get("data_rng_state") is not None and _rng_state(data_rng) != state["data_rng_state"]:
            raise RuntimeError("resume: replaying the batch iterator did not reproduce the saved data RNG state; "
                               "batches(rng) must draw all its randomness from rng")
        self._micro_batches = micro_done
        self._metrics_handle = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            metrics_path = self.run_dir / "metrics.jsonl"
            if resume:  # drop rows written after the checkpoint (a crashed run may have gone further)
                kept = [row for row in read_metrics(metrics_path) if row.get("step", 0) <= step]
                from minifm.checkpoint import atomic_write_bytes

                atomic_write_bytes(metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))
            elif metrics_path.exists():
                metrics_path.unlink()
            self._metrics_handle = open(metrics_path, "a", encoding="utf-8")
        snapshot = self._snapshot(step, tokens, micro_done, elapsed_before, data_rng)
        final_eval: dict = {}
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        self._interrupt_requested = False
        bar = tqdm(total=config.max_steps, initial=step, desc=self.stage, unit="step", disable=not config.progress,
                   dynamic_ncols=True, leave=True)
        self.model.train()
        started = time.perf_counter()
        last_eval_step = None
        try:
            while step < config.max_steps:
                step_started = time.perf_counter()
                try:
                    loss, step_tokens, grad_norm, lr = self._update(step, batch_iter)
                except KeyboardInterrupt:
                    if self._in_update:  # weights may be half-updated: do not save them
                        raise
                    self._restore_rng(snapshot)
                    self._interrupt(snapshot)
                step += 1
                tokens += step_tokens
                step_time = time.perf_counter() - step_started
                elapsed = elapsed_before + time.perf_counter() - started
                row = {"stage": self.stage, "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                       "tokens": tokens, "tokens_per_s": step_tokens / max(step_time, 1e-9), "elapsed_s": elapsed}
                self._log(row)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{row['tokens_per_s']:.0f}", lr=f"{lr:.2e}")
                bar.update(1)
                snapshot = self._snapshot(step, tokens, self._micro_batches, elapsed, data_rng)
                if self.eval_fn is not None and config.eval_every and step % config.eval_every == 0:
                    final_eval = self.evaluate()
                    last_eval_step = step
                    self._log({"stage": self.stage, "step": step, **final_eval})
                    bar.write(f"[{self.stage}] step {step}: " + ", ".join(
                        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in final_eval.items()))
                if config.save_every and step % config.save_every == 0 and step < config.max_steps:
                    self.save(snapshot)
                    self._last_saved_step = step
                if self._interrupt_requested:
                    self._interrupt(snapshot)
            if self.eval_fn is not None and last_eval_step != step:
                final_eval = self.evaluate()
                self._log({"stage": self.stage, "step": step, **final_eval})
            self.save(snapshot)
            self._last_saved_step = step
        finally:
            bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            if self._metrics_handle is not None:
                self._metrics_handle.close()
        return TrainResult(step=step, tokens=tokens, elapsed_s=snapshot["elapsed_s"], history=self.history,
                           final_eval=final_eval, run_dir=None if self.run_dir is None else str(self.run_dir))

    def _restore_rng(self, snapshot: dict) -> None:
        """Undo the dropout draws of a half-done step so the saved RNG state matches the saved weights."""
        if snapshot.get("model_rng_state") is not None and getattr(self.model, "rng", None) is not None:
            self.model.rng.bit_generator.state = snapshot["model_rng_state"]

    def _interrupt(self, snapshot: dict):
        self.save(snapshot)
        where = str(self.run_dir) if self.run_dir is not None else None
        message = (f"interrupted: checkpoint of step {snapshot['step']} saved in {where}; resume with --resume"
                   if where else f"interrupted at step {snapshot['step']} (no run_dir, nothing saved)")
        raise TrainingInterrupted(message, snapshot["step"], where)


def train(model, loss_fn, batches, config: TrainConfig, run_dir=None, optimizer=None, eval_fn=None,
          stage: str = "train", resume: bool = False, run_config: dict | None = None,
          extra_state: dict | None = None) -> TrainResult:
    """Run the shared loop once: `Trainer(...).fit(resume)` (see the module docstring)."""
    trainer = Trainer(model, loss_fn, batches, config, run_dir=run_dir, optimizer=optimizer, eval_fn=eval_fn,
                      stage=stage, run_config=run_config, extra_state=extra_state)
    return trainer.fit(resume=resume)


__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "Trainer", "TrainingInterrupted",
           "learning_rate", "make_optimizer", "make_schedule", "read_metrics", "train"]
