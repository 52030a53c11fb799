"""Global switch for graph recording: `no_grad()` (context manager and decorator) and `enable_grad()`.

Inside `no_grad()` operations compute their values but record no graph, so nothing is kept for a
backward pass (inference and evaluation use it to save memory and time).
"""
from __future__ import annotations

import functools
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    """True when operations record the graph for backward (the default)."""
    return getattr(_state, "enabled", True)


class _GradMode:
    """Sets graph recording to `enabled` on entry and restores the previous mode on exit.

    Usable as `with no_grad():`, as `@no_grad()` and as a bare `@no_grad` decorator.
    """

    enabled: bool

    def __new__(cls, fn=None):
        instance = super().__new__(cls)
        if fn is None:
            return instance
        if not callable(fn):
            raise TypeError(f"{cls.__name__}() takes no arguments or a function to decorate, got {fn!r}")
        return instance(fn)  # bare decorator: return the wrapped function

    def __enter__(self):
        self._previous = is_grad_enabled()
        _state.enabled = self.enabled
        return self

    def __exit__(self, *exc_info):
        _state.enabled = self._previous
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):  # noqa: N801  (lower-case like torch.no_grad)
    """Disable graph recording: `with mf.no_grad(): ...` or `@mf.no_grad()` on a function."""

    enabled = False


class enable_grad(_GradMode):  # noqa: N801
    """Re-enable graph recording inside a `no_grad()` block."""

    enabled = True
