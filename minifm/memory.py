"""Process memory: how much is resident now, its peak over a block of code, and giving freed memory back.

    current_rss_bytes()     the resident set size now (Linux /proc/self/statm)
    PeakRSS()               a context manager that samples it in a thread and keeps the peak
    release_free_memory()   gc.collect() and glibc's malloc_trim(0)
    keep_freed_memory_for_reuse()   glibc keeps freed activation-sized blocks for the next step (training)

Why the last one: glibc keeps freed small and medium heap blocks for reuse instead of returning them to
the OS, so after a phase that allocates many short-lived Python objects (a GGUF reader's 49,152-entry
vocabulary, a finished training run) the RSS stays at that phase's high-water mark. Loaders call it
once when such a phase ends; measurements call it between runs so one run's peak does not hide the next.
Why the other one: a training step allocates and frees the same activations and gradients every step.
glibc serves blocks above its mmap threshold (128 KiB at first, sliding up to 32 MiB as such blocks are
freed) with fresh mmap()s, and gives the free top of the heap back to the OS above its trim threshold, so
every step touched new pages again: the tiny benchmark model's step (blocks of 64 KiB-1 MiB) took ~3,000
minor page faults, 5-10 ms of a ~40 ms step (docs/performance.md, "Page faults in the training step").
`keep_freed_memory_for_reuse` fixes the mmap threshold at 32 MiB (glibc's own ceiling on 64-bit, so blocks
below it come from the heap) and the trim threshold at 256 MiB (up to that much free heap stays resident,
to be reused): the step then takes no page faults. Arrays above 32 MiB (a real model's logits) are still
mmapped and returned when freed. The engine calls it on a process's first backward(): inference-only
processes (generate, chat, the quantized decoding) keep glibc's defaults. release_free_memory still hands
everything free back. MINIFM_KEEP_FREED_MEMORY=0, or the user's own MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_ or malloc GLIBC_TUNABLES, leave glibc's settings alone.
Simplifications: Linux-first (elsewhere the RSS falls back to the peak so far, and the trim is skipped).
"""
from __future__ import annotations

import ctypes
import gc
import os
import resource
import threading


def _glibc_function(name: str):
    """glibc's function `name` through ctypes, or None where there is no glibc (or no such function)."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc malloc_trim), so that one run's RSS
    high-water mark does not hide the next run's (glibc keeps freed small and medium blocks otherwise)."""
    gc.collect()
    malloc_trim = _glibc_function("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)


# mallopt's parameter numbers (glibc's malloc.h) and the values keep_freed_memory_for_reuse sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
REUSE_MMAP_THRESHOLD = 32 * 2**20   # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
REUSE_TRIM_THRESHOLD = 256 * 2**20
_USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_reuse_decided: bool | None = None   # None: not asked yet; then whether the setting is in effect


def keep_freed_memory_for_reuse() -> bool:
    """Make glibc keep freed blocks up to 32 MiB on the heap, and up to 256 MiB of free heap resident, for
    reuse (see the module docstring). Decided once per process; returns whether the setting is in effect
    (False: turned off by MINIFM_KEEP_FREED_MEMORY=0 or the user's own malloc settings, or not glibc)."""
    global _reuse_decided
    if _reuse_decided is not None:
        return _reuse_decided
    _reuse_decided = False
    user_set = any(name in os.environ for name in _USER_MALLOC_SETTINGS) or "malloc" in os.environ.get(
        "GLIBC_TUNABLES", "")
    if os.environ.get("MINIFM_KEEP_FREED_MEMORY", "1") == "0" or user_set:
        return False
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    _reuse_decided = bool(mallopt(M_MMAP_THRESHOLD, REUSE_MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, REUSE_TRIM_THRESHOLD))
    return _reuse_decided


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
