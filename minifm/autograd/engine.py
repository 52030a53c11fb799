"""Reverse-mode differentiation over the recorded graph: `backward(root, grad, retain_graph)`.

1. Walk the graph from `root` with an explicit stack (no recursion, so a chain of 10,000 ops is
   fine), counting for every node how many times it is an input of another (its uses) and its
   height (the longest path from it down to a leaf: 0 for a leaf, 1 for `w.T`).
2. Visit the nodes from the root on, each once all its uses have passed their share back (a
   topological order), with the gradient of the output at hand; call the node's `Function.backward`
   and add each input's share to a pending sum (a node used twice receives the sum of both
   contributions before its own backward runs). Among the nodes ready to be visited, the lowest
   comes first: after `h @ w.T` the short branch to the weight `w` goes before the long one down
   the network through `h`, so every layer's weights are done right after that layer's backward,
   as PyTorch's engine orders its ready queue.
3. Leaves (tensors created by the user with requires_grad=True) accumulate into `.grad`, in the
   leaf's own dtype (a float32 leaf always gets a float32 gradient), when visited: at that moment
   their gradient for this backward is final, while the layers below are still to be walked. The
   hooks given to `Tensor.register_post_accumulate_grad_hook` run right then, with the leaf:
   data-parallel training (minifm/distributed/ddp.py) starts sending a layer's gradients while
   backward computes the layers below.

Unless `retain_graph=True`, each node's saved context and its links to its inputs are dropped after
use: the memory of the activations is released as soon as backward has passed them, and a second
backward through the same graph raises instead of silently reusing freed buffers. Gradients are
never written into the arrays they came from: neither inputs nor the caller's `grad` are mutated.

A process's first backward() also asks glibc to keep freed activation-sized blocks for reuse
(minifm.memory.keep_freed_memory_for_reuse): otherwise every training step took thousands of page faults
to allocate the same activations again.

A backward may return, for an input x, a `SliceGradient` instead of an array: the gradient of x[index]
for a basic index, zero outside the slice, not yet written out (GetItem does). The engine adds it into
the gradient it accumulates for x, in place when that array is one this backward allocated: the q, k
and v slices of one stacked projection then cost one zeroed array and three slice additions, where
three zeroed arrays and two full-size sums were made before.

Nothing non-finite passes silently: the caller's `grad` must be finite, and a NaN/inf arriving at a
leaf raises FloatingPointError naming the leaf's shape and the operation that produced it
(`set_check_finite(False)` turns the leaf check off, e.g. to study a diverging run).
"""
from __future__ import annotations

import heapq
import itertools

import numpy as np

from minifm.memory import keep_freed_memory_for_reuse

_check_finite = True


def set_check_finite(enabled: bool) -> bool:
    """Turn the NaN/inf check on leaf gradients on or off; returns the previous setting."""
    global _check_finite
    previous, _check_finite = _check_finite, bool(enabled)
    return previous


class SliceGradient:
    """The gradient of x[index] with respect to x, for a basic index (slices and integers): `values` at
    x[index], zero elsewhere, in an array of `shape` that the engine writes only where it is needed."""

    __slots__ = ("shape", "index", "values")

    def __init__(self, shape: tuple[int, ...], index, values: np.ndarray):
        self.shape, self.index, self.values = tuple(shape), index, values

    @property
    def dtype(self):
        return self.values.dtype

    def dense(self, dtype) -> np.ndarray:
        """The whole gradient as a new array of `dtype`: zeros, and the values at the index."""
        full = np.zeros(self.shape, dtype=dtype)
        full[self.index] = self.values
        return full


def _add_pending(pending: dict, owned: set, key: int, grad) -> None:
    """Add an input's share `grad` (an array or a SliceGradient, of the input's shape and dtype) to its
    pending gradient. Arrays that came from a backward are never written to; one this function allocated
    (listed in `owned`) is added into in place."""
    existing = pending.get(key)
    if isinstance(grad, SliceGradient):
        if existing is None:
            pending[key] = grad.dense(grad.dtype)
        else:
            if key not in owned:
                existing = existing.copy()
                pending[key] = existing
            existing[grad.index] += grad.values
        owned.add(key)
    elif existing is None:
        pending[key] = grad
    elif key in owned:
        existing += grad
    else:
        pending[key] = existing + grad  # a new array: never mutate a gradient a backward returned
        owned.add(key)


