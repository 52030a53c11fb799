"""decode_step kernel (one Llama block's decoding step, and its streaming matrix-vector product): compiled ==
NumPy reference on drawn shapes; the product gives the same bits on one and two threads and for a row alone
or inside a block of four; the reference equals torch's Llama arithmetic; bad arguments are named."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_helpers import compiled_path
from oracles import require
from minifm.kernels import decode_step


def _random(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@st.composite
def matvec_cases(draw):
    """(x (K,), W (N, K)): K in 1..80 (tails, 8- and 32-float pieces) or 1020..1100 (rows of at least 1024
    values go four at a time); N in 1..70."""
    width = draw(st.integers(1, 80) | st.integers(1020, 1100))
    rows = draw(st.integers(1, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return _random(rng, width, scale=1.0), _random(rng, rows, width, scale=1.0)


@given(case=matvec_cases())
def test_matvec_compiled_matches_reference(case):
    x, weight = case
    expected = decode_step.matvec_reference(x.astype(np.float64), weight.astype(np.float64))  # (N,)
    with compiled_path("decode_step"):
        result = decode_step.matvec(x, weight)
    assert result.dtype == np.float32 and result.shape == (weight.shape[0],)
    bound = 1e-6 * np.abs(weight) @ np.abs(x) + 1e-30  # float32 rounding of sums of |terms|
    assert np.all(np.abs(result - expected) <= 8 * bound)


@given(case=matvec_cases())
@settings(max_examples=30)
def test_matvec_rows_are_independent_of_blocks_and_threads(case):
    x, weight = case
    with compiled_path("decode_step") as kernel:
        one, two, three = (np.empty(weight.shape[0], dtype=np.float32) for _ in range(3))
        kernel.matvec_rows(x, weight, one, threads=1)
        kernel.matvec_rows(x, weight, two, threads=2)
        kernel.matvec_rows(x, weight, three, threads=3)
        alone = np.concatenate([decode_step.matvec(x, weight[row:row + 1]) for row in range(weight.shape[0])])
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, three)
    np.testing.assert_array_equal(one, alone)


def test_matvec_accumulates_into_out():
    rng = np.random.default_rng(0)
    x, weight, out = _random(rng, 50), _random(rng, 13, 50), _random(rng, 13)
    with compiled_path("decode_step") as kernel:
        fresh = np.empty(13, dtype=np.float32)
        kernel.matvec_rows(x, weight, fresh)
        summed = out.copy()
        kernel.matvec_rows(x, weight, summed, accumulate=True)
    np.testing.assert_array_equal(summed, out + fresh)


@st.composite
def layer_cases(draw):
    """A random block (E, H, G, D, F), its caches (G, max_length, D) and a position < max_length."""
    kv_heads = draw(st.integers(1, 3))
    heads = kv_heads * draw(st.integers(1, 3))
    head_dim = 2 * draw(st.integers(1, 12))
    width, hidden = draw(st.integers(1, 70)), draw(st.integers(1, 90))
    length = draw(st.integers(1, 12))
    position = draw(st.integers(0, length - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    layer = decode_step.LayerWeights(
        1 + _random(rng, width), _random(rng, heads * head_dim, width), _random(rng, kv_heads * head_dim, width),
        _random(rng, kv_heads * head_dim, width), _random(rng, width, heads * head_dim), 1 + _random(rng, width),
        _random(rng, hidden, width), _random(rng, hidden, width), _random(rng, width, hidden),
        draw(st.sampled_from([1e-5, 1e-6])), heads)
    angles = rng.uniform(-np.pi, np.pi, head_dim // 2)
    return (_random(rng, width, scale=1.0), layer, _random(rng, kv_heads, length, head_dim),
            _random(rng, kv_heads, length, head_dim), position, np.cos(angles).astype(np.float32),
            np.sin(angles).astype(np.float32))


@given(case=layer_cases())
def test_decode_layer_compiled_matches_reference(case):
    x, layer, cache_k, cache_v, position, cos, sin = case
    expected_x, expected_k, expected_v = x.copy(), cache_k.copy(), cache_v.copy()
    decode_step.decode_layer_reference(expected_x, layer, expected_k, expected_v, position, cos, sin)
    with compiled_path("decode_step"):
        assert decode_step.applies(x, layer, cache_k, cache_v)
        decode_step.decode_layer(x, layer, cache_k, cache_v, position, cos, sin)
    np.testing.assert_allclose(cache_k, expected_k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cache_v, expected_v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x, expected_x, rtol=1e-4, atol=1e-4 * (1 + np.abs(expected_x).max()))


@given(case=layer_cases())
@settings(max_examples=30)
def test_decode_layer_gives_the_same_bits_on_one_two_and_three_threads(case):
    x, layer, cache_k, cache_v, position, cos, sin = case
    results = []
    scratch = np.empty(2 * layer.wq.shape[0] + 2 * layer.wk.shape[0] + 2 * layer.wgate.shape[0]
                       + layer.heads * (position + 1), dtype=np.float32)
    with compiled_path("decode_step") as kernel:
        for count in (1, 2, 3):
            state = (x.copy(), cache_k.copy(), cache_v.copy())
            kernel.decode_layer(state[0], *layer[:9], state[1], state[2], position, cos, sin, layer.eps, layer.heads,
                                scratch, threads=count)
            results.append(state)
    for one, other in zip(results[0], results[1]):
        np.testing.assert_array_equal(one, other)
    for one, other in zip(results[0], results[2]):
        np.testing.assert_array_equal(one, other)


def test_reference_equals_torch_llama_arithmetic():
    """The reference's block against the same arithmetic in torch, written from transformers' Llama layer
    (RMSNorm, rotate-half RoPE, repeat_kv, softmax attention, SwiGLU)."""
    torch = require("torch")
    rng = np.random.default_rng(1)
    width, heads, kv_heads, head_dim, hidden, length, position = 24, 4, 2, 6, 40, 7, 5
    layer = decode_step.LayerWeights(
        1 + _random(rng, width), _random(rng, heads * head_dim, width), _random(rng, kv_heads * head_dim, width),
        _random(rng, kv_heads * head_dim, width), _random(rng, width, heads * head_dim), 1 + _random(rng, width),
        _random(rng, hidden, width), _random(rng, hidden, width), _random(rng, width, hidden), 1e-5, heads)
    x, cache_k, cache_v = _random(rng, width, scale=1.0), _random(rng, kv_heads, length, head_dim), \
        _random(rng, kv_heads, length, head_dim)
    angles = position * 10000.0 ** (-np.arange(0, head_dim, 2) / head_dim)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    t = {name: torch.tensor(value, dtype=torch.float64) for name, value in layer._asdict().items()
         if isinstance(value, np.ndarray)}

    def rms(v, weight):
        return v * torch.rsqrt(v.pow(2).mean() + layer.eps) * weight

    def rotate(v):  # (heads, D) by the position: x * cos + rotate_half(x) * sin
        c, s = torch.tensor(np.concatenate([cos, cos]), dtype=torch.float64), \
            torch.tensor(np.concatenate([sin, sin]), dtype=torch.float64)
        half = v.shape[-1] // 2
        return v * c + torch.cat([-v[..., half:], v[..., :half]], dim=-1) * s

    xt = torch.tensor(x, dtype=torch.float64)
    h = rms(xt, t["norm1"])
    q = rotate((t["wq"] @ h).reshape(heads, head_dim))
    k = rotate((t["wk"] @ h).reshape(kv_heads, head_dim))
    v = (t["wv"] @ h).reshape(kv_heads, head_dim)
    keys, values = torch.tensor(cache_k, dtype=torch.float64), torch.tensor(cache_v, dtype=torch.float64)
    keys[:, position], values[:, position] = k, v
    keys = keys[:, :position + 1].repeat_interleave(heads // kv_heads, dim=0)  # (H, P, D)
    values = values[:, :position + 1].repeat_interleave(heads // kv_heads, dim=0)
    weights = torch.softmax(torch.einsum("hd,hpd->hp", q, keys) / head_dim ** 0.5, dim=-1)
    xt = xt + t["wo"] @ torch.einsum("hp,hpd->hd", weights, values).reshape(-1)
    h = rms(xt, t["norm2"])
    xt = xt + t["wdown"] @ (torch.nn.functional.silu(t["wgate"] @ h) * (t["wup"] @ h))

    decode_step.decode_layer_reference(x, layer, cache_k, cache_v, position, cos, sin)
    np.testing.assert_allclose(x, xt.numpy(), rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_named():
    rng = np.random.default_rng(2)
    x, layer, cache_k, cache_v, position, cos, sin = (
        _random(rng, 8), decode_step.LayerWeights(
            _random(rng, 8), _random(rng, 8, 8), _random(rng, 4, 8), _random(rng, 4, 8), _random(rng, 8, 8),
            _random(rng, 8), _random(rng, 6, 8), _random(rng, 6, 8), _random(rng, 8, 6), 1e-5, 2),
        _random(rng, 1, 3, 4), _random(rng, 1, 3, 4), 1, _random(rng, 2), _random(rng, 2))
    with compiled_path("decode_step") as kernel:
        scratch = np.empty(100, dtype=np.float32)
        with pytest.raises(ValueError, match="wdown"):
            kernel.decode_layer(x, *layer[:8], _random(rng, 8, 5), cache_k, cache_v, position, cos, sin, 1e-5, 2,
                                scratch)
        with pytest.raises(ValueError, match="position"):
            kernel.decode_layer(x, *layer[:9], cache_k, cache_v, 3, cos, sin, 1e-5, 2, scratch)
        with pytest.raises(ValueError, match="scratch"):
            kernel.decode_layer(x, *layer[:9], cache_k, cache_v, position, cos, sin, 1e-5, 2, scratch[:10])
        with pytest.raises(ValueError, match="heads"):
            kernel.decode_layer(x, *layer[:9], cache_k, cache_v, position, cos, sin, 1e-5, 0, scratch)
        with pytest.raises(ValueError, match="out"):
            kernel.matvec_rows(x, layer.wq, np.empty(5, dtype=np.float32))
