"""quantized kernels (x @ W^T with W in GGUF Q8_0 / Q4_0 / Q4_1 blocks): compiled == NumPy reference on drawn
shapes and drawn raw blocks (every finite f16 scale, subnormal to 65504), with float32 inputs and with inputs
rounded to 8 bits per block (quantize_input=True); both paths == the product with `gguf.quants.dequantize`;
the same bits on one and two threads and alone or together; the forced reference path; bad arguments named.

Tolerance (`_tolerance`): the kernels and the reference both sum K float32 products, in different orders
(the fused kernel: 32 partial sums per block position, added pairwise; the reference: BLAS). Any order of
a float32 sum of K terms is within gamma_K = K u / (1 - K u) (u = 2^-24) times sum_k |x_k w_k| of the
exact sum, so two orders differ by at most 2 gamma_K sum_k |x_k w_k|. Q4_1 adds one rounding: the kernels
compute d q + m with one fused multiply-add where dequantize rounds d q first, an error of at most
u |d q| per weight, so Q4_1's sum uses |d q| + |m| in place of |w|. With quantize_input the kernel sums
d dx sum(q xq) and subtracts 8 d dx sum(xq) (Q4_0) or adds m dx sum(xq) (Q4_1) per block, two sums that
may cancel, so the magnitudes are |d| (|q| + 8) (Q4_0) and |d q| + |m| (Q4_1) times |xq dx|, and K + 4
roundings (the products d dx, the block sums). The bound is computed per output in float64; a wrong
nibble order, block offset or scale would miss by a relative O(1), not O(K u).

quantize_input's own effect (reference with rounded x vs reference with x) is bounded by how far the
rounding moves x: at most dx / 2 per value, so sum_b dx_b / 2 * sum_(k in b) |w_k| per output.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_helpers import compiled_path
from minifm.kernels import _backend, quantized, threads
from minifm.pretrained.quants import FORMATS, QuantizedTensor, dequantize

TYPES = ("Q8_0", "Q4_0", "Q4_1")
U = 2.0 ** -24  # float32's unit roundoff


def _random_blocks(rng, type_name, rows, width, finite=True):
    """Random stored rows (rows, width) in `type_name`: random quant bytes and f16 scales drawn
    uniformly over the bit patterns (every exponent: zero, subnormal, 6e-8 .. 65504, either sign)."""
    fmt = FORMATS[type_name]
    blocks = rng.integers(0, 256, size=(rows, width // 32, fmt.block_bytes), dtype=np.uint8)
    scale_count = 2 if type_name == "Q4_1" else 1  # d, and m for Q4_1
    bits = rng.integers(0, 0x7C00 if finite else 0x10000, size=(rows, width // 32, scale_count), dtype=np.uint16)
    bits |= rng.integers(0, 2, size=bits.shape, dtype=np.uint16) << 15  # sign
    blocks[:, :, :2 * scale_count] = bits.view(np.uint8).reshape(rows, width // 32, 2 * scale_count)
    return QuantizedTensor(type_name, (rows, width), blocks.reshape(rows, -1))


def _magnitude(weight: QuantizedTensor) -> np.ndarray:
    """Per weight (float64): |w|, |d| (|q| + 8) for Q4_0, |d q| + |m| for Q4_1 (see the module docstring)."""
    if weight.type == "Q8_0":
        return np.abs(weight.dequantize().astype(np.float64))
    offset = 2 if weight.type == "Q4_0" else 4
    blocks = weight.data.reshape(weight.shape[0], -1, FORMATS[weight.type].block_bytes)  # (N, K / 32, bytes)
    d = blocks[..., 0:2].copy().view("<f2").astype(np.float64)  # (N, K / 32, 1)
    nibbles = blocks[..., offset:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float64)  # (N, K / 32, 32)
    if weight.type == "Q4_0":
        return (np.abs(d) * (q + 8)).reshape(weight.shape)
    m = blocks[..., 2:4].copy().view("<f2").astype(np.float64)
    return (np.abs(d * q) + np.abs(m)).reshape(weight.shape)


def _tolerance(x, weight):
    """Per-output bound (M, N) on |kernel - reference| (module docstring), plus the smallest subnormal."""
    terms = x.shape[1] + 4
    gamma = terms * U / (1 - terms * U)
    return 2 * gamma * (np.abs(x.astype(np.float64)) @ _magnitude(weight).T) + 1e-45


def _assert_within(ours, truth, bound):
    assert ours.dtype == np.float32 and ours.shape == truth.shape and ours.flags.c_contiguous
    gap = np.abs(ours.astype(np.float64) - truth.astype(np.float64))
    assert np.all(gap <= bound), f"worst gap {gap.max()} vs bound {bound.flat[np.argmax(gap - bound)]}"


def _assert_close(ours, truth, x, weight):
    _assert_within(ours, truth, _tolerance(x, weight))


def _rounded(x):
    """x rounded as quantize_input rounds it: xq * dx (float32)."""
    xq, dx = quantized.quantize_input_q8(x)
    return (xq.reshape(*dx.shape, 32) * dx[..., None]).astype(np.float32).reshape(x.shape)


@st.composite
def product_cases(draw):
    """(x (M, K), [W_i (N_i, K)]): M 1..9 (the fused kernel up to MAX_ROWS, the tiled one above), K a multiple
    of 32 up to 640 or 1024..1088, 1-3 weights of 1..70 rows each in a drawn type, x scaled by 1e-3..1e3."""
    rows = draw(st.integers(1, 9))
    width = 32 * draw(st.integers(1, 20) | st.integers(32, 34))
    types = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3))
    sizes = [draw(st.integers(1, 70)) for _ in types]
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    scale = 10.0 ** draw(st.integers(-3, 3))
    x = (rng.standard_normal((rows, width)) * scale).astype(np.float32)
    weights = [_random_blocks(rng, type_name, size, width) for type_name, size in zip(types, sizes)]
    return x, weights


@given(case=product_cases())
def test_compiled_matches_reference(case):
    x, weights = case
    expected = [quantized.reference_matmul(x, weight) for weight in weights]
    with compiled_path("quantized"):
        together = quantized.quantized_products(x, weights)
        alone = [quantized.quantized_matmul(x, weight) for weight in weights]
    for ours, single, truth, weight in zip(together, alone, expected, weights):
        _assert_close(ours, truth, x, weight)
        np.testing.assert_array_equal(ours, single)  # a weight's result does not depend on its companions


@given(case=product_cases())
def test_compiled_matches_reference_with_quantized_input(case):
    x, weights = case
    expected = [quantized.reference_matmul(x, weight, quantize_input=True) for weight in weights]
    with compiled_path("quantized"):
        together = quantized.quantized_products(x, weights, quantize_input=True)
        alone = [quantized.quantized_matmul(x, weight, quantize_input=True) for weight in weights]
    rounded = _rounded(x)
    for ours, single, truth, weight in zip(together, alone, expected, weights):
        _assert_close(ours, truth, rounded, weight)
        np.testing.assert_array_equal(ours, single)


@given(case=product_cases())
def test_quantized_input_moves_the_product_by_at_most_its_rounding(case):
    """Reference with rounded x vs reference with x: within sum_b dx_b / 2 * sum |w| (plus float rounding)."""
    x, weights = case
    xq, dx = quantized.quantize_input_q8(x)
    assert xq.dtype == np.int8 and np.abs(xq.astype(np.int32)).max() <= 127
    steps = np.repeat(dx.astype(np.float64), 32, axis=1)  # (M, K): dx of each value's block
    assert np.all(np.abs(_rounded(x).astype(np.float64) - x) <= steps * (0.5 + 1e-6))
    for weight in weights:
        bound = (steps / 2) @ np.abs(weight.dequantize().astype(np.float64)).T  # (M, N)
        bound += _tolerance(x, weight) + _tolerance(_rounded(x), weight)
        _assert_within(quantized.reference_matmul(x, weight, quantize_input=True),
                       quantized.reference_matmul(x, weight), bound)


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("rows", [1, 3, 7])
def test_matches_gguf_dequantize_product(type_name, rows, kernel_path, rng):
    """Weights quantized by the gguf package from float32 values; the product with gguf's own dequantization."""
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as gguf_dequantize, quantize as gguf_quantize

    ggml_type = gguf.GGMLQuantizationType[type_name]
    values = rng.standard_normal((96, 576)).astype(np.float32)  # (N, K)
    weight = QuantizedTensor(type_name, values.shape, gguf_quantize(values, ggml_type))
    np.testing.assert_array_equal(weight.dequantize(), gguf_dequantize(weight.data, ggml_type))
    x = rng.standard_normal((rows, 576)).astype(np.float32)
    theirs = x @ gguf_dequantize(weight.data, ggml_type).T  # (M, N)
    _assert_close(quantized.quantized_matmul(x, weight), theirs, x, weight)


