"""minifm: a foundation model's whole life, from scratch in NumPy with Cython hot loops.

    import minifm as mf
    x = mf.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward();  x.grad  ->  [[2., 4.]]

The tensor engine and the common ops are available here directly (`mf.tensor`, `mf.no_grad`,
`mf.matmul`, ...); the subpackages (`mf.nn`, `mf.optim`, `mf.models`, `mf.functional`, ...) are
imported on first attribute access, so `import minifm` stays cheap.
"""
import importlib

from minifm import autograd, kernels
from minifm.autograd import (
    Tensor, enable_grad, full, is_grad_enabled, no_grad, ones, ones_like, rand, randn, tensor, zeros,
    zeros_like,
)
from minifm.autograd.ops import (
    abs, broadcast_to, clip, concatenate, exp, log, logsumexp, masked_fill, matmul, maximum, mean, minimum,
    pad, relu, reshape, sigmoid, split, sqrt, squeeze, stack, sum, swapaxes, tanh, transpose, unsqueeze,
    where,
)

__version__ = "0.1.0"

_SUBPACKAGES = (
    "checkpoint", "cli", "config", "data", "functional", "lifecycle", "models", "nn", "optim", "peft", "runs",
    "sampling", "tokenizer", "train",
)


def __getattr__(name: str):
    """Import a subpackage on first use (`mf.nn.Linear` without `import minifm.nn`)."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"minifm.{name}")
    raise AttributeError(f"module 'minifm' has no attribute {name!r}")


__all__ = [
    "Tensor", "abs", "autograd", "broadcast_to", "clip", "concatenate", "enable_grad", "exp", "full",
    "is_grad_enabled", "kernels", "log", "logsumexp", "masked_fill", "matmul", "maximum", "mean", "minimum",
    "no_grad", "ones", "ones_like", "pad", "rand", "randn", "relu", "reshape", "sigmoid", "split", "sqrt",
    "squeeze", "stack", "sum", "swapaxes", "tanh", "tensor", "transpose", "unsqueeze", "where", "zeros",
    "zeros_like",
]
