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
