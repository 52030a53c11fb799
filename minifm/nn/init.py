"""Weight initialisation: the in-place initialisers and the global default generator.

Every initialiser draws from a numpy Generator. Layers built without an explicit `rng` draw from
one module-level generator that `manual_seed(seed)` resets (torch.manual_seed's role), so a
script that seeds once is reproducible. Models pass their own generator (seeded from the config)
so their weights do not depend on what was built before them.

Defaults:
  Linear     weight, bias ~ U(-1/sqrt(in), 1/sqrt(in))   (torch's nn.Linear default)
  Embedding  weight ~ N(0, 1)                           (torch's nn.Embedding default)
  Norms      weight = 1, bias = 0
The transformer models then apply GPT-2's scheme on top (minifm.models.config.init_gpt2_style):
N(0, 0.02) for every Linear and Embedding weight, zero biases, and N(0, 0.02 / sqrt(2 * n_layer))
for the projections that write into the residual stream (attention o_proj, MLP fc_out/down_proj).

`skipped_initialisation()` turns every initialiser into a no-op for the duration of a `with` block:
a model whose weights are about to be overwritten by a checkpoint (GPT.from_pretrained) is built
without drawing 135M random numbers it would throw away (about 4 s for SmolLM2-135M), and its
np.empty arrays are never touched, so they cost no memory before the loaded arrays replace them.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

_default_rng = np.random.default_rng(0)
_skipping = False  # True inside skipped_initialisation()


@contextmanager
def skipped_initialisation():
    """Within the block, normal_/uniform_/zeros_/ones_ leave their arrays as they are (see above)."""
    global _skipping
    previous, _skipping = _skipping, True
    try:
        yield
    finally:
        _skipping = previous


def manual_seed(seed: int) -> None:
    """Reset the generator used by layers constructed without an explicit rng."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def default_rng() -> np.random.Generator:
    return _default_rng


def _resolve(rng):
    if rng is None:
        return _default_rng
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


def _array(param) -> np.ndarray:
    return param.data if hasattr(param, "data") else param


def normal_(param, mean: float = 0.0, std: float = 1.0, rng=None):
    """Fill in place with N(mean, std^2) draws."""
    if _skipping:
        return param
    array = _array(param)
    array[...] = _resolve(rng).normal(mean, std, size=array.shape)
    return param


def uniform_(param, low: float = 0.0, high: float = 1.0, rng=None):
    """Fill in place with U(low, high) draws."""
    if _skipping:
        return param
    array = _array(param)
    array[...] = _resolve(rng).uniform(low, high, size=array.shape)
    return param


def zeros_(param):
    if _skipping:
        return param
    _array(param)[...] = 0
    return param


def ones_(param):
    if _skipping:
        return param
    _array(param)[...] = 1
    return param
