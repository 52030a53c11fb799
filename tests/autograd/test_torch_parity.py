"""Every op: forward values and gradients equal PyTorch's on the same float64 inputs."""
import numpy as np
import pytest
from autograd_testing import GRAD_EXAMPLES, torch_compare
from hypothesis import given
from hypothesis import strategies as st
from strategies import autograd_arrays, autograd_nonscalar_shapes, broadcast_pairs, off_grid_arrays, positive_arrays

import minifm as mf
import minifm.functional as F

torch = pytest.importorskip("torch", reason="torch is the test oracle for op semantics")
TF = torch.nn.functional

# name -> (minifm op, torch op, input strategy)
UNARY = {
    "neg": (lambda x: -x, lambda x: -x, autograd_arrays),
    "exp": (mf.exp, torch.exp, autograd_arrays),
    "log": (mf.log, torch.log, positive_arrays),
    "sqrt": (mf.sqrt, torch.sqrt, positive_arrays),
    "abs": (mf.abs, torch.abs, off_grid_arrays),
    "clip": (lambda x: mf.clip(x, -0.45, 1.05), lambda x: torch.clamp(x, -0.45, 1.05), off_grid_arrays),
    "tanh": (mf.tanh, torch.tanh, autograd_arrays),
    "sigmoid": (mf.sigmoid, torch.sigmoid, autograd_arrays),
    "relu": (mf.relu, torch.relu, off_grid_arrays),
    "gelu": (F.gelu, TF.gelu, autograd_arrays),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), autograd_arrays),
    "silu": (F.silu, TF.silu, autograd_arrays),
    "softplus": (F.softplus, TF.softplus, autograd_arrays),
    "logsigmoid": (F.logsigmoid, TF.logsigmoid, autograd_arrays),
    "pow_scalar": (lambda x: x**3, lambda x: x**3, autograd_arrays),
    "rpow": (lambda x: 3.0**x, lambda x: 3.0**x, autograd_arrays),
    "sum": (lambda x: x.sum(axis=-1), lambda x: x.sum(dim=-1), autograd_arrays),
    "mean_keepdims": (lambda x: x.mean(axis=0, keepdims=True), lambda x: x.mean(dim=0, keepdim=True), autograd_arrays),
    "var": (lambda x: x.var(axis=-1), lambda x: x.var(dim=-1, unbiased=False), autograd_arrays),
    "max": (lambda x: x.max(axis=-1), lambda x: x.amax(dim=-1), off_grid_arrays),
    "min": (lambda x: x.min(), lambda x: x.amin(), off_grid_arrays),
    "logsumexp": (lambda x: x.logsumexp(axis=-1), lambda x: torch.logsumexp(x, dim=-1), autograd_arrays),
    "reshape": (lambda x: x.reshape(-1), lambda x: x.reshape(-1), autograd_arrays),
    "transpose": (lambda x: x.T, lambda x: x.permute(*reversed(range(x.ndim))), autograd_arrays),
    "swapaxes": (lambda x: x.swapaxes(0, -1), lambda x: x.transpose(0, -1), autograd_arrays),
    "unsqueeze": (lambda x: x.unsqueeze(1), lambda x: x.unsqueeze(1), autograd_arrays),
    "getitem": (lambda x: x[..., ::-1][0], lambda x: x.flip(-1)[0], autograd_arrays),
    "getitem_repeated": (lambda x: x[np.array([0, 0, -1])], lambda x: x[torch.tensor([0, 0, -1])], autograd_arrays),
    "masked_fill": (lambda x: x.masked_fill(np.asarray(x.numpy() > 0), 2.0),
                    lambda x: x.masked_fill(x.detach() > 0, 2.0), autograd_arrays),
    "pad": (lambda x: mf.pad(x, [(0, 0)] * (x.ndim - 1) + [(1, 2)], value=0.5),
            lambda x: TF.pad(x, (1, 2), value=0.5), autograd_arrays),
    "softmax": (lambda x: F.softmax(x, axis=0), lambda x: torch.softmax(x, dim=0), autograd_arrays),
    "log_softmax": (F.log_softmax, lambda x: torch.log_softmax(x, dim=-1), autograd_arrays),
    "layer_norm": (F.layer_norm, lambda x: TF.layer_norm(x, x.shape[-1:]), autograd_arrays),
    "rms_norm": (F.rms_norm, lambda x: TF.rms_norm(x, x.shape[-1:], eps=1e-6), autograd_arrays),
    "split": (lambda x: mf.split(x, [1], axis=0)[1], lambda x: torch.split(x, [1, x.shape[0] - 1])[1], autograd_arrays),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@GRAD_EXAMPLES
