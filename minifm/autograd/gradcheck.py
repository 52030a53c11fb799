"""`gradcheck(fn, *inputs)`: compare backward() with central finite differences in float64.

For a function fn(*tensors) -> Tensor, draw a random projection vector v of the output's shape,
take the scalar L = sum(v * fn(x)), and compare dL/dx from backward() with
(L(x + eps e_i) - L(x - eps e_i)) / (2 eps) for every element i of every input that requires grad.
Inputs are promoted to float64 so the finite differences are accurate to about eps^2.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with finite differences."""


def numerical_grad(fn, inputs: list[Tensor], projection: np.ndarray, index: int, eps: float) -> np.ndarray:
    """d sum(projection * fn(inputs)) / d inputs[index] by central differences."""
    target = inputs[index].data
    if not target.flags.c_contiguous:
        raise ValueError("numerical_grad perturbs the input in place and needs a C-contiguous array")
    grad = np.zeros_like(target)
    flat, flat_grad = target.reshape(-1), grad.reshape(-1)
    with no_grad():
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + eps
            plus = float(np.sum(projection * fn(*inputs).data))
            flat[i] = original - eps
            minus = float(np.sum(projection * fn(*inputs).data))
            flat[i] = original
            flat_grad[i] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0,
              raise_exception: bool = True) -> bool:
    """True when backward() matches central differences for every input with requires_grad.

    Tensors are copied to float64 (the originals are not touched); non-Tensor inputs are passed
    through unchanged. On mismatch raises GradcheckError naming the input and the worst element.
    """
    promoted = []
    for x in inputs:
        if isinstance(x, Tensor) and x.dtype.kind == "f":
            # C order, so that the flat view numerical_grad perturbs is the array itself, not a copy
            promoted.append(Tensor(np.array(x.data, dtype=np.float64, order="C"), requires_grad=x.requires_grad))
        else:
            promoted.append(x)
    checked = [i for i, x in enumerate(promoted) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck needs at least one input Tensor with requires_grad=True")

    output = fn(*promoted)
    if not isinstance(output, Tensor):
        raise TypeError(f"fn must return a Tensor, got {type(output).__name__}")
    projection = np.random.default_rng(seed).standard_normal(output.shape)
    output.backward(projection)

    for i in checked:
        analytic = promoted[i].grad if promoted[i].grad is not None else np.zeros_like(promoted[i].data)
        numeric = numerical_grad(fn, promoted, projection, i, eps)
        if not np.allclose(analytic, numeric, atol=atol, rtol=rtol):
            error = np.abs(analytic - numeric)
            worst = np.unravel_index(np.argmax(error), error.shape) if error.ndim else ()
            message = (
                f"gradient of input {i} (shape {promoted[i].shape}) disagrees with finite differences: "
                f"max abs error {error.max():.3e} at index {worst}: analytic {analytic[worst]!r}, "
                f"numeric {numeric[worst]!r}"
            )
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
