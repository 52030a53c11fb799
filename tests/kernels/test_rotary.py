"""RoPE rotation kernel: compiled == NumPy reference on drawn shapes and layouts (contiguous, the
transposed view of a (B, T, H, D) projection), cos/sin per batch row or shared, float32 and float64;
rotating by -sin undoes the rotation; transformers' rotate-half formula in torch agrees; bad shapes are named."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_helpers import compiled_path, rtol_for
from minifm.kernels import rotary
from oracles import require


@st.composite
def rotation_cases(draw):
    """(x (B, H, T, D), cos, sin (B or 1, 1, T, D/2)) with x contiguous or a transposed (B, T, H, D) view."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    batch, heads, steps = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 9))
    dim = 2 * draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if draw(st.booleans()):
        x = rng.standard_normal((batch, steps, heads, dim)).astype(dtype).transpose(0, 2, 1, 3)
    else:
        x = rng.standard_normal((batch, heads, steps, dim)).astype(dtype)
    table_batch = draw(st.sampled_from([1, batch]))
    angles = rng.uniform(-100, 100, size=(table_batch, 1, steps, dim // 2))
    return x, np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


@given(case=rotation_cases())
def test_compiled_matches_reference(case):
    x, cos, sin = case
    expected = rotary.rotate_reference(x, cos, sin)
    with compiled_path("rotary"):
        out = rotary.rotate(x, cos, sin)
    assert out.shape == x.shape and out.dtype == x.dtype
    tolerance = rtol_for(x.dtype) * 4
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


@given(case=rotation_cases())
def test_rotating_by_minus_sin_undoes_the_rotation(case):
    x, cos, sin = case
    with compiled_path("rotary"):
        back = rotary.rotate(rotary.rotate(x, cos, sin), cos, -sin)
    tolerance = rtol_for(x.dtype) * 10
    np.testing.assert_allclose(back, x, rtol=tolerance, atol=tolerance)


def test_transposed_view_keeps_its_layout(rng):
    """The output of a (B, H, T, D) view of (B, T, H, D) memory is laid out the same way (attention reads it in place)."""
    x = rng.standard_normal((2, 5, 3, 8)).astype(np.float32).transpose(0, 2, 1, 3)
    cos, sin = np.ones((1, 1, 5, 4), np.float32), np.zeros((1, 1, 5, 4), np.float32)
    with compiled_path("rotary"):
        out = rotary.rotate(x, cos, sin)
    assert out.strides == x.strides
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_transformers_rotate_half(dtype, kernel_path, rng):
    torch = require("torch")
    x = rng.standard_normal((2, 9, 17, 64)).astype(dtype)
    angles = np.arange(17)[:, None] * 100000.0 ** (-np.arange(0, 64, 2) / 64)  # (T, D/2)
    cos, sin = np.cos(angles).astype(dtype)[None, None], np.sin(angles).astype(dtype)[None, None]
    tx = torch.tensor(x)
    full_cos = torch.tensor(np.concatenate([cos, cos], axis=-1))  # transformers' (T, D) layout
    full_sin = torch.tensor(np.concatenate([sin, sin], axis=-1))
    rotated_half = torch.cat([-tx[..., 32:], tx[..., :32]], dim=-1)
    theirs = (tx * full_cos + rotated_half * full_sin).numpy()
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(rotary.rotate(x, cos, sin), theirs, rtol=tolerance, atol=tolerance)


def test_bad_shapes_are_named(kernel_path):
    x = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="last axis of x must be even"):
        rotary.rotate(np.zeros((1, 2, 3, 5), np.float32), np.zeros((1, 1, 3, 2), np.float32),
                      np.zeros((1, 1, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"cos must have shape \(1 or 1, 1, 3, 2\)"):
        rotary.rotate(x, np.zeros((1, 1, 4, 2), np.float32), np.zeros((1, 1, 3, 2), np.float32))
    with pytest.raises(TypeError, match=r"x must be a \(B, heads, T, D\)"):
        rotary.rotate(np.zeros((2, 3, 4), np.float32), np.zeros((1, 1, 3, 2), np.float32),
                      np.zeros((1, 1, 3, 2), np.float32))
