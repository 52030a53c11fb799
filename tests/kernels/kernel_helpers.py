"""Small helpers shared by the kernel tests: tolerances, the compiled-path switch, finite differences."""
import contextlib
import os

import numpy as np
import pytest

from minifm.kernels import _backend

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def rtol_for(dtype):
    return RTOL[np.dtype(dtype).type]


@contextlib.contextmanager
def compiled_path(name):
    """Run the block on the compiled kernel `name` (skip the test when it is not built or forced off)."""
    module = _backend._load(name)
    if module is None:
        pytest.skip(f"minifm.kernels._{name} is not built")
    previous = _backend.reference_forced()
    if os.environ.get("MINIFM_KERNELS", "").strip().lower() == "reference":
        pytest.skip("MINIFM_KERNELS=reference forces the NumPy path in this run")
    _backend.use_reference(False)
    try:
        yield module
    finally:
        _backend.use_reference(previous)


def central_difference(f, x, eps=1e-6):
    """d f(x) / d x for a scalar function f of a float64 array, by central differences."""
    grad = np.zeros_like(x)
    flat, grad_flat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = f(x)
        flat[i] = saved - eps
        down = f(x)
        flat[i] = saved
        grad_flat[i] = (up - down) / (2 * eps)
    return grad