@given(data=st.data(), shape=autograd_nonscalar_shapes)
def test_unary_op_matches_torch(name, data, shape):
    op, torch_op, strategy = UNARY[name]
    torch_compare(op, torch_op, data.draw(strategy(shape)), rtol=1e-7)


BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, autograd_arrays, autograd_arrays),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, autograd_arrays, autograd_arrays),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, autograd_arrays, autograd_arrays),
    "div": (lambda a, b: a / b, lambda a, b: a / b, autograd_arrays, positive_arrays),
    "pow": (lambda a, b: a**b, lambda a, b: a**b, positive_arrays, autograd_arrays),
    "maximum": (mf.maximum, torch.maximum, off_grid_arrays, lambda s: off_grid_arrays(s, 0.0)),
    "minimum": (mf.minimum, torch.minimum, off_grid_arrays, lambda s: off_grid_arrays(s, 0.0)),
    "where": (lambda a, b: mf.where(np.asarray((a.numpy() + b.numpy()) > 0), a, b),
              lambda a, b: torch.where((a + b).detach() > 0, a, b), autograd_arrays, autograd_arrays),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@GRAD_EXAMPLES
@given(data=st.data(), shapes=broadcast_pairs)
def test_binary_op_matches_torch(name, data, shapes):
    op, torch_op, strategy_a, strategy_b = BINARY[name]
    shape_a, shape_b = shapes.input_shapes
    torch_compare(op, torch_op, data.draw(strategy_a(shape_a)), data.draw(strategy_b(shape_b)), rtol=1e-7)


@pytest.mark.parametrize("shape_a, shape_b", [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                                              ((2, 1, 2, 3), (5, 3, 2)), ((4, 2, 3), (3, 4))])
def test_matmul_matches_torch(rng, shape_a, shape_b):
    torch_compare(mf.matmul, torch.matmul, rng.standard_normal(shape_a), rng.standard_normal(shape_b))


def test_structural_ops_match_torch(rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    torch_compare(lambda x, y: mf.concatenate([x, y, x], axis=1), lambda x, y: torch.cat([x, y, x], dim=1), a, b)
    torch_compare(lambda x, y: mf.stack([x, y], axis=1), lambda x, y: torch.stack([x, y], dim=1), a, b)
    torch_compare(lambda x: x.broadcast_to((4, 2, 3)), lambda x: x.expand(4, 2, 3), a)
    torch_compare(lambda x: x[np.array([[True, False, True], [False, False, True]])],
                  lambda x: x[torch.tensor([[True, False, True], [False, False, True]])], a)
    torch_compare(lambda x: x[None, :, 1:], lambda x: x[None, :, 1:], a)
    torch_compare(lambda x: x.unsqueeze(0).squeeze(0), lambda x: x.unsqueeze(0).squeeze(0), a)


def test_linear_embedding_norms_match_torch(rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    torch_compare(F.linear, TF.linear, x, w, b)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    torch_compare(F.layer_norm, lambda x, g, c: TF.layer_norm(x, (4,), g, c), x, gamma, beta)
    torch_compare(F.rms_norm, lambda x, g: TF.rms_norm(x, (4,), g, eps=1e-6), x, gamma)
    ids = np.array([[0, 2, 2], [4, 0, 1]])
    torch_compare(lambda t: F.embedding(ids, t), lambda t: TF.embedding(torch.tensor(ids), t), w)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_matches_torch(kernel_path, rng, reduction, label_smoothing):
    logits = rng.standard_normal((2, 4, 6)) * 3
    targets = rng.integers(0, 6, size=(2, 4))
    targets[0, 1] = targets[1, 3] = -100

    def torch_loss(t):
        return TF.cross_entropy(t.reshape(-1, 6), torch.tensor(targets.reshape(-1)), ignore_index=-100,
                                label_smoothing=label_smoothing, reduction=reduction).reshape(
            (2, 4) if reduction == "none" else ())

    torch_compare(lambda t: F.cross_entropy(t, targets, label_smoothing=label_smoothing, reduction=reduction),
                  torch_loss, logits)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch(rng, reduction):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    torch_compare(lambda x, y: F.mse_loss(x, y, reduction=reduction),
                  lambda x, y: TF.mse_loss(x, y, reduction=reduction), a, b)


def test_tensor_method_aliases_match_torch(rng):
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 2))
    torch_compare(lambda x, y: x.matmul(y).pow(2.0).softmax(axis=1).log_softmax(),
                  lambda x, y: torch.log_softmax(torch.softmax(x.matmul(y).pow(2.0), dim=1), dim=-1), a, b)
    torch_compare(lambda x: x.permute(2, 0, 1).flatten(), lambda x: x.permute(2, 0, 1).flatten(), a)
