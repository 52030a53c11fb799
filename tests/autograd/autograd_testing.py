"""Helpers shared by the autograd tests: run an op on float64 Tensors and compare with NumPy / torch."""
import numpy as np
from hypothesis import HealthCheck, settings

import minifm as mf
from minifm.autograd import gradcheck

# gradcheck loops over every input element, so the gradient properties run fewer examples than the profile
# (the kernel_path fixture only selects a backend, so sharing it across examples is safe)
GRAD_EXAMPLES = settings(
    max_examples=max(8, settings.default.max_examples // 3),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def leaf(array, requires_grad=True):
    """A float64 leaf Tensor holding a copy of `array`."""
    return mf.tensor(np.array(array, dtype=np.float64), requires_grad=requires_grad, dtype=np.float64)


def check_forward_and_grad(op, reference, *arrays, atol=1e-10):
    """op(*tensors) equals reference(*arrays), and its gradient equals central differences."""
    inputs = [leaf(a) for a in arrays]
    out = op(*inputs)
    np.testing.assert_allclose(out.numpy(), reference(*arrays), rtol=1e-10, atol=atol)
    assert gradcheck(op, *[leaf(a) for a in arrays])


def torch_compare(op, torch_op, *arrays, rtol=1e-9, atol=1e-10, seed=0):
    """Forward values and the gradient of sum(w * out) agree with torch on the same float64 inputs."""
    import torch

    inputs = [leaf(a) for a in arrays]
    out = op(*inputs)
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(weights)

    torch_inputs = [torch.tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    torch_out = torch_op(*torch_inputs)
    torch_out.backward(torch.tensor(weights))

    np.testing.assert_allclose(out.numpy(), torch_out.detach().numpy(), rtol=rtol, atol=atol)
    for mine, theirs in zip(inputs, torch_inputs):
        expected = np.zeros(mine.shape) if theirs.grad is None else theirs.grad.numpy()
        got = np.zeros(mine.shape) if mine.grad is None else mine.grad
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def _projected_grads(op, arrays, seed=0):
    """Output and d sum(w * op(x)) / dx for every input, with w a fixed random projection."""
    inputs = [leaf(a) for a in arrays]
    out = op(*inputs)
    out.backward(np.random.default_rng(seed).standard_normal(out.shape))
    return out.numpy(), [x.grad for x in inputs]


def check_on_kernel_path(kernel_path, op, reference, *arrays, atol=1e-10, gradcheck_atol=1e-5):
    """On the reference path: forward = `reference` and gradcheck. On the compiled path: forward =
    `reference` and gradients equal to the reference path's (which that run proves by gradcheck).

    The compiled kernels are not gradchecked element by element: thousands of calls on tiny inputs
    would measure the kernels' per-call overhead rather than their correctness."""
    from minifm.kernels import _backend

    if kernel_path == "reference":
        inputs = [leaf(a) for a in arrays]
        np.testing.assert_allclose(op(*inputs).numpy(), reference(*arrays), rtol=1e-10, atol=atol)
        assert gradcheck(op, *[leaf(a) for a in arrays], atol=gradcheck_atol)
        return
    out, grads = _projected_grads(op, arrays)
    np.testing.assert_allclose(out, reference(*arrays), rtol=1e-10, atol=atol)
    _backend.use_reference(True)
    try:
        _, reference_grads = _projected_grads(op, arrays)
    finally:
        _backend.use_reference(False)
    for got, expected in zip(grads, reference_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
