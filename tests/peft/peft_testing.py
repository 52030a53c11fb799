"""Shared helpers for the PEFT tests: tiny models and a finite-difference check of module parameters."""
from __future__ import annotations

import numpy as np

from minifm.models import GPT, GPTConfig


def tiny_gpt(dtype: str = "float64", **overrides) -> GPT:
    options = dict(vocab_size=31, block_size=24, n_layer=2, n_head=4, n_embd=16, dtype=dtype, seed=3)
    options.update(overrides)
    return GPT(GPTConfig(**options))


def random_ids(rng: np.random.Generator, batch: int, steps: int, vocab: int = 31) -> np.ndarray:
    return rng.integers(0, vocab, size=(batch, steps))


def perturb_trainable(module, rng: np.random.Generator, scale: float = 0.3) -> None:
    """Move every trainable parameter away from its (often zero/one) initial value."""
    for param in module.parameters():
        if param.requires_grad:
            param.data[...] += scale * rng.standard_normal(param.shape)


def check_parameter_gradients(loss_fn, params, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4,
                              max_entries: int = 40, seed: int = 0) -> None:
    """backward() gradients of the scalar loss_fn() vs central differences, on float64 parameters in place.

    Checks up to `max_entries` randomly chosen entries of each parameter (all of them when smaller).
    """
    for param in params:
        assert param.dtype == np.float64, f"finite differences need float64 parameters, got {param.dtype}"
        param.grad = None
    loss = loss_fn()
    loss.backward()
    chooser = np.random.default_rng(seed)
    for param in params:
        analytic = np.zeros_like(param.data) if param.grad is None else param.grad
        flat = param.data.reshape(-1)
        count = min(max_entries, flat.size)
        for index in chooser.choice(flat.size, size=count, replace=False):
            original = flat[index]
            flat[index] = original + eps
            plus = float(loss_fn().data)
            flat[index] = original - eps
            minus = float(loss_fn().data)
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            got = analytic.reshape(-1)[index]
            assert abs(got - numeric) <= atol + rtol * abs(numeric), (
                f"parameter of shape {param.shape}, entry {index}: analytic {got!r} vs numeric {numeric!r}"
            )
