"""`World`: this process's rank, the number of ranks, and the collectives minifm uses between them.

A World wraps an MPI communicator (a duplicate of MPI_COMM_WORLD, so minifm's messages never mix
with a user's own) and offers the few operations data-parallel training needs, each on NumPy
arrays through mpi4py's buffer-based (uppercase) methods:

    allreduce(array, op)        sum / max / min over the ranks, every rank gets the result
    iallreduce_(buffer)         start a non-blocking in-place sum (MPI_Iallreduce); wait_all() ends it
    broadcast_(array, root)     root's values into every rank's array, in place (MPI_Bcast)
    broadcast_bytes(data, root) bytes from root to every rank (a uint8 array: text is sent as bytes)
    send(array, dest) / recv_(array, source)   point to point (ZeRO's gather of the optimizer state)
    share_from_root(produce)    root computes bytes (or fails); every rank gets them (or the same error)
    check_same(what, digest)    every rank's digest against rank 0's; a DistributedError naming the
                                ranks that differ, raised on every rank
    abort(code, message)        print, then MPI_Abort: every process of the job ends at once (os._exit if it hangs)

Nothing is ever pickled: mpi4py's lowercase methods (comm.bcast, comm.allreduce of Python objects)
unpickle what another process sent, so they are not used; structured data travels as JSON bytes.

Every wait runs under the watchdog (minifm/distributed/watchdog.py): a rank that waits longer than
timeout_s in one collective stops every rank with a message saying where it waited. One wait is
not timed: the other ranks' wait for root's work in share_from_root (rank 0 training a tokenizer on
a large corpus may take longer than any timeout; it is working, not stuck, and if it fails it says
so or ends the job).

A World of one process (`World()`, no communicator) is what a run without mpiexec gets: rank 0 of
1, every collective returns its input, and mpi4py is never imported.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time

import numpy as np

from minifm.checkpoint import CheckpointError
from minifm.config import ConfigError
from minifm.distributed.errors import DistributedError, raised_on_every_rank
from minifm.distributed.watchdog import Watchdog

# errors share_from_root re-raises on the other ranks with their own class (any other: RuntimeError)
SHARED_ERROR_CLASSES = {cls.__name__: cls for cls in (
    ValueError, KeyError, TypeError, RuntimeError, OSError, FileNotFoundError, CheckpointError, ConfigError,
    DistributedError)}


class _Completed:
    """The request of a non-blocking collective over one process: complete from the start."""


COMPLETED = _Completed()


class World:
    """This process's place among the ranks of a job, and the collectives between them (see the module docstring)."""

    def __init__(self, comm=None, mpi=None, timeout_s: float = 300.0):
        self.comm = comm
        self.MPI = mpi  # the mpi4py.MPI module (None for one process)
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.timeout_s = float(timeout_s)
        self.watchdog = None if comm is None else Watchdog(timeout_s, self._on_timeout)

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes files and prints progress (one writer)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}"

    # ------------------------------------------------------------------ reductions
    def _op(self, op: str):
        ops = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}
        if op not in ops:
            raise ValueError(f"World.allreduce: op must be one of {sorted(ops)}, got {op!r}")
        return ops[op]

    def allreduce(self, array, op: str = "sum", what: str = "an allreduce") -> np.ndarray:
        """A new array holding the element-wise `op` ("sum", "max", "min") of every rank's `array`."""
        send = np.ascontiguousarray(array)
        if self.comm is None:
            return send.copy()
        result = np.empty_like(send)
        with self.watchdog.waiting(what):
            self.comm.Allreduce(send, result, op=self._op(op))
        return result

    def iallreduce_(self, buffer: np.ndarray):
        """Start summing `buffer` over the ranks in place, without waiting; returns the MPI request.
        The buffer must be neither read nor written until wait_all() has returned for the request."""
        _check_buffer(buffer, "iallreduce_")
        if self.comm is None:
            return COMPLETED  # the sum over one process is the buffer itself
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def test_all(self, requests: list) -> bool:
        """Let MPI move pending non-blocking operations on (MPICH progresses them only inside MPI calls);
        True when every request has completed."""
        pending = [request for request in requests if request is not COMPLETED]
        if not pending:
            return True
        return bool(self.MPI.Request.Testall(pending))

    def wait_all(self, requests: list, what: str) -> None:
        pending = [request for request in requests if request is not COMPLETED]
        if pending:
            with self.watchdog.waiting(what):
                self.MPI.Request.Waitall(pending)

    # ------------------------------------------------------------------ broadcasts and messages
    def broadcast_(self, array: np.ndarray, root: int = 0, what: str = "a broadcast", timed: bool = True) -> np.ndarray:
        """Overwrite `array` on every rank with root's (in place; the same shape and dtype on every rank).
        timed=False: no watchdog on this wait."""
        if self.comm is not None:
            _check_buffer(array, "broadcast_")
            with self.watchdog.waiting(what) if timed else contextlib.nullcontext():
                self.comm.Bcast(array, root=root)
        return array

    def broadcast_bytes(self, data: bytes | None, root: int = 0, what: str = "a broadcast") -> bytes:
        """Root's `data` on every rank (the others pass None): its length first, then the bytes."""
        if self.comm is None:
            return bytes(data)
        length = np.array([len(data) if self.rank == root else 0], dtype=np.int64)
        self.broadcast_(length, root, what)
        if self.rank == root:
            buffer = np.frombuffer(bytes(data), dtype=np.uint8).copy()
        else:
            buffer = np.empty(int(length[0]), dtype=np.uint8)
        self.broadcast_(buffer, root, what)
        return buffer.tobytes()

    def send(self, array: np.ndarray, dest: int, what: str = "a message") -> None:
        with self.watchdog.waiting(what):
            self.comm.Send(np.ascontiguousarray(array), dest=dest)

    def recv_(self, array: np.ndarray, source: int, what: str = "a message") -> np.ndarray:
        _check_buffer(array, "recv_")
        with self.watchdog.waiting(what):
            self.comm.Recv(array, source=source)
        return array

    def barrier(self, what: str = "a barrier") -> None:
        if self.comm is not None:
            with self.watchdog.waiting(what):
                self.comm.Barrier()

    # ------------------------------------------------------------------ agreement
    def share_from_root(self, produce, what: str, root: int = 0) -> bytes:
        """Root runs produce() -> bytes and every rank returns them. If produce() raises on root, every
        rank raises the same error (same class when it is a common one, same message), marked as
        raised on every rank: the ranks stop together, with no MPI_Abort."""
        if self.comm is None:
            return produce()
        header = np.zeros(1, dtype=np.int64)  # 0: ok, 1: failed
        payload = None
        error = None
        if self.rank == root:
            try:
                payload = produce()
            except Exception as caught:  # noqa: BLE001 -- every error is passed on to the other ranks
                error = caught
                header[0] = 1
                payload = json.dumps({"class": type(caught).__name__, "message": str(caught)}).encode("utf-8")
        self.broadcast_(header, root, what, timed=False)  # the others wait while root works: not a hang
        payload = self.broadcast_bytes(payload, root, what)
        if header[0] == 0:
            return payload
        if error is not None:
            raise raised_on_every_rank(error)
        description = json.loads(payload.decode("utf-8"))
        error_class = SHARED_ERROR_CLASSES.get(description["class"], RuntimeError)
        raise raised_on_every_rank(error_class(description["message"]))

    def check_same(self, what: str, digest: bytes) -> None:
        """Compare every rank's digest of `what` with rank 0's; if any differs, every rank raises a
        DistributedError naming the ranks that differ."""
        if self.comm is None:
            return
        reference = self.broadcast_bytes(digest if self.rank == 0 else None, 0, f"the check of {what}")
        differs = np.zeros(self.size, dtype=np.int64)
        differs[self.rank] = int(reference != digest)
        differs = self.allreduce(differs, "sum", f"the check of {what}")
        if differs.any():
            ranks = [int(rank) for rank in np.flatnonzero(differs)]
            raise raised_on_every_rank(DistributedError(
                f"the ranks disagree on {what}: rank(s) {ranks} differ from rank 0 (every rank must build the "
                "same data: the same files, settings and package versions on every host)"))

    # ------------------------------------------------------------------ failure
    def abort(self, code: int = 1, message: str | None = None) -> None:
        """Print `message` (if any) and end every process of the job at once (MPI_Abort)."""
        if message:
            print(message, file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if self.comm is None:
            raise SystemExit(code)
        code = int(code) if 0 < int(code) < 256 else 1
        # MPI_Abort ends this process through the C library's exit(), whose exit handlers (the BLAS and
        # OpenMP thread pools') were seen to hang now and then when the call comes from the watchdog's
        # thread while the main thread sits in MPI: the job then never ended (a CI run waited 120 s). If
        # this process is still alive ABORT_GRACE_S later it ends itself with os._exit (no handlers);
        # mpiexec treats that as a crashed rank and stops the others.
        threading.Thread(target=_exit_after, args=(ABORT_GRACE_S, code), name="minifm-abort-fallback",
                         daemon=True).start()
        self.comm.Abort(code)

    def _on_timeout(self, what: str, waited_s: float) -> None:
        self.abort(1, f"minifm: {self.describe()} waited {waited_s:.0f} s in {what} for the other ranks "
                      f"(timeout MINIFM_DIST_TIMEOUT={self.timeout_s:g} s): a rank has crashed or hangs; "
                      "stopping every rank")


ABORT_GRACE_S = 5.0  # how long World.abort lets MPI_Abort end the process before os._exit does


def _exit_after(seconds: float, code: int) -> None:
    """End the process with os._exit(code) after `seconds`: World.abort's fallback if MPI_Abort hangs."""
    time.sleep(seconds)
    os._exit(code)


def _check_buffer(array, where: str) -> None:
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"World.{where}: needs a writeable C-contiguous NumPy array, got "
                         f"{type(array).__name__}" + (f" with flags {array.flags}" if isinstance(array, np.ndarray) else ""))


__all__ = ["World"]
