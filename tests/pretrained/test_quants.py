"""quants.py: minifm's dequantization of GGML block formats, against the layouts and against the gguf package.

* hand-built blocks show each layout (which nibble is which element, where d and m sit);
* hypothesis-drawn blocks of random bytes, with f16 scales drawn to include NaN (several payloads),
  +-inf, subnormals and +-0, give exactly the bits of gguf.quants.dequantize, with no warning;
* what non-finite scales give is the IEEE arithmetic the module docstring describes;
* values quantized by gguf.quants.quantize come back as the reference dequantizes them, within the
  format's step of the original;
* BF16 against torch's bfloat16 -> float32 on all 65536 bit patterns;
* unsupported types and malformed data are refused naming the tensor.
(Every tensor of the real SmolLM2 file is compared with the reference in test_gguf.py.)
"""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from oracles import require
from minifm.pretrained import quants
from minifm.pretrained.quants import QuantizedTensor, UnsupportedTensorTypeError

gguf = require("gguf")

QUANTIZED = ("Q8_0", "Q4_0", "Q4_1")
ALL_TYPES = ("F32", "F16", "BF16", *QUANTIZED)

# f16 bit patterns worth drawing on purpose: +-0, the smallest and largest subnormal, the smallest normal,
# 1, the largest finite, +-inf, quiet and signalling NaNs with different payloads and signs.
SPECIAL_F16 = (0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0x7C00, 0xFC00,
               0x7E00, 0xFE00, 0x7C01, 0x7D55, 0xFFFF)


def f16_bits(value: float) -> bytes:
    return np.array([value], dtype="<f2").tobytes()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def reference(data: np.ndarray, type_name: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # the reference warns on inf * 0; the result is what is compared
        return gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name])


def dequantize_quietly(data: np.ndarray, type_name: str) -> np.ndarray:
    """quants.dequantize with every floating-point warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return quants.dequantize(data, type_name)


# ---------------------------------------------------------------------------- the layouts, by hand
def test_q8_0_block_is_scale_then_32_signed_bytes():
    q = np.arange(-16, 16, dtype=np.int8)  # (32,)
    block = np.frombuffer(f16_bits(0.25) + q.tobytes(), dtype=np.uint8)  # 34 bytes
    np.testing.assert_array_equal(quants.dequantize(block, "Q8_0"), 0.25 * q.astype(np.float32))


def test_q4_0_low_nibbles_are_elements_0_to_15_high_nibbles_16_to_31():
    low = np.arange(16, dtype=np.uint8)  # q[0..15] = 0..15
    high = np.arange(15, -1, -1, dtype=np.uint8)  # q[16..31] = 15..0
    block = np.frombuffer(f16_bits(0.5) + (low | (high << 4)).tobytes(), dtype=np.uint8)  # 18 bytes
    expected = 0.5 * (np.concatenate([low, high]).astype(np.float32) - 8)
    np.testing.assert_array_equal(quants.dequantize(block, "Q4_0"), expected)


def test_q4_1_block_is_scale_minimum_then_nibbles():
    low = np.arange(16, dtype=np.uint8)
    high = np.full(16, 15, dtype=np.uint8)
    block = np.frombuffer(f16_bits(2.0) + f16_bits(-3.0) + (low | (high << 4)).tobytes(), dtype=np.uint8)
    expected = 2.0 * np.concatenate([low, high]).astype(np.float32) - 3.0
    np.testing.assert_array_equal(quants.dequantize(block, "Q4_1"), expected)


def test_rows_of_blocks_keep_the_leading_shape():
    rows = np.zeros((3, 2, 2 * 34), dtype=np.uint8)  # (3, 2) rows of two Q8_0 blocks each
    assert quants.dequantize(rows, "Q8_0").shape == (3, 2, 64)


def test_bf16_is_the_top_half_of_a_float32():
    value = np.array([1.0 + 2 ** -7, -3.5, 2 ** -130], dtype=np.float32)  # exact in bfloat16
    top_halves = (value.view(np.uint32) >> 16).astype("<u2")
    np.testing.assert_array_equal(quants.dequantize(top_halves.view(np.uint8), "BF16"), value)


# ---------------------------------------------------------------------------- drawn blocks vs gguf
def f16_scales():
    return st.one_of(st.sampled_from(SPECIAL_F16), st.integers(0, 0xFFFF))


@st.composite
def stored_rows(draw, type_name):
    """uint8 (rows, row_bytes) of random bytes, each block's f16 scale(s) drawn from f16_scales()."""
    fmt = quants.FORMATS[type_name]
    n_rows = draw(st.integers(1, 4))
    blocks_per_row = draw(st.integers(1, 3 if fmt.block_size > 1 else 40))
    n_blocks = n_rows * blocks_per_row
    raw = draw(st.binary(min_size=n_blocks * fmt.block_bytes, max_size=n_blocks * fmt.block_bytes))
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(n_blocks, fmt.block_bytes).copy()
    if type_name in QUANTIZED:
        scale_slots = (0, 2) if type_name == "Q4_1" else (0,)
        for slot in scale_slots:
            scales = np.array(draw(st.lists(f16_scales(), min_size=n_blocks, max_size=n_blocks)), dtype="<u2")
            blocks[:, slot:slot + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(n_rows, blocks_per_row * fmt.block_bytes)


@pytest.mark.parametrize("type_name", ALL_TYPES)
@given(data=st.data())
def test_drawn_blocks_give_the_bits_of_gguf_dequantize(type_name, data):
    rows = data.draw(stored_rows(type_name))
    ours = dequantize_quietly(rows, type_name)
    assert ours.dtype == np.float32 and ours.flags.writeable
    assert same_bits(ours, reference(rows, type_name))


def test_a_tensor_larger_than_one_slice_is_decoded_whole(rng, monkeypatch):
    monkeypatch.setattr(quants, "BLOCKS_PER_SLICE", 7)  # 50 blocks: slices of 7, 7, ..., 1
    rows = rng.integers(0, 256, size=(5, 10 * 20), dtype=np.uint8)
    rows[:, 0::20] = rows[:, 1::20] = rows[:, 2::20] = rows[:, 3::20] = 0x3C  # finite scales
    assert same_bits(quants.dequantize(rows, "Q4_1"), reference(rows, "Q4_1"))


# ---------------------------------------------------------------------------- non-finite and tiny scales
def q8_block(scale_bits: int, q: np.ndarray) -> np.ndarray:
    return np.frombuffer(np.array([scale_bits], "<u2").tobytes() + q.astype(np.int8).tobytes(), dtype=np.uint8)


def test_nan_scale_makes_its_block_nan_and_leaves_the_next_alone():
    q = np.arange(32) - 16
    blocks = np.concatenate([q8_block(0x7E00, q), q8_block(0x3C00, q)])  # NaN scale, then scale 1.0
    values = dequantize_quietly(blocks, "Q8_0")
    assert np.isnan(values[:32]).all()
    np.testing.assert_array_equal(values[32:], q.astype(np.float32))


def test_infinite_scale_gives_signed_infinities_and_nan_where_q_is_zero():
    q = np.arange(32) - 16  # q[16] == 0
    values = dequantize_quietly(q8_block(0x7C00, q), "Q8_0")  # d = +inf
    assert np.isnan(values[16])
    assert (values[:16] == -np.inf).all() and (values[17:] == np.inf).all()


def test_subnormal_scale_is_exact():
    q = np.arange(32) - 16
    values = dequantize_quietly(q8_block(0x0001, q), "Q8_0")  # d = 2**-24, the smallest f16
    np.testing.assert_array_equal(values, q * np.float32(2.0 ** -24))


# ---------------------------------------------------------------------------- round trips through gguf's quantizer
STEP = {  # the format's quantization step for a block's values: the reconstruction error stays within it
    "Q8_0": lambda block: np.abs(block).max() / 127,
    "Q4_0": lambda block: np.abs(block).max() / 8,
    "Q4_1": lambda block: (block.max() - block.min()) / 15,
}


@pytest.mark.parametrize("type_name", QUANTIZED)
@given(values=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=4).map(
    lambda shape: (shape[0], 32 * shape[1])), elements=st.floats(-1e4, 1e4, width=32)))
def test_gguf_quantized_values_come_back_within_one_step(type_name, values):
    qtype = gguf.GGMLQuantizationType[type_name]
    with np.errstate(all="ignore"):  # gguf's Q8_0 quantizer overflows 1 / d on subnormal inputs (d becomes 0)
        stored = gguf.quants.quantize(values, qtype)
    ours = quants.dequantize(stored, type_name)
    assert same_bits(ours, gguf.quants.dequantize(stored, qtype))
    blocks, restored = values.reshape(-1, 32), ours.reshape(-1, 32)  # (n_blocks, 32)
    for block, back in zip(blocks, restored):
        # one step, plus the f16 rounding of the scale and minimum: relative 2**-11 each, or for a
        # subnormal f16 absolute 2**-25, times |q| <= 128
        bound = 1.01 * STEP[type_name](block) + 2.0 ** -10 * np.abs(block).max() + 128 * 2.0 ** -25
        assert np.abs(back - block).max() <= bound


@pytest.mark.parametrize("type_name", ("F16", "BF16"))
@given(values=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 9)),
                         elements=st.floats(-6e4, 6e4, width=32)))
def test_gguf_converted_halves_come_back_as_gguf_reads_them(type_name, values):
    qtype = gguf.GGMLQuantizationType[type_name]
    stored = np.ascontiguousarray(gguf.quants.quantize(values, qtype)).view(np.uint8)
    assert same_bits(quants.dequantize(stored, type_name), gguf.quants.dequantize(stored, qtype))


# ---------------------------------------------------------------------------- BF16 against torch
def test_bf16_matches_torch_on_all_65536_bit_patterns():
    torch = require("torch")
    bits = np.arange(2 ** 16, dtype=np.uint32).astype("<u2")  # every bfloat16, NaNs and subnormals included
    ours = quants.dequantize(bits.view(np.uint8), "BF16")
    theirs = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    assert same_bits(ours, theirs)


# ---------------------------------------------------------------------------- refusals
def test_an_unsupported_type_names_the_tensor_and_the_type():
    with pytest.raises(UnsupportedTensorTypeError, match=r"'blk\.0\.ffn_down\.weight' is stored as Q4_K.*Q4_1"):
        quants.dequantize(np.zeros((1, 144), np.uint8), "Q4_K", name="blk.0.ffn_down.weight")


def test_data_must_be_whole_blocks_of_bytes():
    with pytest.raises(ValueError, match=r"'w'.*shape \(2, 35\).*34 bytes"):
        quants.dequantize(np.zeros((2, 35), np.uint8), "Q8_0", name="w")
    with pytest.raises(TypeError, match=r"'w'.*uint8.*float32"):
        quants.dequantize(np.zeros((2, 34), np.float32), "Q8_0", name="w")


def test_quantized_tensor_checks_its_shape_and_dequantizes_to_it():
    data = np.zeros((3, 2 * 20), np.uint8)  # 3 rows of two Q4_1 blocks
    tensor = QuantizedTensor("Q4_1", (3, 64), data, "w")
    assert tensor.dequantize().shape == (3, 64) and tensor.nbytes == 120
    with pytest.raises(ValueError, match=r"'w'.*\(3, 40\)"):
        QuantizedTensor("Q4_1", (3, 96), data, "w")
    with pytest.raises(ValueError, match=r"'w'.*row of 50 values.*Q4_1"):
        QuantizedTensor("Q4_1", (3, 50), data, "w")
    QuantizedTensor("Q6_K", (1, 256), np.zeros((1, 210), np.uint8), "w")  # kept, though not decodable