@pytest.mark.parametrize("quantize_input", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 4, 12])
def test_same_bits_on_any_thread_count_and_alone_or_together(rows, quantize_input, rng):
    """Packed weights above PARALLEL_BYTES, so two threads split them (rows <= MAX_ROWS: the fused kernel;
    12 rows: the tiled one, whose tiles the two threads share); 193 rows leave a short last tile."""
    x = rng.standard_normal((rows, 576)).astype(np.float32)
    weights = [_random_blocks(rng, type_name, size, 576) for type_name, size in
               (("Q8_0", 384), ("Q4_0", 193), ("Q4_1", 200))]
    assert sum(weight.nbytes for weight in weights) >= quantized.PARALLEL_BYTES
    previous = threads.num_threads()
    runs = []  # one list of outputs per (thread count, together or alone)
    try:
        with compiled_path("quantized"):
            for count in (1, 2):
                threads.set_num_threads(count)
                runs.append(quantized.quantized_products(x, weights, quantize_input=quantize_input))
                runs.append([quantized.quantized_matmul(x, weight, quantize_input=quantize_input)
                             for weight in weights])
    finally:
        threads.set_num_threads(previous)
    for run in runs[1:]:
        for ours, first in zip(run, runs[0]):
            np.testing.assert_array_equal(ours, first)


