"""The one training loop every stage uses: pre-training, SFT, reward model, DPO and PPO.

The loop repeats one *step* until `max_steps` and owns everything around it; what a step does is
pluggable. A step kind is an object with

    model, optimizer         what a checkpoint saves (model.safetensors, optimizer.safetensors)
    extra_models             {name: Module} saved beside them as <name>.safetensors (PPO's value model)
    run_step(step) -> dict   do step number `step` (0-based) and return its metrics row
    state_dict() -> dict     its own resumable state, JSON-able (data position, RNG states, counters),
    load_state_dict(state)   taken between two steps and given back on resume
    updating                 True while the weights are half-way through a step (not safe to save)
    progress(row) -> dict    what the progress bar shows of a row

Two step kinds exist:
    SupervisedStep (below)   one optimizer update of a loss over micro-batches: pre-training, SFT,
                             reward model, DPO (`Trainer` / `train()` build it)
    PPOTrainer (ppo.py)      one PPO iteration: rollouts, advantages, epochs of clipped updates

The loop (`TrainingLoop.fit`):

    for step in range(start, max_steps):
        lr = schedule(step + 1), written into every optimizer group
        row = {"stage", **step_kind.run_step(step), "elapsed_s"}   -> metrics.jsonl, `log(row)`, tqdm bar
        every eval_steps: eval_fn(model) under no_grad in eval mode (optional)
        every save_steps: checkpoint;  after a Ctrl-C: checkpoint and stop
    last evaluation; checkpoint

The schedule is read at step + 1 so the first update is not wasted at lr = 0 (the schedules start
their warm-up from 0 at t = 0); it reaches min_lr at the last step.

Safety:
  * a checkpoint (minifm.checkpoint, atomic) holds the weights, the optimizer moments, the extra
    models (under the same manifest) and train_state.json: the step, the elapsed time, the number of
    metrics rows written, the config, and the step kind's state_dict();
  * resume (`resume=True`) loads all of it and continues bit-for-bit; it refuses a checkpoint of
    another stage, or one whose config differs in a setting that changes the run (every field but
    TrainConfig.RESUME_FREE), and drops metrics rows written after the checkpoint;
  * Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and raises
    `TrainingInterrupted` (the signal again stops at once); a KeyboardInterrupt raised inside a step
    discards that part-done step and saves the last completed one, unless the weights were already
    being changed (then nothing is saved). Output that fails (stdout or stderr a closed pipe) never
    stops a run: the bar and messages are then dropped, and a BrokenPipeError of `log` is ignored;
  * a NaN/inf loss (the step kind raises NonFiniteLossError before updating) or any non-finite
    number in a step's row stops the run with `NonFiniteLossError` *without* saving, so the last
    good checkpoint on disk stays the one to resume from.

SupervisedStep: a stage supplies
    loss_fn(model, batch) -> (loss Tensor (scalar, a mean over the batch's tokens), n_tokens int)
    batches(rng)          -> an iterator of batches whose order depends only on the numpy Generator
and one step =
    for each of gradient_accumulation_steps micro-batches: loss, n = loss_fn(model, batch); (n * loss).backward()
    divide the accumulated gradients by the total n  (so the update equals the big-batch gradient
                                                       of the token-mean loss, whatever each n is)
    clip_grad_norm(params, max_grad_norm); optimizer.step()
Its resumable state is the number of micro-batches consumed (on resume the iterator is rebuilt from
the seed and advanced past them, then the data RNG state is compared with the saved one, so a
non-deterministic iterator is caught), the tokens seen and the model's dropout RNG.

Data parallel (`mpiexec -n N minifm ...`, minifm/distributed/, docs/distributed.md): when
minifm.distributed.get_world() finds several ranks, fit() makes them train one model:
  * rank 0 alone reads a checkpoint to resume from and shares the training state (JSON bytes); its
    weights and optimizer state are then broadcast, so every rank starts from the same state;
  * the SupervisedStep draws from the same batch stream on every rank and keeps every N-th batch
    (ShardedBatches); the micro-batch count it saves is the position in that stream, so a run saved
    by N ranks continues on M ranks (each step then averages M batches instead of N: a warning
    says so) and the first round of batches is compared between the ranks (SHA-256);
  * every micro-batch's backward runs under DistributedDataParallel (buckets sent during backward;
    all but the last micro-batch of a step inside no_sync()), every rank's loss is weighted by its
    token count, and the summed gradients are divided by the token count of all ranks together:
    the update is the big-batch one, whatever each rank's count. The step's loss and token counts
    are summed over the ranks too, so every rank logs the same row;
  * with DistributedConfig.zero_stage = 1 the optimizer state is sharded (ZeroRedundancyOptimizer)
    and gathered on rank 0 for each checkpoint, which holds the files a single process writes;
  * one writer: only rank 0 writes the checkpoint, metrics.jsonl, the bar and messages, and calls
    `log(row)`; every rank evaluates (the same model gives the same numbers; nobody waits idle);
  * Ctrl-C: the ranks vote after every step (an allreduce of their stop flags), so all stop after
    the same step and rank 0 saves it; errors every rank raises together (a non-finite gradient norm
    or row, a refused checkpoint, ranks whose parameters differ) end every rank normally; an error
    of one rank alone ends the job through MPI_Abort (minifm.distributed.errors);
  * every DistributedConfig.check_every steps and at the end, the ranks compare parameter checksums
    (minifm.distributed.divergence): ranks that drifted apart stop the run without saving.
Only SupervisedStep runs data-parallel: PPOTrainer under mpiexec is refused with a message.

Simplifications: metrics are appended per step; micro-batches are weighted by their n_tokens
(`accumulate="mean"` weights them equally, and the ranks' micro-batches too, as DDP's average does).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minifm.autograd.grad_mode import no_grad
from minifm.checkpoint import atomic_write_bytes, load_checkpoint, read_train_state, save_checkpoint
from minifm.distributed import (
    DistributedConfig, DistributedDataParallel, ShardedBatches, ZeroRedundancyOptimizer, batch_digest,
    broadcast_optimizer_state, broadcast_parameters, check_parameters_agree, get_world, is_raised_on_every_rank,
    raised_on_every_rank,
)
from minifm.optim import AdamW, clip_grad_norm, grad_norm, param_groups_for_weight_decay, schedules
from minifm.train.config import TrainConfig


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
    step: int                      # steps done in total
    tokens: int                    # tokens seen in total (the step kind's "tokens" state; 0 if it counts none)
    elapsed_s: float               # training wall time in total (all resumptions)
    history: list                  # every metrics row of the run (steps, evaluations), also those before a resume
    final_eval: dict               # the last evaluation's metrics (empty without eval_fn)
    run_dir: str | None

    def losses(self) -> list[float]:
        return [row["loss"] for row in self.history if "loss" in row]


# ---------------------------------------------------------------------------------------- helpers
def make_schedule(config: TrainConfig):
    """The `lr = schedule(t)` callable of minifm.optim.schedules named by config.lr_scheduler_type."""
    total = max(config.max_steps, 1)
    warmup = min(config.warmup_steps, total)
    floor = min(config.min_lr, config.learning_rate)
    if config.lr_scheduler_type == "constant":
        return schedules.constant(config.learning_rate)
    if config.lr_scheduler_type == "linear":
        return schedules.warmup_linear(config.learning_rate, warmup, total, min_lr=floor)
    return schedules.warmup_cosine(config.learning_rate, warmup, total, min_lr=floor)


def learning_rate(step: int, config: TrainConfig) -> float:
    """LR of step number `step` (0-based): the schedule read at step + 1 (see the module docstring)."""
    return float(make_schedule(config)(step + 1))


def make_optimizer(model, config: TrainConfig, *more_models):
    """AdamW over the trainable parameters of `model` (and `more_models`), with weight decay on
    weight matrices only (no decay on biases, norms, embeddings)."""
    groups = []
    for each in (model, *more_models):
        groups += param_groups_for_weight_decay(each, config.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (every parameter has requires_grad=False)")
    return AdamW(groups, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                 eps=config.adam_epsilon)


def clip_gradients(params, max_grad_norm: float) -> float:
    """Clip the gradients' global norm to max_grad_norm (0: no clipping); return the norm before clipping.
    A NaN/inf norm raises NonFiniteLossError before anything is updated."""
    if max_grad_norm > 0:
        norm = float(clip_grad_norm(params, max_grad_norm, error_if_nonfinite=False))
    else:
        norm = grad_norm(params)
    if not math.isfinite(norm):
        raise NonFiniteLossError(f"the gradient norm is {norm}")
    return norm


def read_metrics(path) -> list[dict]:
    """The rows of a metrics.jsonl file (an empty list when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def rng_state(rng) -> dict | None:
    """A JSON-able copy of a numpy Generator's state (None for no generator)."""
    return None if rng is None else copy.deepcopy(rng.bit_generator.state)


class OutputThatNeverFails:
    """A text stream that passes writes on to `stream` until one fails (a closed pipe, a full disk),
    then drops them: the progress bar and the loop's messages going nowhere never stop a run."""

    def __init__(self, stream):
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.stream.write(text)
            except (OSError, ValueError):  # ValueError: the stream was closed
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def __getattr__(self, name):  # isatty, fileno, encoding, ... as the stream has them
        return getattr(self.stream, name)


class NoOutput:
    """Where the bar and messages of a rank other than 0 go: nowhere (one writer)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _non_finite_entries(row: dict) -> list[str]:
    return [f"{name} = {value}" for name, value in row.items() if isinstance(value, float) and not math.isfinite(value)]


# ---------------------------------------------------------------------------------------- supervised step
class SupervisedStep:
    """The step kind of pre-training, SFT, reward model and DPO: one optimizer update of loss_fn over
    gradient_accumulation_steps micro-batches (see the module docstring)."""

    def __init__(self, model, loss_fn, batches, config: TrainConfig, optimizer=None):
        if not callable(loss_fn) or not callable(batches):
            raise TypeError("loss_fn(model, batch) and batches(rng) must be callables")
        self.model = model
        self.loss_fn = loss_fn
        self.batches = batches
        self.config = config
        self.optimizer = optimizer if optimizer is not None else make_optimizer(model, config)
        self.extra_models = {}
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.updating = False
        self.micro_batches = 0  # micro-batches consumed so far (the data position)
        self.tokens = 0
        self.data_rng = np.random.default_rng(config.seed)
        self.batch_iter = None  # opened by the first step, or by load_state_dict
        # set by TrainingLoop.fit when several ranks train (see "Data parallel" in the module docstring)
        self.world = None       # minifm.distributed.World
        self.ddp = None         # DistributedDataParallel over self.params
        self.zero = None        # ZeroRedundancyOptimizer around self.optimizer (ZeRO stage 1), or None
        self._compare_stream = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"tokens": self.tokens, "micro_batches": self.micro_batches, "data_rng_state": rng_state(self.data_rng),
                "model_rng_state": rng_state(getattr(self.model, "rng", None))}

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters and the dropout RNG, and replay the data order: the batch iterator is
        rebuilt from the seed and advanced past the micro-batches already consumed."""
        self.tokens, self.micro_batches = int(state["tokens"]), int(state["micro_batches"])
        self.batch_iter = self._open_batches()
        if rng_state(self.data_rng) != state["data_rng_state"]:
            raise RuntimeError("resume: replaying the batch iterator did not reproduce the saved data RNG state; "
                               "batches(rng) must draw all its randomness from rng")
        if state.get("model_rng_state") is not None and getattr(self.model, "rng", None) is not None:
            self.model.rng.bit_generator.state = state["model_rng_state"]

    def _open_batches(self):
        """A batch iterator from a fresh data RNG, advanced past the micro-batches already consumed
        (with several ranks: this rank's share of the stream, from that position on)."""
        self.data_rng = np.random.default_rng(self.config.seed)
        batch_iter = iter(self.batches(self.data_rng))
        for _ in range(self.micro_batches):
            next(batch_iter)
        if self.world is not None and self.world.distributed:
            batch_iter = ShardedBatches(batch_iter, self.world.rank, self.world.size)
            self._compare_stream = True  # the ranks compare their first round of batches
        return batch_iter

    def progress(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.4f}", "tok_s": f"{row['tokens_per_s']:.0f}", "lr": f"{row['lr']:.2e}"}

    # ------------------------------------------------------------------ one update
    def run_step(self, step: int) -> dict:
        config = self.config
        started = time.perf_counter()
        if self.batch_iter is None:
            self.batch_iter = self._open_batches()
        self.model.train()
        self.optimizer.zero_grad()
        weighted_loss, total_weight, step_tokens = 0.0, 0.0, 0
        ddp = self.ddp
        stride = 1 if ddp is None else self.world.size  # stream positions consumed per micro-batch
        for micro in range(config.gradient_accumulation_steps):
            try:
                batch = next(self.batch_iter)
            except StopIteration:
                raise RuntimeError(f"the batch iterator ran out at step {step + 1}; batches(rng) must not end "
                                   "before max_steps * gradient_accumulation_steps micro-batches") from None
            self.micro_batches += stride
            if self._compare_stream:
                self._compare_stream = False
                self.world.check_same("the batch stream (each rank builds its own data)",
                                      batch_digest(self.batch_iter.last_round))
            loss, n_tokens = self.loss_fn(self.model, batch)
            value = float(np.asarray(loss.data))
            if not math.isfinite(value):
                raise NonFiniteLossError(f"the loss is {value} (micro-batch {micro})")
            weight = float(n_tokens) if config.accumulate == "tokens" else 1.0
            last = micro == config.gradient_accumulation_steps - 1
            # with several ranks, only the last micro-batch's backward sends the (accumulated) gradients
            with ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext():
                if config.gradient_accumulation_steps == 1 and ddp is None:
                    loss.backward()
                else:
                    (loss * weight).backward()
            weighted_loss += value * weight
            total_weight += weight
            step_tokens += int(n_tokens)
        if ddp is not None:
            ddp.finish_gradient_sync()  # p.grad: the sum over the ranks of their weighted gradients
            totals = self.world.allreduce(np.array([weighted_loss, total_weight, step_tokens], dtype=np.float64),
                                          "sum", "the sum of the step's losses and token counts")
            weighted_loss, total_weight, step_tokens = float(totals[0]), float(totals[1]), int(totals[2])
        if (config.gradient_accumulation_steps > 1 or ddp is not None) and total_weight > 0:
            for p in self.params:
                if p.grad is not None:
                    p.grad = p.grad * np.asarray(1.0 / total_weight, dtype=p.grad.dtype)
        try:
            norm = clip_gradients(self.params, config.max_grad_norm)
        except NonFiniteLossError as error:
            if ddp is not None:  # the same averaged gradients on every rank: every rank stops here
                raised_on_every_rank(error)
            raise
        self.updating = True
        if self.zero is not None:
            self.zero.step()
        else:
            self.optimizer.step()
        self.updating = False
        self.tokens += step_tokens
        lr = self.optimizer.param_groups[0]["lr"]  # set by the loop from the schedule
        return {"step": step + 1, "loss": weighted_loss / max(total_weight, 1e-300), "lr": lr, "grad_norm": norm,
                "tokens": self.tokens, "tokens_per_s": step_tokens / max(time.perf_counter() - started, 1e-9)}


# ---------------------------------------------------------------------------------------- the loop
class TrainingLoop:
    """Runs `step_kind` for config.max_steps steps with everything around it (see the module docstring);
    `fit()` returns a TrainResult. `log(row)` is called with every step's metrics row (on rank 0 only
    when several ranks train). `distributed` sets the data-parallel machinery when mpiexec started
    several ranks (default: DistributedConfig.from_environment()); `world` replaces get_world()."""

    def __init__(self, step_kind, config: TrainConfig, run_dir=None, eval_fn=None, stage: str = "train",
                 run_config: dict | None = None, extra_state: dict | None = None, log=None,
                 distributed: DistributedConfig | None = None, world=None):
        self.steps = step_kind
        self.model = step_kind.model
        self.optimizer = step_kind.optimizer
        self.config = config
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.eval_fn = eval_fn
        self.stage = stage
        self.run_config = dict(run_config or {})
        self.extra_state = dict(extra_state or {})
        self.log = log
        self.schedule = make_schedule(config)
        self.distributed_config = distributed
        self.world = world if world is not None else get_world(distributed)  # one process: rank 0 of 1
        self.communication_stats = None  # several ranks: the last fit's DDP CommunicationStats
        self._interrupt_requested = False
        self._last_saved_step = None

    # ------------------------------------------------------------------ data parallel
    def _agreed(self, error: BaseException) -> BaseException:
        """Mark an error that every rank raises at this point (see minifm.distributed.errors)."""
        return raised_on_every_rank(error) if self.world.distributed else error

    def _attach_world(self) -> DistributedConfig:
        """Several ranks: check that the step kind can run data-parallel and tell it the world."""
        settings = self.distributed_config or DistributedConfig.from_environment()
        if not isinstance(self.steps, SupervisedStep):
            raise self._agreed(ValueError(
                f"stage {self.stage!r} does not run data-parallel ({type(self.steps).__name__} does not shard its "
                f"work across ranks); run it without mpiexec, or with -n 1 (this was {self.world.describe()})"))
        self.steps.world = self.world
        return settings

    def _start_data_parallel(self, settings: DistributedConfig) -> None:
        """Rank 0's weights and optimizer state to every rank, then the gradient hooks (and ZeRO-1's shards)."""
        steps = self.steps
        broadcast_parameters(self.model, self.world)
        broadcast_optimizer_state(self.optimizer, self.world)
        steps.ddp = DistributedDataParallel(steps.params, self.world, bucket_cap_mb=settings.bucket_cap_mb,
                                            overlap=settings.overlap, average=False, broadcast=False)
        steps.zero = ZeroRedundancyOptimizer(self.optimizer, self.world) if settings.zero_stage == 1 else None

    def _stop_data_parallel(self) -> None:
        steps = self.steps
        if getattr(steps, "ddp", None) is not None:
            self.communication_stats = steps.ddp.stats  # what the gradient sync cost (benchmarks read it)
            steps.ddp.remove_hooks()
            steps.ddp = None

    def _check_parameters_agree(self, step: int) -> None:
        named = [(name, param.data) for name, param in self.model.named_parameters()]
        check_parameters_agree(named, self.world, step)

    def _stop_requested(self) -> bool:
        """Whether to stop after this step: this process's Ctrl-C, or any rank's (a vote, so all stop together)."""
        if not self.world.distributed:
            return self._interrupt_requested
        votes = self.world.allreduce(np.array([int(self._interrupt_requested)], dtype=np.int64), "max",
                                     "the vote on stopping after this step (Ctrl-C)")
        return bool(votes[0])

    # ------------------------------------------------------------------ checkpoints
    def _snapshot(self, step: int, elapsed: float) -> dict:
        """Everything besides the weights and the optimizer that a bit-for-bit resume needs, between two steps."""
        snapshot = {"stage": self.stage, "step": step, "elapsed_s": elapsed, "metrics_rows": self._metrics_rows,
                    "train_config": self.config.to_dict(), "extra": self.extra_state,
                    "step_state": copy.deepcopy(self.steps.state_dict())}
        if self.world.distributed:
            snapshot["world_size"] = self.world.size  # absent: one process
        return snapshot

    def save(self, snapshot: dict) -> None:
        """Write a checkpoint of `snapshot` (rank 0 only; with ZeRO-1 every rank must call it, to gather the state)."""
        if self.run_dir is None:
            return
        run_config = dict(self.run_config)
        run_config.setdefault("train", self.config.to_dict())
        run_config.setdefault("stage", self.stage)
        zero = getattr(self.steps, "zero", None)
        with zero.consolidated(to=0) if zero is not None else contextlib.nullcontext():
            if self.world.is_writer:
                save_checkpoint(self.run_dir, self.model, optimizer=self.optimizer, train_state=snapshot,
                                config=run_config, extra_models=self.steps.extra_models)
        self._last_saved_step = snapshot["step"]

    def _load_files(self) -> dict:
        """Check that the checkpoint in run_dir continues this run (same stage, same settings), then load
        it into the model, optimizer and extra models; return the saved training state."""
        # read first, loading nothing: refusing another stage or other settings changes nothing. Without a
        # checkpoint this raises FileNotFoundError; after an interrupted save it falls back to the previous one.
        state = read_train_state(self.run_dir)
        if state.get("stage") != self.stage:
            raise ValueError(f"resume: the checkpoint in {self.run_dir} is from stage {state.get('stage')!r}, "
                             f"not {self.stage!r}")
        saved = state.get("train_config", {})
        current = self.config.to_dict()
        changed = sorted(k for k in current if k not in TrainConfig.RESUME_FREE and saved.get(k) != current[k])
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(f"resume: these settings differ from the checkpoint's and would change the run: {details}")
        return load_checkpoint(self.run_dir, self.model, optimizer=self.optimizer,
                               extra_models=self.steps.extra_models)

    def _load(self) -> dict:
        """Load the checkpoint in run_dir and give the step kind its state; return the saved state. With
        several ranks, rank 0 alone reads the files (the others need no copy of the run directory) and
        shares the training state; its weights and optimizer state are broadcast afterwards."""
        if self.run_dir is None:
            raise self._agreed(FileNotFoundError("resume: no run directory was given"))
        if self.world.distributed:
            shared = self.world.share_from_root(lambda: json.dumps(self._load_files()).encode("utf-8"),
                                                "the loading of the checkpoint on rank 0")
            state = json.loads(shared.decode("utf-8"))
        else:
            state = self._load_files()
        self.steps.load_state_dict(state["step_state"])
        saved_size = int(state.get("world_size", 1))
        if saved_size != self.world.size and self.world.is_writer:
            warnings.warn(f"resume: the checkpoint was written by {saved_size} process(es), this run has "
                          f"{self.world.size}: the data continues where it stopped, but a step now takes "
                          f"{self.world.size} x per_device_train_batch_size sequences instead of {saved_size} x "
                          "(the learning rate is not rescaled)", stacklevel=3)
        return state

    def _interrupt(self, snapshot: dict):
        self.save(snapshot)
        where = str(self.run_dir) if self.run_dir is not None else None
        message = (f"interrupted: checkpoint of step {snapshot['step']} saved in {where}; resume with --resume"
                   if where else f"interrupted at step {snapshot['step']} (no run_dir, nothing saved)")
        raise self._agreed(TrainingInterrupted(message, snapshot["step"], where))

    def _nonfinite_message(self, what, step: int) -> str:
        last = self._last_saved_step
        kept = (f"the last good checkpoint (step {last}) in {self.run_dir} is kept" if last is not None
                else "no checkpoint had been saved yet")
        return (f"training stopped at step {step} of stage {self.stage!r}: {what}; {kept}. "
                "Try a lower learning_rate, a longer warm-up or gradient clipping.")

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
                raise self._agreed(NonFiniteLossError(f"evaluation metric {name} is {value}"))
        return metrics

    def _open_metrics(self, resume: bool, rows_kept: int):
        """metrics.jsonl opened for appending; on resume cut to the rows the checkpoint had written
        (a crashed run may have gone further), otherwise emptied. Rank 0 only."""
        if self.run_dir is None:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.run_dir / "metrics.jsonl"
        if resume:
            kept = read_metrics(metrics_path)[:rows_kept]
            atomic_write_bytes(metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))
            self.history = kept  # the result's history covers the whole run, before the resume too
        elif metrics_path.exists():
            metrics_path.unlink()
        return open(metrics_path, "a", encoding="utf-8")

    def _write_row(self, row: dict) -> None:
        self.history.append(row)
        self._metrics_rows += 1
        if self._metrics_handle is not None:
            self._metrics_handle.write(json.dumps(row) + "\n")
            self._metrics_handle.flush()

    def _evaluate_and_log(self, step: int, bar) -> dict:
        metrics = self.evaluate()
        self._write_row({"stage": self.stage, "step": step, **metrics})
        bar.write(f"[{self.stage}] step {step}: " + ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()), file=self._output)
        return metrics

    def _on_signal(self, signum, frame):
        """SIGINT (Ctrl-C) or SIGTERM: finish the step, save, stop; the same signal again stops at once."""
        if self._interrupt_requested:
            raise KeyboardInterrupt
        self._interrupt_requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        tqdm.write(f"{name}: finishing this step and saving a checkpoint ({name} again to stop at once)",
                   file=self._output)

    def _call_log(self, row: dict) -> None:
        if self.log is None or not self.world.is_writer:
            return
        try:
            self.log(row)
        except BrokenPipeError:  # the caller prints to a closed pipe: training goes on, and is saved
            pass

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> TrainResult:
        config = self.config
        world = self.world
        writer = world.is_writer
        parallel = self._attach_world() if world.distributed else None
        self.history = []
        self._last_saved_step = None
        step, elapsed_before, self._metrics_rows = 0, 0.0, 0
        try:
            if resume:
                state = self._load()
                step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
                self._metrics_rows = int(state["metrics_rows"])
                self._last_saved_step = step
            self._metrics_handle = self._open_metrics(resume, self._metrics_rows) if writer else None
            if resume and world.distributed:  # rank 0 read the rows before the checkpoint: every rank keeps them
                rows = world.broadcast_bytes(json.dumps(self.history).encode("utf-8") if writer else None, 0,
                                             "the broadcast of the metrics rows before the checkpoint")
                self.history = json.loads(rows.decode("utf-8"))
            if parallel is not None:
                self._start_data_parallel(parallel)
        except BaseException:
            self._stop_data_parallel()
            raise
        snapshot = self._snapshot(step, elapsed_before)
        final_eval: dict = {}
        self._output = OutputThatNeverFails(sys.stderr) if writer else NoOutput()
        self._interrupt_requested = False
        previous_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous_handlers[signum] = signal.signal(signum, self._on_signal)
        bar = tqdm(total=config.max_steps, initial=step, desc=self.stage, unit="step",
                   disable=config.disable_tqdm or not writer, dynamic_ncols=True, leave=True, file=self._output)
        started = time.perf_counter()
        last_eval_step = None
        check_every = parallel.check_every if parallel is not None else 0
        try:
            while step < config.max_steps:
                lr = float(self.schedule(step + 1))
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                try:
                    row = self.steps.run_step(step)
                except KeyboardInterrupt:
                    # weights may be half-updated, or (several ranks) the others are in another collective
                    if self.steps.updating or world.distributed:
                        raise
                    self._interrupt(snapshot)
                except NonFiniteLossError as error:
                    stop = NonFiniteLossError(self._nonfinite_message(error, step + 1))
                    raise (raised_on_every_rank(stop) if is_raised_on_every_rank(error) else stop) from None
                step += 1
                elapsed = elapsed_before + time.perf_counter() - started
                row = {"stage": self.stage, **row, "elapsed_s": elapsed}
                bad = _non_finite_entries(row)
                if bad:
                    raise self._agreed(NonFiniteLossError(self._nonfinite_message(", ".join(bad), step)))
                self._write_row(row)
                self._call_log(row)
                bar.set_postfix(self.steps.progress(row))
                bar.update(1)
                if check_every and step % check_every == 0:
                    self._check_parameters_agree(step)
                if self.eval_fn is not None and config.eval_steps and step % config.eval_steps == 0:
                    final_eval = self._evaluate_and_log(step, bar)
                    last_eval_step = step
                snapshot = self._snapshot(step, elapsed)
                if config.save_steps and step % config.save_steps == 0 and step < config.max_steps:
                    self.save(snapshot)
                if self._stop_requested():
                    self._interrupt(snapshot)
            if self.eval_fn is not None and last_eval_step != step:
                final_eval = self._evaluate_and_log(step, bar)
                snapshot = self._snapshot(step, snapshot["elapsed_s"])
            if world.distributed:
                self._check_parameters_agree(step)
            self.save(snapshot)
        finally:
            bar.close()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            if self._metrics_handle is not None:
                self._metrics_handle.close()
            self._stop_data_parallel()
        return TrainResult(step=step, tokens=int(snapshot["step_state"].get("tokens", 0)),
                           elapsed_s=snapshot["elapsed_s"], history=self.history, final_eval=final_eval,
                           run_dir=None if self.run_dir is None else str(self.run_dir))


class Trainer(TrainingLoop):
    """The shared loop with a SupervisedStep: `Trainer(model, loss_fn, batches, config, ...).fit(resume)`."""

    def __init__(self, model, loss_fn, batches, config: TrainConfig, run_dir=None, optimizer=None, eval_fn=None,
                 stage: str = "train", run_config: dict | None = None, extra_state: dict | None = None,
                 distributed: DistributedConfig | None = None, world=None):
        super().__init__(SupervisedStep(model, loss_fn, batches, config, optimizer=optimizer), config,
                         run_dir=run_dir, eval_fn=eval_fn, stage=stage, run_config=run_config,
                         extra_state=extra_state, distributed=distributed, world=world)


def train(model, loss_fn, batches, config: TrainConfig, run_dir=None, optimizer=None, eval_fn=None,
          stage: str = "train", resume: bool = False, run_config: dict | None = None,
          extra_state: dict | None = None) -> TrainResult:
    """Run the shared loop once with a SupervisedStep: `Trainer(...).fit(resume)` (see the module docstring)."""
    trainer = Trainer(model, loss_fn, batches, config, run_dir=run_dir, optimizer=optimizer, eval_fn=eval_fn,
                      stage=stage, run_config=run_config, extra_state=extra_state)
    return trainer.fit(resume=resume)


__all__ = ["NonFiniteLossError", "SupervisedStep", "TrainConfig", "TrainResult", "Trainer", "TrainingInterrupted",
           "TrainingLoop", "clip_gradients", "learning_rate", "make_optimizer", "make_schedule", "read_metrics",
           "rng_state", "train"]
