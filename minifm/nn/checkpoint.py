"""Activation checkpointing: run a module without keeping its activations, recompute them in backward.

    out = checkpoint(module, x, **kwargs)          # the same value as module(x, **kwargs)

Forward runs `module(x, **kwargs)` under no_grad, so none of its intermediate arrays are kept: the
graph records a single node holding only the input x. When backward reaches that node it runs the
module again on x with recording on (the recomputation) and differentiates the recomputed output with
the incoming gradient, which yields the gradient of x and of the module's parameters. A transformer
checkpointed block by block keeps one (B, T, d) input per block instead of every block's activations
(q, k, v, attention output, the MLP's (B, T, hidden) arrays, ...), and pays one more forward of each
block in backward (Chen et al., 2016, "Training deep nets with sublinear memory cost"; torch's
torch.utils.checkpoint, transformers' gradient_checkpointing_enable()).

The module's trainable parameters are inputs of the node, so gradients flow to them even when x
itself needs none (a frozen base under LoRA: the embedding output does not require grad) and the
gradients reach them through the ordinary backward: the recomputation's backward collects them
(each parameter's `.grad` and post-accumulate hooks are set aside meanwhile) and returns them to the
outer backward, which accumulates them and runs the hooks as it would without checkpointing.
Randomness: the state of every NumPy Generator the module's sub-modules hold as `.rng` (Dropout,
LoRA dropout) is recorded before the forward and restored for the recomputation, so it draws the same
masks; afterwards each generator is put back where the forward left it.

The forward and the recomputation run the same code on the same values (the no_grad forward of a
TransformerBlock may take its inference fast path, which computes the same numbers: nn/block.py), so
the gradients equal those of an un-checkpointed run (tests/nn/test_activation_checkpointing.py checks
it bit for bit on GPT, with and without LoRA).

Simplifications: one tensor input (x) whose gradient is returned; other arguments are passed through
unchanged and get no gradient; the module must not change its state between forward and backward.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Function
from minifm.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad
from minifm.autograd.tensor import Tensor
from minifm.nn.module import Module


def _generators(module: Module) -> list[np.random.Generator]:
    """Every distinct NumPy Generator held as `.rng` by the module or its sub-modules."""
    found, seen = [], set()
    for sub in module.modules():
        rng = getattr(sub, "rng", None)
        if isinstance(rng, np.random.Generator) and id(rng) not in seen:
            seen.add(id(rng))
            found.append(rng)
    return found


class _Checkpoint(Function):
    """Inputs: x and the module's trainable parameters; output: module(x, **kwargs) (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, *param_arrays, module=None, params=(), kwargs=None):
        generators = _generators(module)
        ctx.rng_states = [(rng, rng.bit_generator.state) for rng in generators]
        ctx.x, ctx.module, ctx.params, ctx.kwargs = x, module, params, kwargs
        with no_grad():
            out = module(Tensor._from_array(x), **kwargs)  # (..., like x): nothing recorded
        return out.data

    @staticmethod
    def backward(ctx, grad):
        module, params = ctx.module, ctx.params
        resume_states = [(rng, rng.bit_generator.state) for rng, _ in ctx.rng_states]
        for rng, state in ctx.rng_states:
            rng.bit_generator.state = state  # the forward's random draws again
        saved = [(param.grad, param._post_accumulate_grad_hooks) for param in params]
        x = Tensor._from_array(ctx.x, requires_grad=bool(ctx.needs_input_grad[0]))
        try:
            for param in params:
                param.grad, param._post_accumulate_grad_hooks = None, None
            with enable_grad():
                out = module(x, **ctx.kwargs)  # the recomputation, recorded
            out.backward(grad)
            param_grads = tuple(param.grad for param in params)
        finally:
            for param, (param_grad, hooks) in zip(params, saved):
                param.grad, param._post_accumulate_grad_hooks = param_grad, hooks
            for rng, state in resume_states:
                rng.bit_generator.state = state
        return (x.grad if ctx.needs_input_grad[0] else None,) + param_grads


def checkpoint(module: Module, x, **kwargs):
    """module(x, **kwargs) without keeping its activations (see the module docstring); x a Tensor (..., d).

    With graph recording off, or when neither x nor any parameter of the module requires a gradient,
    this is simply module(x, **kwargs)."""
    if not isinstance(module, Module):
        raise TypeError(f"checkpoint: module must be a minifm.nn.Module, got {type(module).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"checkpoint: x must be a Tensor, got {type(x).__name__}")
    params = tuple(param for param in module.parameters() if param.requires_grad)
    if not is_grad_enabled() or not (x.requires_grad or params):
        return module(x, **kwargs)
    return _Checkpoint.apply(x, *params, module=module, params=params, kwargs=kwargs)


__all__ = ["checkpoint"]
