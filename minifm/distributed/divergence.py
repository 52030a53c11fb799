"""The divergence check: are the ranks' parameters still the same?

Data parallelism is correct only while every rank holds the same weights. They can drift apart
silently: a rank whose data differs and whose update differs through a non-averaged path, a
kernel that gives other bits on another host's CPU, a bug in a custom step. Nothing else would
notice: every rank would go on training its own model. So every `check_every` steps (100 by
default, MINIFM_DIST_CHECK_EVERY; and once at the end) the loop compares a checksum per parameter:

    checksum(p) = sum of p's raw bits read as unsigned integers (uint32 words for float32, uint64
                  for float64), accumulated in uint64 with wrap-around
    low  = allreduce(checksums, MIN),  high = allreduce(checksums, MAX)
    a parameter differs somewhere  <=>  low != high

One pass over the weights (memory speed) and two small allreduces: cheap next to a step. Any change
of one element changes its parameter's sum, so a drift is caught; two ranks differing by a
permutation of a parameter's elements would not be (a checksum, not a proof). Every rank learns
the same list of differing parameters and raises RanksDivergedError together, naming them.
"""
from __future__ import annotations

import numpy as np

from minifm.distributed.errors import RanksDivergedError, raised_on_every_rank

UNSIGNED_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def parameter_checksum(array: np.ndarray) -> int:
    """The sum of `array`'s bits as unsigned integers of its item size, modulo 2**64."""
    words = np.ascontiguousarray(array).view(UNSIGNED_OF_SIZE[array.dtype.itemsize])
    return int(np.sum(words, dtype=np.uint64))


def check_parameters_agree(named_arrays: list, world, step: int | None = None) -> None:
    """Raise RanksDivergedError on every rank if any of the (name, array) pairs differs between ranks."""
    if world.size == 1 or not named_arrays:
        return
    checksums = np.array([parameter_checksum(array) for _, array in named_arrays], dtype=np.uint64)  # (n,)
    low = world.allreduce(checksums, "min", "the divergence check")
    high = world.allreduce(checksums, "max", "the divergence check")
    differing = [name for (name, _), a, b in zip(named_arrays, low, high) if a != b]
    if differing:
        where = f" at step {step}" if step is not None else ""
        shown = ", ".join(differing[:5]) + (f" and {len(differing) - 5} more" if len(differing) > 5 else "")
        raise raised_on_every_rank(RanksDivergedError(
            f"the ranks' parameters differ{where}: {shown}. The ranks no longer train one model; the run stops "
            "without saving (the last checkpoint is kept). Check that every host runs the same minifm, NumPy and "
            "data, and report it if they do"))


__all__ = ["check_parameters_agree", "parameter_checksum"]