@pytest.mark.parametrize("type_name", TYPES)
def test_non_finite_scales_give_non_finite_outputs(type_name, kernel_path, rng):
    """A damaged block (inf or NaN scale) makes its outputs non-finite on both paths, never a quiet number."""
    weight = _random_blocks(rng, type_name, 8, 64)
    data = weight.data.copy()
    data[3, 0:2] = np.array([np.inf], dtype="<f2").view(np.uint8)
    data[5, 0:2] = np.array([np.nan], dtype="<f2").view(np.uint8)
    weight = QuantizedTensor(type_name, weight.shape, data)
    for rows in (2, 6):  # the fused kernel and the tiled one
        for quantize_input in (False, True):
            x = rng.standard_normal((rows, 64)).astype(np.float32)
            result = quantized.quantized_matmul(x, weight, quantize_input=quantize_input)
            assert not np.isfinite(result[:, [3, 5]]).any()
            assert np.isfinite(result[:, [0, 1, 2, 4, 6, 7]]).all()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("quantize_input", [False, True])
def test_non_finite_inputs_give_non_finite_outputs(bad, quantize_input, kernel_path, rng):
    """An inf or NaN in x never comes out as a finite number (rounding x to 8 bits must not hide it)."""
    weight = _random_blocks(rng, "Q4_1", 8, 64)
    for rows in (3, 6):
        x = rng.standard_normal((rows, 64)).astype(np.float32)
        x[1, 40] = bad
        result = quantized.quantized_matmul(x, weight, quantize_input=quantize_input)
        assert not np.isfinite(result[1]).any()
        assert np.isfinite(np.delete(result, 1, axis=0)).all()


def test_forced_reference_is_the_reference(rng):
    """With the kernels forced to NumPy every product is reference_matmul's, bit for bit."""
    x = rng.standard_normal((2, 64)).astype(np.float32)
    weights = [_random_blocks(rng, type_name, 10, 64) for type_name in TYPES]
    previous = _backend.reference_forced()
    _backend.use_reference(True)
    try:
        assert quantized._compiled_applies(x, weights) is False
        for ours, weight in zip(quantized.quantized_products(x, weights), weights):
            np.testing.assert_array_equal(ours, quantized.reference_matmul(x, weight))
    finally:
        _backend.use_reference(previous)


@pytest.mark.parametrize("type_name", ["F32", "F16"])
def test_float_stored_weights(type_name, kernel_path, rng):
    values = rng.standard_normal((24, 40)).astype(np.float32)  # (N, K): no block size for float types
    stored = values if type_name == "F32" else values.astype(np.float16)
    weight = QuantizedTensor(type_name, values.shape, np.ascontiguousarray(stored).view(np.uint8))
    x = rng.standard_normal((3, 40)).astype(np.float32)
    np.testing.assert_allclose(quantized.quantized_matmul(x, weight), x @ stored.astype(np.float32).T,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [2, 6])
def test_read_only_weights_and_strided_input(rows, kernel_path, rng):
    """Weights as a GGUF reader gives them (read-only views of a mapped file) and x a strided view."""
    weight = _random_blocks(rng, "Q4_1", 40, 96)
    data = weight.data.copy()
    data.flags.writeable = False
    read_only = QuantizedTensor("Q4_1", weight.shape, data)
    wide = rng.standard_normal((rows, 192)).astype(np.float32)
    x = wide[:, ::2]  # (rows, 96), not contiguous
    ours = quantized.quantized_matmul(x, read_only)
    _assert_close(ours, quantized.reference_matmul(np.ascontiguousarray(x), weight), x, weight)


def test_empty_input_rows(kernel_path, rng):
    weight = _random_blocks(rng, "Q8_0", 5, 64)
    assert quantized.quantized_matmul(np.zeros((0, 64), np.float32), weight).shape == (0, 5)


