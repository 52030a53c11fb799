"""Tensor-level reverse-mode automatic differentiation.

    tensor.py      Tensor (an ndarray + graph links), constructors, data_of
    tensor_methods.py  Tensor's operators and NumPy-named methods (x + y, x.sum()), each a call into ops
    function.py    Function (forward + backward side by side), unbroadcast
    engine.py      backward(): iterative topological order, accumulation, graph freeing
    grad_mode.py   no_grad / enable_grad
    ops/           the differentiable operations
    gradcheck.py   gradcheck(): backward() against central differences in float64
"""
from minifm.autograd import ops, tensor_methods  # noqa: F401  (tensor_methods gives Tensor its operators)
from minifm.autograd.engine import set_check_finite
from minifm.autograd.function import Context, Function, unbroadcast
from minifm.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad
from minifm.autograd.gradcheck import GradcheckError, gradcheck
from minifm.autograd.tensor import Tensor, data_of, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like

__all__ = [
    "Context", "Function", "GradcheckError", "Tensor", "data_of", "enable_grad", "full", "gradcheck",
    "is_grad_enabled", "no_grad", "ones", "ones_like", "ops", "rand", "randn", "set_check_finite", "tensor",
    "unbroadcast",
    "zeros", "zeros_like",
]
