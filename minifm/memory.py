"""Process memory: how much is resident now, its peak over a block of code, and giving freed memory back.

    current_rss_bytes()     the resident set size now (Linux /proc/self/statm)
    PeakRSS()               a context manager that samples it in a thread and keeps the peak
    release_free_memory()   gc.collect() and glibc's malloc_trim(0)

Why the last one: glibc keeps freed small and medium heap blocks for reuse instead of returning them to
the OS, so after a phase that allocates many short-lived Python objects (a GGUF reader's 49,152-entry
vocabulary, a finished training run) the RSS stays at that phase's high-water mark. Loaders call it
once when such a phase ends; measurements call it between runs so one run's peak does not hide the next.
Simplifications: Linux-first (elsewhere the RSS falls back to the peak so far, and the trim is skipped).
"""
from __future__ import annotations

import ctypes
import gc
import os
import resource
import threading


def release_free_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc malloc_trim), so that one run's RSS
    high-water mark does not hide the next run's (glibc keeps freed small and medium blocks otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def current_rss_bytes() -> int:
    """The process's resident set size now (Linux /proc/self/statm; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Context manager sampling the process's RSS every `interval` seconds in a thread: .start, .peak (bytes)."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.start, self.peak = interval, 0, 0
        self._stop = threading.Event()
        self._thread = None

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss_bytes())

    def __enter__(self):
        self.start = self.peak = current_rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())
        return False
