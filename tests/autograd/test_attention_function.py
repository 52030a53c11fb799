"""F.scaled_dot_product_attention: the flash (kernel) path and the dense path agree with each other,
with a NumPy statement of the math, with central differences and with torch's SDPA
(causal, q_offset, GQA, key padding, boolean and additive masks)."""
import numpy as np
import pytest
from autograd_testing import GRAD_EXAMPLES, check_on_kernel_path, leaf
from hypothesis import given
from hypothesis import strategies as st

import minifm.functional as F
from minifm.autograd import gradcheck


def reference_attention(q, k, v, allowed, scale):
    """softmax(q k^T * scale) v over the allowed keys; rows with no allowed key give zeros."""
    groups = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)
    scores = np.where(allowed, q @ np.swapaxes(k, -1, -2) * scale, -np.inf)
    peak = np.max(scores, axis=-1, keepdims=True)
    weights = np.where(allowed, np.exp(scores - np.where(np.isfinite(peak), peak, 0)), 0.0)
    total = weights.sum(-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return weights @ v


@st.composite
def attention_case(draw):
    batch, kv_heads, groups = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.sampled_from([1, 2]))
    tq, tk, d = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    q = rng.standard_normal((batch, kv_heads * groups, tq, d))
    k, v = rng.standard_normal((batch, kv_heads, tk, d)), rng.standard_normal((batch, kv_heads, tk, d))
    causal = draw(st.booleans())
    q_offset = draw(st.integers(0, max(tk - tq, 0))) if causal else 0
    padding = rng.random((batch, tk)) < 0.7 if draw(st.booleans()) else None
    return q, k, v, causal, q_offset, padding


def _allowed(q, k, causal, q_offset, padding):
    tq, tk = q.shape[2], k.shape[2]
    allowed = np.ones((1, 1, tq, tk), dtype=bool)
    if causal:
        allowed = allowed & (np.arange(tk)[None, :] <= np.arange(tq)[:, None] + q_offset)
    if padding is not None:
        allowed = allowed & padding[:, None, None, :]
    return allowed


@GRAD_EXAMPLES
@given(case=attention_case())
def test_flash_and_dense_paths_agree_with_the_math_and_finite_differences(kernel_path, case):
    q, k, v, causal, q_offset, padding = case
    scale = 1 / np.sqrt(q.shape[-1])
    expected = reference_attention(q, k, v, _allowed(q, k, causal, q_offset, padding), scale)

    def flash(a, b, c):
        return F.scaled_dot_product_attention(a, b, c, is_causal=causal, q_offset=q_offset, key_padding_mask=padding)

    all_true = np.ones((1, 1, q.shape[2], k.shape[2]), dtype=bool)

    def dense(a, b, c):  # a trivially-true attn_mask forces the dense path
        return F.scaled_dot_product_attention(a, b, c, attn_mask=all_true, is_causal=causal, q_offset=q_offset,
                                              key_padding_mask=padding)

    check_on_kernel_path(kernel_path, flash, lambda *_: expected, q, k, v, atol=1e-12, gradcheck_atol=1e-6)
    out = dense(leaf(q), leaf(k), leaf(v))  # the dense path is composed of ops: gradcheck the composition
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9, atol=1e-12)
    if kernel_path == "reference":
        assert gradcheck(dense, leaf(q), leaf(k), leaf(v), atol=1e-6)


def test_additive_float_mask_equals_boolean_mask(rng):
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    allowed = rng.random((1, 1, 3, 3)) < 0.7
    allowed[..., 0] = True
    additive = np.where(allowed, 0.0, -np.inf)
    with_bool = F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), attn_mask=allowed)
    with_float = F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), attn_mask=additive)
    np.testing.assert_allclose(with_bool.numpy(), with_float.numpy(), rtol=1e-12)
    np.testing.assert_allclose(with_bool.numpy(), reference_attention(q, k, v, allowed, 0.5), rtol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_torch_sdpa(kernel_path, rng, causal, heads, padded):
    torch = pytest.importorskip("torch", reason="torch is the oracle for attention")
    h, hkv = heads
    q = rng.standard_normal((2, h, 5, 8))
    k, v = rng.standard_normal((2, hkv, 5, 8)), rng.standard_normal((2, hkv, 5, 8))
    padding = None
    if padded:
        padding = np.ones((2, 5), dtype=bool)
        padding[1, :2] = False  # left padding in the second sequence
    weights = rng.standard_normal((2, h, 5, 8))

    inputs = [leaf(a) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*inputs, is_causal=causal, key_padding_mask=padding)
    out.backward(weights)

    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    mask = torch.ones(5, 5, dtype=torch.bool)
    if causal:
        mask = torch.tril(mask)
    mask = mask[None, None].expand(2, 1, 5, 5)
    if padding is not None:
        mask = mask & torch.tensor(padding)[:, None, None, :]
    theirs = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask, enable_gqa=h != hkv)
    theirs.backward(torch.tensor(weights))
    np.testing.assert_allclose(out.numpy(), theirs.detach().numpy(), rtol=1e-9, atol=1e-12)
    for mine, other in zip(inputs, (tq, tk, tv)):
        np.testing.assert_allclose(mine.grad, other.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_fully_masked_rows_give_zeros_and_zero_gradient(kernel_path, rng):
    q, k, v = (leaf(rng.standard_normal((1, 1, 2, 3))) for _ in range(3))
    padding = np.zeros((1, 2), dtype=bool)
    out = F.scaled_dot_product_attention(q, k, v, key_padding_mask=padding)
    np.testing.assert_array_equal(out.numpy(), 0)
    out.sum().backward()
    np.testing.assert_array_equal(q.grad, 0)