def _inputs_first(root) -> list:
    """Nodes reachable from `root` that require grad, each listed after the nodes it was computed from
    (a depth-first post-order, with an explicit stack)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, children_done = stack.pop()
        if children_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        for parent in tensor._parents:
            if parent is not None and id(parent) not in visited:
                stack.append((parent, False))
    return order


def _uses_and_heights(nodes: list) -> tuple[dict, dict]:
    """({id: times the node is an input of another node}, {id: longest path down to a leaf}), over `nodes`
    listed inputs first."""
    uses: dict[int, int] = {}
    heights: dict[int, int] = {}
    for node in nodes:
        height = 0
        for parent in node._parents:
            if parent is not None:
                uses[id(parent)] = uses.get(id(parent), 0) + 1
                height = max(height, heights[id(parent)] + 1)
        heights[id(node)] = height
    return uses, heights


def _initial_grad(root, grad) -> np.ndarray:
    """The gradient that seeds the walk: ones for a scalar root, else the caller's (checked) grad."""
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(
                f"backward() without a grad argument needs a scalar output, got shape {root.shape}; "
                "pass grad= with the output's shape"
            )
        return np.ones_like(root.data)
    grad = np.asarray(grad)  # Tensor.backward has unwrapped a Tensor grad already
    if grad.shape != root.shape:
        raise ValueError(f"grad has shape {grad.shape} but the output has shape {root.shape}")
    if grad.dtype.kind not in "fiub":
        raise TypeError(f"grad must be a float array, got dtype {grad.dtype}")
    if not np.all(np.isfinite(grad)):
        raise FloatingPointError(f"the grad passed to backward() (shape {grad.shape}) contains NaN or inf")
    return grad.astype(root.dtype, copy=False)


def _check_leaf_grad(leaf, grad: np.ndarray, producer: str) -> None:
    if _check_finite and not np.all(np.isfinite(grad)):
        raise FloatingPointError(
            f"non-finite gradient (NaN or inf) for a leaf tensor of shape {leaf.shape}, coming from "
            f"{producer}.backward; check the loss and the inputs for NaN/inf, or values outside an "
            "op's domain (log/sqrt/div near 0)"
        )


def _finish_leaf(leaf, pending: dict) -> None:
    """Add the leaf's gradient for this backward (now final) to its .grad and run its hooks."""
    leaf_grad = pending.pop(id(leaf), None)
    if leaf_grad is None:
        return
    leaf._accumulate_grad(leaf_grad)
    if leaf._post_accumulate_grad_hooks:
        for hook in list(leaf._post_accumulate_grad_hooks.values()):
            hook(leaf)


def backward(root, grad=None, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf), weighted by `grad`, into every leaf's `.grad`."""
    if not root.requires_grad:
        raise RuntimeError(
            "backward() called on a tensor that does not require grad "
            "(no input had requires_grad=True, or it was computed under no_grad())"
        )
    keep_freed_memory_for_reuse()  # once per process: the next steps reuse this step's freed blocks
    pending: dict[int, np.ndarray] = {id(root): _initial_grad(root, grad)}
    owned: set[int] = set()  # keys of pending gradients allocated here (see _add_pending)
    uses_left, heights = _uses_and_heights(_inputs_first(root))
    arrival = itertools.count()  # ties between equally low nodes: first ready, first visited
    ready = [(heights[id(root)], next(arrival), root)]  # a heap: the lowest ready node first
    while ready:
        _, _, node = heapq.heappop(ready)
        for parent in node._parents:  # this node's share is passed on below: one use less for each input
            if parent is not None:
                uses_left[id(parent)] -= 1
                if uses_left[id(parent)] == 0:
                    heapq.heappush(ready, (heights[id(parent)], next(arrival), parent))
        if node._grad_fn is None:  # a leaf: every use has passed its share, the gradient is final
            _finish_leaf(node, pending)
            owned.discard(id(node))
            continue
        node_grad = pending.pop(id(node), None)
        owned.discard(id(node))  # from here on the array may be passed on as it is: never written again
        if node_grad is None:
            continue
        if node._retains_grad:
            node._accumulate_grad(node_grad)
        if node._ctx is None:
            raise RuntimeError(
                "trying to backward through the graph a second time (its saved buffers were freed); "
                "call backward(retain_graph=True) the first time if you need to"
            )
        name = node._grad_fn.__name__
        input_grads = node._grad_fn.backward(node._ctx, node_grad)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(node._parents):
            raise RuntimeError(
                f"{name}.backward returned {len(input_grads)} gradients for {len(node._parents)} inputs"
            )
        for parent, parent_grad in zip(node._parents, input_grads):
            if parent is None or parent_grad is None:
                continue
            if not isinstance(parent_grad, SliceGradient):
                parent_grad = np.asarray(parent_grad)
            if parent_grad.shape != parent.shape:
                raise RuntimeError(
                    f"{name}.backward returned a gradient of shape "
                    f"{parent_grad.shape} for an input of shape {parent.shape}"
                )
            if parent._grad_fn is None and isinstance(parent_grad, SliceGradient):
                parent_grad = parent_grad.dense(parent.data.dtype)  # a leaf's gradient is checked whole
            if parent_grad.dtype != parent.data.dtype:
                if isinstance(parent_grad, SliceGradient):
                    parent_grad.values = parent_grad.values.astype(parent.data.dtype)
                else:
                    parent_grad = parent_grad.astype(parent.data.dtype)
            if parent._grad_fn is None:
                _check_leaf_grad(parent, parent_grad, name)
            _add_pending(pending, owned, id(parent), parent_grad)
        if not retain_graph:
            node._ctx = None
            node._parents = tuple(None for _ in node._parents)  # release the activations
