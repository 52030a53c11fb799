"""Layers and attention pieces against torch, plus RoPE's defining properties."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifm as mf
from minifm import nn
from minifm.nn.attention import RotaryEmbedding

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for layer semantics")


def test_linear_embedding_norms_equal_torch_with_gradients(rng):
    linear, embedding = nn.Linear(5, 3).double(), nn.Embedding(7, 5).double()
    layer_norm, rms_norm = nn.LayerNorm(3).double(), nn.RMSNorm(3).double()
    for layer in (layer_norm, rms_norm):
        layer.weight.data[...] = rng.normal(size=3)
    layer_norm.bias.data[...] = rng.normal(size=3)
    ids = rng.integers(0, 7, size=(2, 4))
    out = rms_norm(layer_norm(linear(embedding(ids))))
    weights = rng.normal(size=out.shape)
    (out * weights).sum().backward()

    t = {name: torch.tensor(p.data, requires_grad=True) for name, p in
         [("lw", linear.weight), ("lb", linear.bias), ("e", embedding.weight), ("nw", layer_norm.weight),
          ("nb", layer_norm.bias), ("rw", rms_norm.weight)]}
    x = torch.nn.functional.embedding(torch.as_tensor(ids), t["e"])
    x = torch.nn.functional.linear(x, t["lw"], t["lb"])
    x = torch.nn.functional.layer_norm(x, (3,), t["nw"], t["nb"], 1e-5)
    x = torch.nn.functional.rms_norm(x, (3,), t["rw"], 1e-6)
    (x * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(out.data, x.detach().numpy(), atol=1e-12)
    for name, param in [("lw", linear.weight), ("lb", linear.bias), ("e", embedding.weight),
                        ("nw", layer_norm.weight), ("nb", layer_norm.bias), ("rw", rms_norm.weight)]:
        np.testing.assert_allclose(param.grad, t[name].grad.numpy(), atol=1e-12, err_msg=name)


def test_linear_default_init_is_torch_uniform_bound():
    nn.manual_seed(0)
    layer = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.99 * bound
    nn.manual_seed(0)
    np.testing.assert_array_equal(nn.Linear(400, 300).weight.data, layer.weight.data)


def test_cross_attention_with_padding_equals_torch(rng):
    attention = nn.MultiHeadAttention(8, num_heads=4, num_kv_heads=2, kv_dim=6).double()
    x = mf.tensor(rng.normal(size=(2, 3, 8)), dtype=np.float64)
    memory = mf.tensor(rng.normal(size=(2, 5, 6)), dtype=np.float64)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    out = attention(x, key_value_states=memory, key_padding_mask=mask)
    p = {name: torch.tensor(param.data) for name, param in attention.named_parameters()}

    def project(name, inp, heads):
        y = torch.tensor(inp.data) @ p[f"{name}.weight"].T + p[f"{name}.bias"]
        return y.view(2, -1, heads, 2).transpose(1, 2)

    q, k, v = project("q_proj", x, 4), project("k_proj", memory, 2), project("v_proj", memory, 2)
    k, v = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(mask)[:, None, None])
    expected = expected.transpose(1, 2).reshape(2, 3, 8) @ p["o_proj.weight"].T + p["o_proj.bias"]
    np.testing.assert_allclose(out.data, expected.numpy(), atol=1e-12)


@given(st.integers(0, 50), st.integers(0, 50), st.integers(-20, 20), st.sampled_from([2, 4, 8]))
def test_rope_scores_depend_only_on_position_difference_and_keep_norms(m, n, shift, half):
    rope = RotaryEmbedding(2 * half)
    rng = np.random.default_rng(m * 101 + n)
    q = mf.tensor(rng.normal(size=(1, 1, 1, 2 * half)), dtype=np.float64)
    k = mf.tensor(rng.normal(size=(1, 1, 1, 2 * half)), dtype=np.float64)

    def score(pos_q, pos_k):
        cq, sq = rope.cos_sin(np.array([pos_q]), np.float64)
        ck, sk = rope.cos_sin(np.array([pos_k]), np.float64)
        rq, rk = rope.rotate(q, cq, sq).data, rope.rotate(k, ck, sk).data
        np.testing.assert_allclose(np.linalg.norm(rq), np.linalg.norm(q.data), rtol=1e-12)
        return float(np.sum(rq * rk))

    shifted = max(0, shift + min(m, n)) - min(m, n)
    assert score(m, n) == pytest.approx(score(m + shifted, n + shifted), abs=1e-9)


def test_rope_gradient_matches_finite_differences(rng):
    rope = RotaryEmbedding(6)
    cos, sin = rope.cos_sin(np.arange(3, 7), np.float64)
    x = mf.tensor(rng.normal(size=(2, 2, 4, 6)), requires_grad=True, dtype=np.float64)
    assert mf.autograd.gradcheck(lambda t: rope.rotate(t, cos, sin), x)


def test_kv_cache_validation():
    cache = nn.KVCache(n_layer=1, batch_size=2, n_kv_head=1, head_dim=4, max_length=3)
    with pytest.raises(ValueError, match="holds"):
        cache.extend(0, mf.zeros(2, 2, 1, 4), mf.zeros(2, 2, 1, 4))
    with pytest.raises(IndexError, match="batch_indices"):
        cache.reorder(np.array([0, 2]))
    with pytest.raises(ValueError, match="positive integer"):
        nn.KVCache(1, 0, 1, 4, 3)


def _outputs_and_gradients(module, x: np.ndarray, upstream: np.ndarray):
    for param in module.parameters():
        param.grad = None
    inputs = mf.tensor(x, requires_grad=True)
    out = module(inputs)
    out.backward(upstream)
    return out.data, inputs.grad, {name: param.grad.copy() for name, param in module.named_parameters()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kind", ["swiglu", "attention"])
def test_stacked_products_equal_separate_products(kind, dtype, bias, rng, monkeypatch):
    """q/k/v and SwiGLU's gate/up as one product with the stacked weights (above STACKED_MIN_ROWS rows) give
    what separate products give (rounding only): output, input gradient and every weight's gradient."""
    if kind == "swiglu":
        module = nn.SwiGLU(12, 20, bias=bias)
        stacked = (module.gate_proj, module.up_proj)
    else:
        module = nn.MultiHeadAttention(12, 4, num_kv_heads=2, bias=bias, causal=True)
        stacked = (module.q_proj, module.k_proj, module.v_proj)
    module.to(dtype)
    assert not nn.layers.stacks_linears(stacked, nn.layers.STACKED_MIN_ROWS)
    assert nn.layers.stacks_linears(stacked, 39)
    x = rng.standard_normal((3, 13, 12)).astype(dtype)  # 39 rows
    upstream = rng.standard_normal((3, 13, 12)).astype(dtype)
    out, grad_x, grads = _outputs_and_gradients(module, x, upstream)
    monkeypatch.setattr(nn.layers, "STACKED_MIN_ROWS", 10**9)  # every product separate
    assert not nn.layers.stacks_linears(stacked, 39)
    out_separate, grad_x_separate, grads_separate = _outputs_and_gradients(module, x, upstream)
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, out_separate, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad_x, grad_x_separate, rtol=tolerance, atol=tolerance)
    assert grads.keys() == grads_separate.keys()
    for name, grad in grads.items():
        assert grad.shape == grads_separate[name].shape and grad.dtype == dtype, name
        np.testing.assert_allclose(grad, grads_separate[name], rtol=tolerance, atol=tolerance, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_swiglu_stacked_product_equals_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    swiglu = nn.SwiGLU(12, 20, bias=True).to(dtype)
    x = rng.standard_normal((3, 13, 12)).astype(dtype)  # 39 rows: the stacked product
    upstream = rng.standard_normal((3, 13, 12)).astype(dtype)
    out, grad_x, grads = _outputs_and_gradients(swiglu, x, upstream)
    theirs = {name: torch.tensor(param.data, requires_grad=True) for name, param in swiglu.named_parameters()}
    x_t = torch.tensor(x, requires_grad=True)
    linear = torch.nn.functional.linear
    gated = torch.nn.functional.silu(linear(x_t, theirs["gate_proj.weight"], theirs["gate_proj.bias"])) \
        * linear(x_t, theirs["up_proj.weight"], theirs["up_proj.bias"])
    out_t = linear(gated, theirs["down_proj.weight"], theirs["down_proj.bias"])
    out_t.backward(torch.tensor(upstream))
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad_x, x_t.grad.numpy(), rtol=tolerance, atol=tolerance)
    for name, param in theirs.items():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=tolerance, atol=tolerance, err_msg=name)


@pytest.mark.parametrize("kind", ["swiglu", "attention"])
def test_stacked_products_match_finite_differences(kind, rng):
    if kind == "swiglu":
        module = nn.SwiGLU(6, 8, bias=True).to(np.float64)
    else:
        module = nn.MultiHeadAttention(8, 2, bias=True, causal=True).to(np.float64)
    x = mf.tensor(rng.standard_normal((2, 17, module.q_proj.in_features if kind == "attention" else 6)),
                  requires_grad=True)  # 34 rows: the stacked product
    assert mf.autograd.gradcheck(lambda inputs: module(inputs), x)
