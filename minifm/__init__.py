"""minifm: a foundation model's whole life, from scratch in NumPy with Cython hot loops.

    import minifm as mf
    x = mf.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward();  x.grad  ->  [[2., 4.]]
"""
__version__ = "0.1.0"

from minifm import autograd, kernels  # noqa: E402
from minifm.autograd import (  # noqa: E402
    Tensor, enable_grad, full, no_grad, ones, ones_like, rand, randn, tensor, zeros, zeros_like,
)
from minifm.autograd.ops import (  # noqa: E402
    abs, clip, concatenate, exp, log, logsumexp, matmul, maximum, mean, minimum, pad, reshape, split,
    sqrt, stack, sum, transpose, where,
)

__all__ = [
    "Tensor", "abs", "autograd", "clip", "concatenate", "enable_grad", "exp", "full", "kernels", "log",
    "logsumexp", "matmul", "maximum", "mean", "minimum", "no_grad", "ones", "ones_like", "pad", "rand",
    "randn", "reshape", "split", "sqrt", "stack", "sum", "tensor", "transpose", "where", "zeros", "zeros_like",
]
