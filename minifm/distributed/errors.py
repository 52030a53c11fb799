"""How a data-parallel run fails: together when every rank knows, at once (MPI_Abort) when one rank alone does.

An error raised by one rank alone (a bug, a NaN in its own micro-batch, a full disk on rank 0)
leaves the other ranks waiting in their next collective forever. Such an error therefore stops
every rank: the failing rank prints its message and calls MPI_Abort, which ends every process of
the job at once (minifm.distributed.world.World.abort; the command line and the excepthook do it).

Some errors are raised by every rank at the same point because the ranks agreed on them through a
collective: Ctrl-C answered after a vote of the ranks, a checkpoint that rank 0 failed to read and
said so, parameters found to differ, a non-finite gradient norm computed from the same averaged
gradients. Those are marked with `raised_on_every_rank(error)`; they end every rank normally
(exit code and one message, printed by rank 0), with no MPI_Abort.
"""
from __future__ import annotations


class DistributedError(RuntimeError):
    """Data-parallel training cannot go on (the ranks disagree on something they must share)."""


class RanksDivergedError(DistributedError):
    """The ranks' parameters are no longer the same (the divergence check found a difference)."""


AGREED_ATTRIBUTE = "minifm_raised_on_every_rank"


def raised_on_every_rank(error: BaseException) -> BaseException:
    """Mark `error` as raised by every rank at the same point (no MPI_Abort needed); returns it."""
    setattr(error, AGREED_ATTRIBUTE, True)
    return error


def is_raised_on_every_rank(error: BaseException | None) -> bool:
    return error is not None and bool(getattr(error, AGREED_ATTRIBUTE, False))


__all__ = ["DistributedError", "RanksDivergedError", "is_raised_on_every_rank", "raised_on_every_rank"]
