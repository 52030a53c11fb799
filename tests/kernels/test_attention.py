"""Flash-style attention kernel: compiled == naive reference (at every tile size, and at the long
sequences that take the larger tiles), masks, GQA, finite differences, torch, the same bits on any
thread count, and the memory property (no (B, H, Tq, Tk) array on the compiled path)."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_helpers import central_difference, compiled_path, rtol_for
from minifm.kernels import attention as at
from minifm.kernels import threads


@st.composite
def attention_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    batch = draw(st.integers(1, 2))
    kv_heads = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2, 4]))
    tq = draw(st.sampled_from([1, 2, 5]) | st.integers(1, 70))  # 70 crosses a 64-row query block
    tk = draw(st.sampled_from([1, 3]) | st.integers(1, 140))  # 140 crosses a 128-key block
    d = draw(st.sampled_from([1, 3, 8, 16]))
    causal = draw(st.booleans())
    q_offset = draw(st.sampled_from([0, tk - tq]) | st.integers(-3, tk)) if causal else 0
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, kv_heads * group, tq, d)).astype(dtype)
    k = rng.standard_normal((batch, kv_heads, tk, d)).astype(dtype)
    v = rng.standard_normal((batch, kv_heads, tk, d)).astype(dtype)
    dout = rng.standard_normal(q.shape).astype(dtype)
    key_mask = None
    if draw(st.booleans()):  # ragged right padding: batch row b keeps its first lengths[b] keys
        lengths = rng.integers(0, tk + 1, batch)
        key_mask = np.arange(tk)[None, :] < lengths[:, None]
    scale = draw(st.sampled_from([None, 0.3, 2.0]))
    return q, k, v, dout, dict(scale=scale, causal=causal, q_offset=int(q_offset), key_mask=key_mask)


def _assert_lse_close(lse, lse_ref, rtol):
    masked = np.isneginf(lse_ref)
    np.testing.assert_array_equal(np.isneginf(lse), masked)
    np.testing.assert_allclose(lse[~masked], lse_ref[~masked], rtol=rtol, atol=rtol * 10)


def _relayout(x, layout):
    """The same values as x (B, H, T, D) in another memory layout: the kernel reads some in place."""
    if layout == "heads-last":  # the transposed view of a (B, T, H, D) projection
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    if layout == "padded-rows":  # rows further apart than D (a slice of a wider last axis)
        wide = np.zeros(x.shape[:3] + (x.shape[3] + 3,), dtype=x.dtype)
        wide[..., 1:x.shape[3] + 1] = x
        return wide[..., 1:x.shape[3] + 1]
    if layout == "reversed":  # negative strides: the wrapper copies
        return np.ascontiguousarray(x[:, :, ::-1])[:, :, ::-1]
    return x


@given(attention_problems(), st.sampled_from(["contiguous", "heads-last", "padded-rows", "reversed"]))
def test_compiled_matches_reference(problem, layout):
    q, k, v, dout, options = problem
    q, k, v, dout = (_relayout(x, layout) for x in (q, k, v, dout))
    rtol = rtol_for(q.dtype) * (10 if q.dtype == np.float32 else 100)
    with compiled_path("attention"):
        out, lse = at.attention_forward(q, k, v, **options)
        out_ref, lse_ref = at.attention_forward_reference(q, k, v, **options)
        assert out.dtype == lse.dtype == q.dtype
        np.testing.assert_allclose(out, out_ref, rtol=rtol, atol=rtol)
        _assert_lse_close(lse, lse_ref, rtol)
        grads = at.attention_backward(q, k, v, out_ref, lse_ref, dout, **options)
        grads_ref = at.attention_backward_reference(q, k, v, out_ref, lse_ref, dout, **options)
    for name, g, g_ref, like in zip("qkv", grads, grads_ref, (q, k, v)):
        assert g.shape == like.shape and g.dtype == like.dtype, name
        assert np.isfinite(g).all(), name
        np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=rtol * 10, err_msg=f"d{name}")


@given(attention_problems(), st.sampled_from([1, 3, 5, 16, 64, 128]), st.sampled_from([1, 4, 7, 32, 128, 256]))
def test_every_tile_size_matches_reference(problem, block_q, block_k):
    """The kernel's tile sizes (chosen by sequence length, csrc/attention.pyx) change only rounding:
    tiles smaller and larger than the problem, causal tiles cut at the diagonal, blocks of a few rows."""
    q, k, v, dout, options = problem
    scale = options["scale"] if options["scale"] is not None else 1 / np.sqrt(q.shape[3])
    mask_bytes = options["key_mask"].view(np.uint8) if options["key_mask"] is not None else None
    args = (scale, options["causal"], options["q_offset"], mask_bytes, block_q, block_k)
    rtol = rtol_for(q.dtype) * (10 if q.dtype == np.float32 else 100)
    with compiled_path("attention") as kernel:
        out_ref, lse_ref = at.attention_forward_reference(q, k, v, **options)
        grads_ref = at.attention_backward_reference(q, k, v, out_ref, lse_ref, dout, **options)
        out, lse = np.empty_like(q), np.empty(q.shape[:3], dtype=q.dtype)
        kernel.attention_forward(q, k, v, out, lse, *args)
        grads = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
        kernel.attention_backward(q, k, v, out_ref, lse_ref, dout, *grads, *args)
    np.testing.assert_allclose(out, out_ref, rtol=rtol, atol=rtol)
    _assert_lse_close(lse, lse_ref, rtol)
    for name, g, g_ref in zip("qkv", grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=rtol * 10, err_msg=f"d{name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_sequences_match_reference(dtype, rng):
    """Past 512 queries and keys the kernel takes its larger tiles: causal with an offset, GQA, padding."""
    q = rng.standard_normal((2, 2, 530, 8)).astype(dtype)
    k, v = (rng.standard_normal((2, 1, 600, 8)).astype(dtype) for _ in range(2))
    dout = rng.standard_normal(q.shape).astype(dtype)
    options = dict(causal=True, q_offset=70, key_mask=np.arange(600)[None, :] < np.array([[600], [577]]))
    rtol = rtol_for(dtype) * (10 if dtype == np.float32 else 100)
    with compiled_path("attention"):
        out, lse = at.attention_forward(q, k, v, **options)
        grads = at.attention_backward(q, k, v, out, lse, dout, **options)
    out_ref, lse_ref = at.attention_forward_reference(q, k, v, **options)
    grads_ref = at.attention_backward_reference(q, k, v, out, lse, dout, **options)
    np.testing.assert_allclose(out, out_ref, rtol=rtol, atol=rtol)
    _assert_lse_close(lse, lse_ref, rtol)
    for name, g, g_ref in zip("qkv", grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=rtol * 10, err_msg=f"d{name}")


def test_same_bits_on_one_and_two_threads(rng):
    """Work is split by (batch, head, query block) forward and (batch, kv head) backward, with tiles
    chosen by the shapes only: the thread count changes no bit."""
    q = rng.standard_normal((1, 4, 600, 16)).astype(np.float32)
    k, v = (rng.standard_normal((1, 2, 600, 16)).astype(np.float32) for _ in range(2))
    dout = rng.standard_normal(q.shape).astype(np.float32)
    results = []
    saved = threads._policy
    try:
        for count in (1, 2):
            threads._policy = None
            threads.set_num_threads(count)
            with compiled_path("attention"):
                out, lse = at.attention_forward(q, k, v, causal=True)
                results.append((out, lse, *at.attention_backward(q, k, v, out, lse, dout, causal=True)))
    finally:
        threads._policy = saved
        if saved is not None:
            saved.blas_threads_now = None
            saved.apply()
    for name, one, two in zip(("out", "lse", "dq", "dk", "dv"), *results):
        np.testing.assert_array_equal(one, two, err_msg=name)


def test_fully_masked_rows_give_zeros_not_nan(kernel_path, rng):
    q = rng.standard_normal((2, 2, 4, 3))
    k = rng.standard_normal((2, 1, 5, 3))
    v = rng.standard_normal((2, 1, 5, 3))
    key_mask = np.array([[False] * 5, [True, True, False, False, False]])
    # causal with q_offset=-2: the first two queries of batch 1 see no key at all
    out, lse = at.attention_forward(q, k, v, causal=True, q_offset=-2, key_mask=key_mask)
    assert np.all(out[0] == 0) and np.all(np.isneginf(lse[0]))
    assert np.all(out[1, :, :2] == 0) and np.all(np.isneginf(lse[1, :, :2]))
    assert np.isfinite(out).all() and np.isfinite(lse[1, :, 2:]).all()
    dq, dk, dv = at.attention_backward(q, k, v, out, lse, np.ones_like(out), causal=True, q_offset=-2, key_mask=key_mask)
    assert np.all(dq[0] == 0) and np.all(dk[0] == 0) and np.all(dv[0] == 0)
    assert np.all(dk[1, :, 2:] == 0) and np.all(dv[1, :, 2:] == 0)  # padded keys get nothing
    assert np.isfinite(dq).all() and np.isfinite(dk).all() and np.isfinite(dv).all()


@pytest.mark.parametrize("causal, q_offset, masked", [(False, 0, False), (True, 0, False), (True, 2, True)])
def test_gradients_match_central_differences(kernel_path, causal, q_offset, masked, rng):
    q = rng.standard_normal((1, 4, 3, 2))
    k = rng.standard_normal((1, 2, 5, 2))
    v = rng.standard_normal((1, 2, 5, 2))
    weights = rng.standard_normal(q.shape)
    options = dict(causal=causal, q_offset=q_offset, key_mask=np.array([[True, False, True, True, True]]) if masked else None)

    def loss(q_, k_, v_):
        return float(np.sum(weights * at.attention_forward(q_, k_, v_, **options)[0]))

    out, lse = at.attention_forward(q, k, v, **options)
    dq, dk, dv = at.attention_backward(q, k, v, out, lse, weights, **options)
    np.testing.assert_allclose(dq, central_difference(lambda z: loss(z, k, v), q.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dk, central_difference(lambda z: loss(q, z, v), k.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dv, central_difference(lambda z: loss(q, k, z), v.copy()), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("causal, padded", [(False, False), (True, False), (True, True), (False, True)])
def test_matches_torch_sdpa(kernel_path, group, causal, padded, rng):
    torch = pytest.importorskip("torch", reason="torch's scaled_dot_product_attention is the oracle")
    batch, kv_heads, tq, tk, d = 2, 2, 6, 9, 4
    q = rng.standard_normal((batch, kv_heads * group, tq, d))
    k = rng.standard_normal((batch, kv_heads, tk, d))
    v = rng.standard_normal((batch, kv_heads, tk, d))
    dout = rng.standard_normal(q.shape)
    q_offset = tk - tq  # cached-decoding alignment: the last query sees every key
    key_mask = np.array([[True] * tk, [True] * 5 + [False] * 4]) if padded else None
    allowed = np.ones((batch, 1, tq, tk), dtype=bool)
    if causal:
        allowed &= np.arange(tk)[None, :] <= np.arange(tq)[:, None] + q_offset
    if padded:
        allowed &= key_mask[:, None, None, :]
    qt, kt, vt = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    expanded_k, expanded_v = kt.repeat_interleave(group, dim=1), vt.repeat_interleave(group, dim=1)
    out_t = torch.nn.functional.scaled_dot_product_attention(qt, expanded_k, expanded_v, attn_mask=torch.tensor(allowed))
    out_t.backward(torch.tensor(dout))
    options = dict(causal=causal, q_offset=q_offset, key_mask=key_mask)
    out, lse = at.attention_forward(q, k, v, **options)
    dq, dk, dv = at.attention_backward(q, k, v, out, lse, dout, **options)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, theirs in ((dq, qt.grad), (dk, kt.grad), (dv, vt.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-9, atol=1e-11)


def test_matches_torch_enable_gqa_is_causal(kernel_path, rng):
    torch = pytest.importorskip("torch", reason="torch's scaled_dot_product_attention is the oracle")
    q = rng.standard_normal((1, 4, 7, 3)).astype(np.float32)
    k = rng.standard_normal((1, 2, 7, 3)).astype(np.float32)
    v = rng.standard_normal((1, 2, 7, 3)).astype(np.float32)
    expected = torch.nn.functional.scaled_dot_product_attention(
        torch.tensor(q), torch.tensor(k), torch.tensor(v), is_causal=True, scale=0.7, enable_gqa=True
    )
    out, _ = at.attention_forward(q, k, v, causal=True, scale=0.7)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_compiled_path_never_allocates_the_score_matrix(rng):
    t, d = 1024, 8
    q, k, v = (rng.standard_normal((1, 1, t, d)).astype(np.float32) for _ in range(3))
    score_bytes = t * t * 4
    with compiled_path("attention"):
        tracemalloc.start()
        out, lse = at.attention_forward(q, k, v, causal=True)
        at.attention_backward(q, k, v, out, lse, np.ones_like(out), causal=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < score_bytes / 8, f"peak {peak} bytes vs one score matrix {score_bytes}"
    tracemalloc.start()
    at.attention_forward_reference(q, k, v, causal=True)
    _, reference_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert reference_peak >= score_bytes  # the naive reference does materialise it (sanity of the probe)


def test_bad_shapes_are_named(kernel_path):
    q = np.zeros((1, 4, 3, 2))
    kv = np.zeros((1, 2, 5, 2))
    with pytest.raises(ValueError, match=r"q heads \(3\) must be a multiple of k/v heads \(2\)"):
        at.attention_forward(np.zeros((1, 3, 3, 2)), kv, kv)
    with pytest.raises(ValueError, match=r"k shape .* must equal v shape"):
        at.attention_forward(q, kv, np.zeros((1, 2, 4, 2)))
    with pytest.raises(ValueError, match=r"head size"):
        at.attention_forward(q, np.zeros((1, 2, 5, 3)), np.zeros((1, 2, 5, 3)))
    with pytest.raises(ValueError, match=r"q must have shape \(B, heads, T, D\)"):
        at.attention_forward(np.zeros((4, 3, 2)), kv, kv)
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, Tk\) = \(1, 5\), got \(1, 4\)"):
        at.attention_forward(q, kv, kv, key_mask=np.ones((1, 4), dtype=bool))
    with pytest.raises(TypeError, match="key_mask must be a bool array"):
        at.attention_forward(q, kv, kv, key_mask=np.ones((1, 5)))
    with pytest.raises(ValueError, match=r"head size D \(axis 3\) must be >= 1"):
        at.attention_forward(np.zeros((1, 2, 3, 0)), np.zeros((1, 2, 5, 0)), np.zeros((1, 2, 5, 0)))
    with pytest.raises(TypeError, match="share a dtype"):
        at.attention_forward(q.astype(np.float32), kv, kv)
    with pytest.raises(ValueError, match=r"dout must have shape"):
        at.attention_backward(q, kv, kv, q, np.zeros((1, 4, 3)), np.zeros((1, 4, 2, 2)))
