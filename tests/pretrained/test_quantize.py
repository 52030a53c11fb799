"""quants.quantize (float32 -> Q8_0 / Q4_0 / Q4_1 blocks): the bytes of gguf.quants.quantize, round-trip
error within the per-block bounds of the quants.py docstring, and clear errors for what a block cannot hold."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minifm.pretrained.quants import QUANTIZED_TYPES, QuantizedTensor, check_finite_scales, quantize
from oracles import require

gguf = require("gguf")

TYPES = ("Q8_0", "Q4_0", "Q4_1")


def gguf_bytes(values: np.ndarray, type_name: str) -> np.ndarray:
    return gguf.quants.quantize(values, gguf.GGMLQuantizationType[type_name])


# Values a block may hold: ordinary weights, exact zeros, ties (halves of small integers, which sit on
# rounding boundaries of the grids), float32 subnormals and magnitudes up to the f16-scale limit of
# the tightest format (Q4_1 stores min x as an f16: |x| <= 65504).
block_values = st.one_of(
    st.floats(-4.0, 4.0, width=32),
    st.just(0.0),
    st.integers(-32, 32).map(lambda k: k / 2),
    st.sampled_from([1e-38, -1e-40, 1e-45, 6e-8, -6e-8, 65504.0, -65504.0, 6.5e4, 1e4]),
    st.floats(-6e4, 6e4, width=32),
)


@st.composite
def weight_arrays(draw):
    """float32 (rows, 32 * blocks) arrays mixing the values above, sometimes a whole block of one value."""
    rows = draw(st.integers(1, 4))
    blocks = draw(st.integers(1, 3))
    values = draw(hnp.arrays(np.float32, (rows, 32 * blocks), elements=block_values))
    if draw(st.booleans()):
        values[0, :32] = draw(block_values)  # a constant block: d = 0 (Q8_0 / Q4_1) or max / -8 (Q4_0)
    return values


@pytest.mark.parametrize("type_name", TYPES)
@given(values=weight_arrays())
def test_bytes_equal_gguf_quantize(type_name, values):
    stored = quantize(values, type_name)
    assert stored.type == type_name and stored.shape == values.shape
    np.testing.assert_array_equal(stored.data, gguf_bytes(values, type_name))


@pytest.mark.parametrize("type_name", TYPES)
def test_bytes_equal_gguf_on_a_weight_sized_normal_tensor(type_name, rng):
    values = (rng.standard_normal((96, 576)) * 0.05).astype(np.float32)
    np.testing.assert_array_equal(quantize(values, type_name).data, gguf_bytes(values, type_name))


def _block_bound(type_name: str, values: np.ndarray, data: np.ndarray) -> np.ndarray:
    """The per-block round-trip bound of the quants.py docstring, one number per block (n_blocks,)."""
    blocks = values.reshape(-1, 32).astype(np.float64)
    raw = data.reshape(blocks.shape[0], -1)
    d16 = raw[:, 0:2].copy().view("<f2").astype(np.float64)[:, 0]
    if type_name == "Q8_0":
        d = np.abs(blocks).max(axis=1) / 127
        return d / 2 + 128 * np.abs(d - d16)
    if type_name == "Q4_0":
        d = np.abs(blocks).max(axis=1) / 8
        return d + 8 * np.abs(d - np.abs(d16))
    m16 = raw[:, 2:4].copy().view("<f2").astype(np.float64)[:, 0]
    low = blocks.min(axis=1)
    d = (blocks.max(axis=1) - low) / 15
    return d / 2 + 15 * np.abs(d - d16) + np.abs(low - m16)


@pytest.mark.parametrize("type_name", TYPES)
@given(values=weight_arrays())
def test_round_trip_error_within_the_block_bound(type_name, values):
    stored = quantize(values, type_name)
    error = np.abs(stored.dequantize().astype(np.float64) - values).reshape(-1, 32).max(axis=1)  # (n_blocks,)
    bound = _block_bound(type_name, values, stored.data)
    scale = np.abs(values.reshape(-1, 32)).max(axis=1)
    slack = 1e-6 * scale + 1e-37  # float32 rounding of x * (1/d) and of the decode; tiny blocks flush to 0
    assert (error <= bound + slack).all(), (error, bound)


@pytest.mark.parametrize("type_name", TYPES)
def test_zeros_and_values_on_the_grid_come_back_exactly(type_name):
    values = np.zeros((2, 64), dtype=np.float32)
    if type_name == "Q8_0":
        values[1, :32] = (np.arange(32) * 8 - 127).astype(np.float32) * np.float32(0.5)  # d = 63.5 / 127 = 0.5
    elif type_name == "Q4_0":
        values[1, :32] = (np.arange(32) % 16 - 8).astype(np.float32) * np.float32(0.25)  # d = -2 / -8 = 0.25
    else:
        values[1, :32] = (np.arange(32) % 16).astype(np.float32) * np.float32(0.5) - 1  # d = 0.5, m = -1
    stored = quantize(values, type_name)
    np.testing.assert_array_equal(stored.dequantize(), values)


def test_q8_0_rounds_halves_away_from_zero():
    values = np.zeros((1, 32), dtype=np.float32)
    values[0, :4] = [127.0, 0.5, -0.5, 1.5]  # d = 1: q = 127, 1, -1, 2
    stored = quantize(values, "Q8_0")
    assert list(stored.data[0, 2:6].view(np.int8)) == [127, 1, -1, 2]


def test_leading_axes_and_lowercase_type_names():
    values = np.linspace(-1, 1, 2 * 3 * 64, dtype=np.float32).reshape(2, 3, 64)
    stored = quantize(values, "q4_1", name="w")
    assert isinstance(stored, QuantizedTensor) and stored.shape == (2, 3, 64) and stored.data.shape == (2, 3, 40)
    assert stored.name == "w"
    np.testing.assert_array_equal(stored.data.reshape(6, 40), gguf_bytes(values.reshape(6, 64), "Q4_1"))
    assert set(QUANTIZED_TYPES) == set(TYPES)


@pytest.mark.parametrize("values, match", [
    (np.full((1, 32), np.nan, dtype=np.float32), "non-finite"),
    (np.full((1, 32), np.inf, dtype=np.float32), "non-finite"),
    (np.ones((1, 30), dtype=np.float32), "whole number of Q8_0 blocks"),
    (np.float32(1.0), "scalar"),
    (np.full((1, 32), 1e9, dtype=np.float32), "beyond f16's range"),
])
def test_what_a_block_cannot_hold_is_refused_naming_the_tensor(values, match):
    with pytest.raises(ValueError, match=match) as error:
        quantize(values, "Q8_0", name="blocks.0.attn.q_proj.weight")
    assert "blocks.0.attn.q_proj.weight" in str(error.value)


def test_bad_type_names_are_refused():
    with pytest.raises(ValueError, match="type_name must be one of"):
        quantize(np.zeros((1, 32), dtype=np.float32), "F16")
    with pytest.raises(ValueError, match="type_name must be one of"):
        quantize(np.zeros((1, 32), dtype=np.float32), "Q5_K")
    with pytest.raises(TypeError, match="real numbers"):
        quantize(np.array([["a"] * 32]), "Q8_0")


@pytest.mark.parametrize("type_name, scale_bytes", [("Q8_0", (0, 2)), ("Q4_0", (0, 2)), ("Q4_1", (2, 4))])
def test_blocks_with_a_non_finite_scale_are_named(type_name, scale_bytes):
    stored = quantize(np.linspace(-1, 1, 3 * 64, dtype=np.float32).reshape(3, 64), type_name, name="w")
    check_finite_scales(stored)  # a healthy tensor passes
    damaged = stored.data.copy()
    start, stop = scale_bytes
    damaged[1, 20 if type_name == "Q4_1" else (34 if type_name == "Q8_0" else 18):][start:stop] = \
        np.array([np.nan], dtype="<f2").view(np.uint8)  # the second block of row 1
    with pytest.raises(ValueError, match=r"tensor 'w' \(" + type_name + r"\) has 1 block\(s\).*block 3"):
        check_finite_scales(QuantizedTensor(type_name, stored.shape, damaged, "w"))
