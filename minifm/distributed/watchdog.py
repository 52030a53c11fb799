"""The watchdog: no rank waits forever in a collective.

An MPI collective returns only when every rank has joined it. If one rank hangs (an endless loop,
a dead network link, a process stopped in a debugger) or left without joining (an error caught
and ignored on that rank alone), the others would wait forever. Every wait of minifm.distributed
(an Allreduce, a Bcast, the Wait of a non-blocking Iallreduce) runs inside `watchdog.waiting(what)`,
except the wait for rank 0's own work in World.share_from_root (a tokenizer trained on rank 0):

    main thread                          watchdog thread (a daemon, started on the first wait)
    with watchdog.waiting("allreduce"):  every poll_s: is a wait under way, and longer than timeout_s?
        request.Wait()                       yes -> on_timeout(what, seconds waited): print a message
                                                    and MPI_Abort, which ends every rank of the job

mpi4py releases the GIL while MPI waits, so the watchdog thread runs while the main thread is
blocked inside MPI; MPI is initialised with MPI_THREAD_MULTIPLE (mpi4py's default), so calling
MPI_Abort from this second thread is allowed.

Only time spent inside a collective counts: a slow step on every rank never trips it, a rank far
behind the others does (the first rank to arrive waits for the last). The timeout must therefore
exceed the longest legitimate imbalance between ranks: rank 0 writing a checkpoint while the others
wait at the next step, for instance. MINIFM_DIST_TIMEOUT sets it (300 s by default).
"""
from __future__ import annotations

import contextlib
import threading
import time


class Watchdog:
    """Calls on_timeout(what, waited_s) once when a wait marked with waiting() lasts over timeout_s."""

    def __init__(self, timeout_s: float, on_timeout, poll_s: float | None = None):
        if not timeout_s > 0:
            raise ValueError(f"Watchdog: timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.poll_s = poll_s if poll_s is not None else min(1.0, self.timeout_s / 10)
        self.on_timeout = on_timeout
        self._lock = threading.Lock()
        self._current: tuple[str, float] | None = None  # (what, when the wait began)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.fired = False

    @contextlib.contextmanager
    def waiting(self, what: str):
        """Mark the enclosed block as a wait for the other ranks (nested waits keep the outer one)."""
        self._start_thread()
        with self._lock:
            outer = self._current
            if outer is None:
                self._current = (what, time.monotonic())
        try:
            yield
        finally:
            if outer is None:
                with self._lock:
                    self._current = None

    def stop(self) -> None:
        self._stopped.set()

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="minifm-distributed-watchdog", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stopped.wait(self.poll_s):
            with self._lock:
                current = self._current
            if current is None:
                continue
            what, since = current
            waited = time.monotonic() - since
            if waited > self.timeout_s and not self.fired:
                self.fired = True
                self.on_timeout(what, waited)


__all__ = ["Watchdog"]
