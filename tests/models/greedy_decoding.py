"""Helpers shared by the decoding fast-path tests (decode_step, gpt2_step, the batched head): a KV-cached greedy
loop run on either path, and a counter of how often a kernel entry point ran."""
from __future__ import annotations

import numpy as np

import minifm as mf
from minifm.models import GPT


def greedy_with_cache(model: GPT, prompt: np.ndarray, steps: int, fast: bool, attention_mask=None):
    """(tokens (B, steps), logits of every step (steps, B, V), the final cache) of a greedy KV-cached loop:
    graph recording off (the fast paths) or on (the general autograd path). The prompt's own forward runs
    without recording either way."""
    cache = model.make_cache(prompt.shape[0], prompt.shape[1] + steps)
    mask = attention_mask
    tokens, logits_seen = [], []
    with mf.no_grad():
        logits = model(prompt, cache=cache, attention_mask=mask).data[:, -1]  # (B, V)
    for _ in range(steps):
        token = logits.argmax(axis=-1)[:, None]  # (B, 1)
        tokens.append(token[:, 0])
        if mask is not None:
            mask = np.concatenate([mask, np.ones_like(token)], axis=1)
        if fast:
            with mf.no_grad():
                logits = model(token, cache=cache, attention_mask=mask).data[:, -1]
        else:
            logits = model(token, cache=cache, attention_mask=mask).data[:, -1]
        logits_seen.append(logits)
    return np.stack(tokens, axis=1), np.stack(logits_seen), cache


def count_calls(monkeypatch, module, name: str) -> list[int]:
    """Wrap module.name so that each call adds one to the returned counter (the wrapped function still runs)."""
    calls = [0]
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls
