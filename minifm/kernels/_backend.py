"""Which kernel path runs: the compiled Cython twins or the NumPy references.

Every kernel family `minifm/kernels/<name>.py` asks `compiled(<name>)` for its Cython module
`minifm.kernels._<name>` (built from `csrc/<name>.pyx`; fewrows.py asks for matvec's, which holds its
kernel). It gets None when

  * the extension was not built (MINIFM_NO_CYTHON=1, or no compiler), or
  * the environment variable MINIFM_KERNELS=reference forces the NumPy path, or
  * `use_reference(True)` was called (tests flip this to compare both paths in one process).

With MINIFM_REQUIRE_COMPILED=1 a missing extension is an ImportError instead of a silent
fallback; CI sets it so that a broken build cannot pass on the slower path.

Before any compiled module loads (and so before the OpenMP runtime reads its settings), this module
sets how an idle OpenMP thread waits, unless the user chose a policy (OMP_WAIT_POLICY):

  * OMP_WAIT_POLICY=PASSIVE: a thread that finished its share of a kernel sleeps instead of spinning
    on a core that OpenBLAS, the main thread or another process needs (minifm/kernels/threads.py);
  * GOMP_SPINCOUNT=OPENMP_SPIN_COUNT (libgomp, GCC's runtime, which the kernels are built with; it
    takes precedence over the policy there): before sleeping, the thread polls for OPENMP_SPIN_COUNT
    rounds, about 0.1 ms. A training step of a small model runs ~50 parallel kernels a few tens of
    microseconds apart; with no spin every one of them put a thread to sleep and woke it again (98-100
    context switches per step of the tiny model on two threads, 28-52 with the spin; the small step
    on two idle threads took 0.71x its one-thread time against 0.76x; docs/performance.md, "The
    benchmark's turns"). A spin this short costs another process on the core at most ~0.1 ms per
    kernel, where libgomp's own default polls for milliseconds.

OPENMP_DEFAULTS lists the variables this module set (not the user), so that a benchmark can start a
child process (torch's) with its own runtime's defaults.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

OPENMP_SPIN_COUNT = 3000  # polling rounds of an idle libgomp thread before it sleeps: ~30 ns each here, ~0.1 ms
OPENMP_DEFAULTS: dict[str, str] = {}
if "OMP_WAIT_POLICY" not in os.environ:
    OPENMP_DEFAULTS["OMP_WAIT_POLICY"] = "PASSIVE"
    if "GOMP_SPINCOUNT" not in os.environ:
        OPENMP_DEFAULTS["GOMP_SPINCOUNT"] = str(OPENMP_SPIN_COUNT)
    os.environ.update(OPENMP_DEFAULTS)

# One entry per csrc/<name>.pyx. Kept explicit so a missing build is detected by name.
COMPILED_FAMILIES: tuple[str, ...] = (
    "parallel",
    "softmax",
    "cross_entropy",
    "attention",
    "sampling",
    "bpe",
    "activations",
    "normalization",
    "adam",
    "matvec",
    "gemm",
    "rotary",
    "quantized",
    "decode_step",
    "gpt2_step",
    "embedding",
)

_modules: dict[str, ModuleType | None] = {}
_force_reference = os.environ.get("MINIFM_KERNELS", "compiled").strip().lower() == "reference"

if os.environ.get("MINIFM_KERNELS", "compiled").strip().lower() not in ("compiled", "reference"):
    raise ValueError(
        "MINIFM_KERNELS must be 'compiled' or 'reference', got "
        f"{os.environ['MINIFM_KERNELS']!r}"
    )


def _load(name: str) -> ModuleType | None:
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(f"minifm.kernels._{name}")
        except ImportError:
            _modules[name] = None
    return _modules[name]


def missing_compiled() -> list[str]:
    """Names of the kernel families whose compiled extension could not be imported."""
    return [name for name in COMPILED_FAMILIES if _load(name) is None]


def check_required() -> None:
    """Raise ImportError when MINIFM_REQUIRE_COMPILED=1 and any compiled kernel is missing."""
    if os.environ.get("MINIFM_REQUIRE_COMPILED") == "1":
        missing = missing_compiled()
        if missing:
            raise ImportError(
                "MINIFM_REQUIRE_COMPILED=1 but these compiled kernels are missing: "
                + ", ".join(f"minifm.kernels._{m}" for m in missing)
                + ". Build them with `pip install .` (a C compiler is needed)."
            )


def compiled(name: str) -> ModuleType | None:
    """The compiled module for kernel family `name`, or None when the reference path runs."""
    if _force_reference:
        return None
    return _load(name)


def use_reference(flag: bool) -> None:
    """Force (True) or release (False) the NumPy reference path for every kernel, at run time."""
    global _force_reference
    _force_reference = bool(flag)


def reference_forced() -> bool:
    return _force_reference


def backend_info() -> dict:
    """Which path runs, which extensions loaded, and OpenMP's state and thread count."""
    parallel = _load("parallel")
    loaded = {name: _load(name) is not None for name in COMPILED_FAMILIES}
    all_compiled = all(loaded.values())
    if _force_reference or not any(loaded.values()):
        backend = "reference"
    elif all_compiled:
        backend = "compiled"
    else:
        backend = "mixed"
    return {
        "backend": backend,
        "forced_reference": _force_reference,
        "compiled_modules": loaded,
        "openmp": bool(parallel.openmp_enabled()) if parallel else False,
        "num_threads": int(parallel.num_threads()) if parallel else 1,
    }
