"""Attention kernels (placeholder reference until the kernel lands; the kernel owner replaces this file)."""
from __future__ import annotations

import numpy as np


def _masks(tq, tk, b, causal, q_offset, key_mask):
    allowed = np.ones((1, 1, tq, tk), dtype=bool)
    if causal:
        allowed = allowed & (np.arange(tk)[None, :] <= np.arange(tq)[:, None] + q_offset)
    if key_mask is not None:
        allowed = allowed & np.asarray(key_mask, dtype=bool)[:, None, None, :]
    return allowed


def attention_forward(q, k, v, *, scale=None, causal=False, q_offset=0, key_mask=None):
    groups = q.shape[1] // k.shape[1]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    ke, ve = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)
    s = (q @ np.swapaxes(ke, -1, -2)) * scale
    s = np.where(_masks(q.shape[2], k.shape[2], q.shape[0], causal, q_offset, key_mask), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    with np.errstate(divide="ignore"):
        lse = (np.log(z) + m)[..., 0]
    return (p @ ve).astype(q.dtype), lse.astype(q.dtype)


def attention_backward(q, k, v, out, lse, dout, *, scale=None, causal=False, q_offset=0, key_mask=None):
    groups = q.shape[1] // k.shape[1]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    ke, ve = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)
    s = (q @ np.swapaxes(ke, -1, -2)) * scale
    allowed = _masks(q.shape[2], k.shape[2], q.shape[0], causal, q_offset, key_mask)
    with np.errstate(invalid="ignore"):
        p = np.where(allowed & np.isfinite(lse)[..., None], np.exp(s - lse[..., None]), 0)
    dv = np.swapaxes(p, -1, -2) @ dout
    dp = dout @ np.swapaxes(ve, -1, -2)
    ds = p * (dp - np.sum(dout * out, axis=-1, keepdims=True)) * scale
    dq = ds @ ke
    dk = np.swapaxes(ds, -1, -2) @ q
    b, h, tk, d = dk.shape
    fold = lambda g: g.reshape(b, h // groups, groups, tk, d).sum(axis=2)
    return dq.astype(q.dtype), fold(dk).astype(k.dtype), fold(dv).astype(v.dtype)
