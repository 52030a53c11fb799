"""Learning-rate schedules as plain callables: `lr = schedule(step)` for step = 0, 1, 2, ...

    constant                lr(t) = max_lr
    warmup + cosine         lr(t) = max_lr * t / warmup                                        t < warmup
                            lr(t) = min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2          p = (t - warmup) / (total - warmup)
    warmup + linear         lr(t) = max_lr * t / warmup                                        t < warmup
                            lr(t) = min_lr + (max_lr - min_lr) * (1 - p)
After total_steps the decayed schedules stay at min_lr. The warmup is Hugging Face's
(get_cosine_schedule_with_warmup): it starts from 0 at step 0 and reaches max_lr at step `warmup`.
`set_lr(optimizer, lr)` writes the value into every parameter group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def _check(max_lr, warmup_steps, total_steps, min_lr):
    if max_lr < 0 or min_lr < 0:
        raise ValueError(f"learning rates must be >= 0, got max_lr={max_lr}, min_lr={min_lr}")
    if warmup_steps < 0 or total_steps < 1 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got {warmup_steps}, {total_steps}")


def _check_step(step):
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")


@dataclass(frozen=True)
class ConstantSchedule:
    max_lr: float

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.max_lr


@dataclass(frozen=True)
class _WarmupThenDecay:
    """Linear warmup 0 -> max_lr over warmup_steps, then max_lr -> min_lr by the subclass's decay(progress)."""
    max_lr: float
    warmup_steps: int
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self):
        _check(self.max_lr, self.warmup_steps, self.total_steps, self.min_lr)

    def decay(self, progress: float) -> float:
        """Fraction of (max_lr - min_lr) left at progress in [0, 1): 1 at the start, -> 0 at the end."""
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        _check_step(step)
        if step < self.warmup_steps:
            return self.max_lr * step / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.min_lr + (self.max_lr - self.min_lr) * self.decay(progress)


@dataclass(frozen=True)
class WarmupCosineSchedule(_WarmupThenDecay):
    def decay(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class WarmupLinearSchedule(_WarmupThenDecay):
    def decay(self, progress: float) -> float:
        return 1.0 - progress


def constant(max_lr: float) -> ConstantSchedule:
    return ConstantSchedule(max_lr)


def warmup_cosine(max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> WarmupCosineSchedule:
    return WarmupCosineSchedule(max_lr, warmup_steps, total_steps, min_lr)


def warmup_linear(max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> WarmupLinearSchedule:
    return WarmupLinearSchedule(max_lr, warmup_steps, total_steps, min_lr)


def set_lr(optimizer, lr: float) -> None:
    """Set "lr" in every parameter group of `optimizer`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