def test_portable_f16_conversion_is_exact():
    """The f16 -> float32 conversion the kernels use on machines without F16C, on all 65536 bit patterns."""
    with compiled_path("quantized") as module:
        bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
        ours = np.array([module.f16_bits_to_float(int(b)) for b in bits], dtype=np.float32)
    theirs = bits.view("<f2").astype(np.float32)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    finite = ~np.isnan(theirs)
    np.testing.assert_array_equal(ours[finite].view(np.uint32), theirs[finite].view(np.uint32))


def test_bad_arguments_are_named(rng):
    weight = _random_blocks(rng, "Q4_0", 4, 64)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    with pytest.raises(TypeError, match="x must be float32.*float64"):
        quantized.quantized_matmul(x.astype(np.float64), weight)
    with pytest.raises(TypeError, match="x must be a numpy array.*list"):
        quantized.quantized_matmul(x.tolist(), weight)
    with pytest.raises(ValueError, match=r"x must be 2-D.*\(64,\)"):
        quantized.quantized_matmul(x[0], weight)
    with pytest.raises(ValueError, match=r"weight .* logical shape \(N, 96\).*\(4, 64\)"):
        quantized.quantized_matmul(rng.standard_normal((2, 96)).astype(np.float32), weight)
    with pytest.raises(TypeError, match="weight must be a QuantizedTensor, got ndarray"):
        quantized.quantized_matmul(x, weight.dequantize())
    with pytest.raises(TypeError, match=r"weights\[1\] .* stored as Q5_0"):
        quantized.quantized_products(x, [weight, QuantizedTensor("Q5_0", (4, 64), np.zeros((4, 44), np.uint8))])
    with pytest.raises(TypeError, match="stored as BF16"):
        quantized.quantized_matmul(x, QuantizedTensor("BF16", (4, 64), np.zeros((4, 128), np.uint8)))
    with pytest.raises(ValueError, match=r"whole blocks of 32 values.*\(2, 40\)"):
        quantized.quantized_matmul(rng.standard_normal((2, 40)).astype(np.float32),
                                   QuantizedTensor("F32", (3, 40), np.zeros((3, 160), np.uint8)), quantize_input=True)
    with pytest.raises(ValueError, match=r"logical shape \(N, 64\).*\(2, 4, 64\)"):
        quantized.quantized_matmul(x, QuantizedTensor("Q4_0", (2, 4, 64), np.zeros((2, 4, 36), np.uint8)))


def test_compiled_entry_points_check_their_arguments(rng):
    weight = _random_blocks(rng, "Q8_0", 4, 64)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    with compiled_path("quantized") as module:
        out = np.empty((2, 4), np.float32)
        with pytest.raises(ValueError, match="GGML type 9"):
            module.decode_products(x, (weight.data,), (9,), (out,), 0)
        with pytest.raises(ValueError, match=r"outs\[0\] has shape \(2, 3\)"):
            module.decode_products(x, (weight.data,), (8,), (np.empty((2, 3), np.float32),), 0)
        with pytest.raises(ValueError, match="do not hold 96 values"):
            module.prefill_product(rng.standard_normal((6, 96)).astype(np.float32), weight.data, 8,
                                   np.empty((6, 4), np.float32))


@given(rows=st.integers(1, 6), blocks=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       special=st.sampled_from(["none", "inf", "nan", "zero block", "tiny", "vanishing"]))
def test_compiled_input_rounding_has_rounded_inputs_bits(rows, blocks, seed, special):
    """round_input (prefill's int8 activations, compiled) == rounded_input bit for bit, NaN where it has NaN."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, 32 * blocks)) * rng.choice([1e-3, 1.0, 300.0])).astype(np.float32)
    row, column = rng.integers(rows), rng.integers(32 * blocks)
    if special == "inf":
        x[row, column] = -np.inf
    elif special == "nan":
        x[row, column] = np.nan
    elif special == "zero block":
        x[row, column // 32 * 32:column // 32 * 32 + 32] = 0
    elif special == "tiny":
        x[row] *= np.float32(1e-25)  # small inputs, still above MIN_AMAX
    elif special == "vanishing":
        x[row] *= np.float32(1e-39)  # below MIN_AMAX (and below 127 / FLT_MAX, where 127 / max would overflow)
    expected = quantized.rounded_input(x)  # (M, K)
    with compiled_path("quantized") as module:
        ours = np.empty_like(x)
        module.round_input(x, ours)
    assert np.array_equal(np.isnan(ours), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(ours[finite].view(np.uint32), expected[finite].view(np.uint32))
    if special == "vanishing":  # such blocks round to zeros, never to inf or NaN
        assert not np.any(expected[row]) and np.all(np.isfinite(expected[row]))
