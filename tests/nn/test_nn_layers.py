"""Layers and attention pieces against torch, plus RoPE's defining properties."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifm as mf
from minifm import nn
from minifm.autograd import ops
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_swiglu_stacked_product_equals_two_products_and_torch(dtype, bias, rng):
    """SwiGLU's one product with [W_gate; W_up] stacked gives what two products give (rounding only), in the
    output, the input's gradient and every weight's gradient, and equals torch's silu(x Wg^T) * (x Wu^T)."""
    torch = pytest.importorskip("torch")
    swiglu = nn.SwiGLU(12, 20, bias=bias)
    if dtype == np.float64:
        swiglu.to(np.float64)
    assert swiglu.stacks_products(15) is False and swiglu.stacks_products(33)
    x = rng.standard_normal((3, 13, 12)).astype(dtype)  # 39 rows: above STACKED_MIN_ROWS
    upstream = rng.standard_normal((3, 13, 12)).astype(dtype)
    tolerance = 1e-12 if dtype == np.float64 else 2e-5

    def run(stacked: bool):
        for param in swiglu.parameters():
            param.grad = None
        inputs = mf.tensor(x, requires_grad=True)
        if stacked:
            out = swiglu(inputs)
        else:
            out = swiglu.down_proj(ops.silu_mul(swiglu.gate_proj(inputs), swiglu.up_proj(inputs)))
        out.backward(upstream)
        return out.data, inputs.grad, {name: param.grad.copy() for name, param in swiglu.named_parameters()}

    out, grad_x, grads = run(stacked=True)
    out_two, grad_x_two, grads_two = run(stacked=False)
    np.testing.assert_allclose(out, out_two, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad_x, grad_x_two, rtol=tolerance, atol=tolerance)
    for name in grads_two:
        assert grads[name].shape == grads_two[name].shape and grads[name].dtype == dtype, name
        np.testing.assert_allclose(grads[name], grads_two[name], rtol=tolerance, atol=tolerance, err_msg=name)
    theirs = {name: torch.tensor(param.data, requires_grad=True) for name, param in swiglu.named_parameters()}
    x_t = torch.tensor(x, requires_grad=True)

    def project(name):
        weight = theirs[f"{name}.weight"]
        return torch.nn.functional.linear(x_t if name != "down_proj" else hidden, weight, theirs.get(f"{name}.bias"))

    hidden = torch.nn.functional.silu(project("gate_proj")) * project("up_proj")
    project("down_proj").backward(torch.tensor(upstream))
    np.testing.assert_allclose(grad_x, x_t.grad.numpy(), rtol=tolerance, atol=tolerance)
    for name, param in theirs.items():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=tolerance, atol=tolerance, err_msg=name)


def test_swiglu_stacked_product_matches_finite_differences(rng):
    swiglu = nn.SwiGLU(6, 8, bias=True)
    swiglu.to(np.float64)
    x = mf.tensor(rng.standard_normal((2, 17, 6)), requires_grad=True)  # 34 rows: the stacked product
    assert swiglu.stacks_products(34)
    assert mf.autograd.gradcheck(lambda inputs: swiglu(inputs), x)
