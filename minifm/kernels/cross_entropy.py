"""Fused cross-entropy: per-row loss and d loss / d logits in one pass, NumPy reference + dispatch.

Compiled twin: csrc/cross_entropy.pyx (module minifm.kernels._cross_entropy).

For a row of logits x (length V) with target t and label smoothing eps (torch's definition: the
target distribution is (1 - eps) * onehot(t) + eps / V):

    lse      = log(sum_j exp(x_j))                   computed as m + log(sum_j exp(x_j - m))
    loss     = (1 - eps) * (lse - x_t) + eps * mean_j (lse - x_j)
    d loss / d x_j = softmax(x)_j - eps / V - (1 - eps) * [j == t]

Rows whose target equals ignore_index get loss 0 and a zero gradient row. The caller (autograd)
does the mean/sum reduction and multiplies by the upstream gradient (a constant factor such as
1 / rows can be folded into the gradient pass with `grad_scale`). The compiled path never stores
a probability array: it writes the gradient row straight from the logits row.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled


def _validate(logits, targets, ignore_index, label_smoothing):
    """Check the arguments; return (logits C-contiguous, targets as int64)."""
    if not isinstance(logits, np.ndarray) or logits.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"logits must be a float32 or float64 numpy array, got "
            f"{getattr(logits, 'dtype', type(logits).__name__)}"
        )
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, V) with V >= 1 classes, got {logits.shape}")
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be integers, got dtype {targets.dtype}")
    if targets.shape != (logits.shape[0],):
        raise ValueError(f"targets must have shape ({logits.shape[0]},) for logits {logits.shape}, got {targets.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    targets = targets.astype(np.int64, copy=False)
    vocab = logits.shape[1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab))
    if np.any(bad):
        row = int(np.argmax(bad))
        raise IndexError(f"target {int(targets[row])} in row {row} is outside [0, {vocab}) and is not ignore_index={ignore_index}")
    return np.ascontiguousarray(logits), np.ascontiguousarray(targets)


def cross_entropy_reference(logits, targets, ignore_index=-100, label_smoothing=0.0, compute_grad=True,
                            grad_scale=1.0):
    """The readable math: log-softmax, pick the target, smooth, differentiate (times grad_scale)."""
    logits, targets = _validate(logits, targets, ignore_index, label_smoothing)
    n, vocab = logits.shape
    ignored = targets == ignore_index  # (N,)
    safe_targets = np.where(ignored, 0, targets)  # (N,) any valid index for ignored rows
    row_max = logits.max(axis=1, keepdims=True)  # (N, 1)
    shifted = logits - row_max  # (N, V)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, V)
    nll = -log_probs[np.arange(n), safe_targets]  # (N,)
    smooth = -log_probs.mean(axis=1)  # (N,) mean over classes of -log p
    losses = ((1 - label_smoothing) * nll + label_smoothing * smooth).astype(logits.dtype)
    losses[ignored] = 0
    if not compute_grad:
        return losses, None
    grad = np.exp(log_probs) - label_smoothing / vocab  # (N, V)
    grad[np.arange(n), safe_targets] -= 1 - label_smoothing
    grad[ignored] = 0
    return losses, (grad * grad_scale).astype(logits.dtype)


def cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0, compute_grad=True, grad_scale=1.0):
    """Per-row losses (N,) and dlogits (N, V) times grad_scale (None when compute_grad=False).

    grad_scale lets a caller fold a constant factor (1 / rows for a mean) into the one pass that
    writes the gradient. Compiled when available.
    """
    grad_scale = float(grad_scale)
    if not np.isfinite(grad_scale):
        raise ValueError(f"grad_scale must be finite, got {grad_scale}")
    kernel = compiled("cross_entropy")
    if kernel is None:
        return cross_entropy_reference(logits, targets, ignore_index, label_smoothing, compute_grad, grad_scale)
    logits, targets = _validate(logits, targets, ignore_index, label_smoothing)
    losses = np.empty(logits.shape[0], dtype=logits.dtype)  # (N,)
    grad = np.empty_like(logits) if compute_grad else None  # (N, V)
    kernel.cross_entropy_rows(logits, targets, int(ignore_index), float(label_smoothing), losses, grad, grad_scale)
    return losses, grad
