"""Fused cross-entropy Function: log-softmax, the negative log-likelihood and its gradient in one node.

Forward calls minifm.kernels.cross_entropy on (N, V) logits, which returns the per-row losses and the
per-row gradient d loss_i / d logits_i in one pass, already divided by the number of non-ignored rows
for reduction="mean" (as torch does); backward only scales those rows by the upstream gradient, and
returns the saved array itself when that gradient is 1 (the usual `loss.backward()`), so the large
(N, V) gradient is written once per step. Nothing downstream mutates a gradient it receives.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Function
from minifm.kernels import cross_entropy as kernels


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        targets = np.asarray(targets)
        if targets.dtype.kind not in "iu":
            raise TypeError(f"targets must be integers, got dtype {targets.dtype}")
        if logits.ndim == 0 or logits.shape[:-1] != targets.shape:
            raise ValueError(
                f"logits shape {logits.shape} needs targets of shape {logits.shape[:-1]}, got {targets.shape}"
            )
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        if logits.dtype.kind != "f":
            raise TypeError(f"logits must be float32 or float64, got dtype {logits.dtype}")
        vocab = logits.shape[-1]
        out_of_range = (targets != ignore_index) & ((targets < 0) | (targets >= vocab))
        if np.any(out_of_range):
            position = tuple(int(i) for i in np.argwhere(out_of_range)[0])
            raise IndexError(
                f"target {targets[position]} at position {position} is outside [0, {vocab}) "
                f"and is not ignore_index={ignore_index}"
            )
        flat_logits = np.ascontiguousarray(logits.reshape(-1, vocab))  # (N, V)
        flat_targets = targets.reshape(-1).astype(np.int64)  # (N,)
        valid = int(np.sum(flat_targets != ignore_index))
        losses, dlogits = kernels.cross_entropy(
            flat_logits, flat_targets, ignore_index=ignore_index, label_smoothing=label_smoothing,
            compute_grad=ctx.needs_input_grad[0], grad_scale=1.0 / max(valid, 1) if reduction == "mean" else 1.0,
        )
        ctx.dlogits, ctx.shape, ctx.reduction, ctx.valid = dlogits, logits.shape, reduction, valid
        if reduction == "none":
            return losses.reshape(targets.shape)
        total = losses.sum(dtype=np.float64)
        if reduction == "sum":
            return np.asarray(total, dtype=logits.dtype)
        return np.asarray(total / valid if valid else np.nan, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad):
        if ctx.reduction == "none":
            scale = grad.reshape(-1, 1)  # (N, 1)
        elif grad == 1:
            return ctx.dlogits.reshape(ctx.shape), None  # already the final gradient (1/valid folded in)
        else:
            scale = grad  # the 1 / valid of a mean is already in dlogits
        return (ctx.dlogits * scale).reshape(ctx.shape).astype(ctx.dlogits.dtype, copy=False), None
