"""decode_step's quantized block step (decode_quantized_layer: the seven projections as Q8_0 / Q4_0 / Q4_1
blocks): compiled == NumPy reference (decode_quantized_layer_reference: every product reference_matmul, i.e.
x @ dequantize(W)^T, on the input rounded to int8 per block of 32 where quantize_input says so) on drawn
shapes, all three formats, each product's input rounding on or off; the same bits on 1, 2 and 3 threads;
bad arguments are named.

Tolerances. Float32 inputs: the compiled step sums in another order than NumPy's BLAS (and rounds Q4_1's
d * q + m once, by a fused multiply-add), so x agrees to 1e-4 of its largest value and the caches to 1e-5
(the same bounds as the float32 step's test). Int8 inputs: the rounding of a product's input to int8 is a
step function, so an input that differs by one float32 rounding between the two paths can land one int8
step (dx = max|block| / 127) away; each such flip moves an output by dx * |w|. The check allows the
float32 bound plus FLIPS such steps of the largest |dx * w| (FLIPS = 2; four times that for x, which sums
two products), and asserts that at most a quarter of x's entries differ by more than the float32 bound."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_helpers import compiled_path
from minifm.kernels import _backend, decode_step
from minifm.kernels.quantized import rounded_input
from minifm.pretrained.quants import FORMATS, quantize

FORMAT_NAMES = ("Q8_0", "Q4_0", "Q4_1")
FLIPS = 2  # int8 steps allowed per output (module docstring)


def _random(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def quantized_layer(rng, width, heads, kv_heads, head_dim, hidden, formats, flags, eps=1e-5):
    """A random block whose projections are stored in `formats` (7 names) with input rounding `flags`."""
    shapes = [(heads * head_dim, width), (kv_heads * head_dim, width), (kv_heads * head_dim, width),
              (width, heads * head_dim), (hidden, width), (hidden, width), (width, hidden)]
    weights = [quantize(_random(rng, *shape), name, projection)
               for shape, name, projection in zip(shapes, formats, decode_step.PROJECTIONS)]
    q, k, v, o, gate, up, down = weights
    return decode_step.QuantizedLayerWeights(1 + _random(rng, width), q, k, v, o, 1 + _random(rng, width), gate, up,
                                             down, eps, heads, tuple(flags))


@st.composite
def layer_cases(draw):
    """A random quantized block (E, H, G, D, F in whole blocks of 32 where a product reads them), caches
    (G, max_length, D), a position < max_length, formats and input roundings drawn per projection."""
    kv_heads = draw(st.integers(1, 3))
    heads = kv_heads * draw(st.integers(1, 3))
    head_dim = draw(st.sampled_from([16, 32])) if heads % 2 == 0 else 32  # H*D (o's input) a multiple of 32
    width, hidden = 32 * draw(st.integers(1, 4)), 32 * draw(st.integers(1, 5))
    length = draw(st.integers(1, 10))
    position = draw(st.integers(0, length - 1))
    one_format = draw(st.sampled_from(FORMAT_NAMES + ("mixed",)))
    formats = [draw(st.sampled_from(FORMAT_NAMES)) if one_format == "mixed" else one_format for _ in range(7)]
    rounding = draw(st.sampled_from(["off", "on", "mixed"]))
    flags = [draw(st.booleans()) if rounding == "mixed" else rounding == "on" for _ in range(7)]
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    layer = quantized_layer(rng, width, heads, kv_heads, head_dim, hidden, formats, flags)
    angles = rng.uniform(-np.pi, np.pi, head_dim // 2)
    return (_random(rng, width, scale=1.0), layer, _random(rng, kv_heads, length, head_dim),
            _random(rng, kv_heads, length, head_dim), position, np.cos(angles).astype(np.float32),
            np.sin(angles).astype(np.float32))


def _reference_and_allowance(x, layer, cache_k, cache_v, position, cos, sin) -> float:
    """Run decode_quantized_layer_reference in place and return the int8 allowance (module docstring):
    FLIPS steps of the largest dx * |w|, dx <= max|input| / 127 over the inputs the step's products saw."""
    inputs = []
    original = decode_step.reference_matmul

    def recording(vector, weight, quantize_input=False):
        inputs.append(float(np.abs(vector).max()))
        return original(vector, weight, quantize_input=quantize_input)

    decode_step.reference_matmul = recording
    try:
        decode_step.decode_quantized_layer_reference(x, layer, cache_k, cache_v, position, cos, sin)
    finally:
        decode_step.reference_matmul = original
    if not any(layer.quantize_input):
        return 0.0
    largest_w = max(np.abs(getattr(layer, name).dequantize()).max() for name in decode_step.PROJECTIONS)
    return FLIPS * largest_w * max(inputs) / 127


@given(case=layer_cases())
@settings(max_examples=60, deadline=None)
def test_decode_quantized_layer_compiled_matches_reference(case):
    x, layer, cache_k, cache_v, position, cos, sin = case
    expected_x, expected_k, expected_v = x.copy(), cache_k.copy(), cache_v.copy()
    allowance = _reference_and_allowance(expected_x, layer, expected_k, expected_v, position, cos, sin)
    with compiled_path("decode_step"):
        assert decode_step.applies_quantized(x, layer, cache_k, cache_v)
        decode_step.decode_quantized_layer(x, layer, cache_k, cache_v, position, cos, sin)
    np.testing.assert_allclose(cache_k, expected_k, rtol=1e-5, atol=1e-5 + allowance)
    np.testing.assert_allclose(cache_v, expected_v, rtol=1e-5, atol=1e-5 + allowance)
    bound = 1e-4 * (1 + np.abs(expected_x).max())
    np.testing.assert_allclose(x, expected_x, rtol=1e-4, atol=bound + 4 * allowance)
    if allowance:
        assert np.mean(np.abs(x - expected_x) > bound + 1e-4 * np.abs(expected_x)) <= 0.25


@given(case=layer_cases())
@settings(max_examples=30, deadline=None)
def test_decode_quantized_layer_gives_the_same_bits_on_one_two_and_three_threads(case):
    x, layer, cache_k, cache_v, position, cos, sin = case
    weights = [getattr(layer, name) for name in decode_step.PROJECTIONS]
    scratch = np.empty(2 * layer.wq.shape[0] + 2 * layer.wk.shape[0] + 2 * layer.wgate.shape[0]
                       + layer.heads * (position + 1), dtype=np.float32)
    results = []
    with compiled_path("decode_step") as kernel:
        for count in (1, 2, 3):
            state = (x.copy(), cache_k.copy(), cache_v.copy())
            kernel.decode_quantized_layer(state[0], layer.norm1, tuple(w.data for w in weights),
                                          tuple(FORMATS[w.type].ggml_type for w in weights), layer.quantize_input,
                                          layer.norm2, state[1], state[2], position, cos, sin, layer.eps,
                                          layer.heads, scratch, threads=count)
            results.append(state)
    for other in results[1:]:
        for one, two in zip(results[0], other):
            np.testing.assert_array_equal(one, two)


def test_bad_arguments_are_named():
    rng = np.random.default_rng(4)
    layer = quantized_layer(rng, 64, 2, 1, 32, 96, ["Q8_0"] * 7, [False] * 7)
    weights = [getattr(layer, name) for name in decode_step.PROJECTIONS]
    datas, types = [w.data for w in weights], [FORMATS[w.type].ggml_type for w in weights]
    x, cache_k, cache_v = _random(rng, 64), _random(rng, 1, 4, 32), _random(rng, 1, 4, 32)
    cos, sin, scratch = _random(rng, 16), _random(rng, 16), np.empty(1000, dtype=np.float32)

    def call(datas=datas, types=types, position=1, heads=2, scratch=scratch):
        with compiled_path("decode_step") as kernel:
            kernel.decode_quantized_layer(x, layer.norm1, tuple(datas), tuple(types), (False,) * 7, layer.norm2,
                                          cache_k, cache_v, position, cos, sin, 1e-5, heads, scratch)

    call()
    with pytest.raises(ValueError, match="wdown"):
        call(datas=datas[:6] + [np.ascontiguousarray(datas[6][:, :-34])])
    with pytest.raises(ValueError, match="wdown"):
        call(datas=datas[:6] + [datas[6][:, ::2]])  # not C-contiguous
    with pytest.raises(ValueError, match="wo"):
        call(types=types[:3] + [3] + types[4:])  # Q8_0 blocks read as Q4_1: rows of the wrong size
    with pytest.raises(ValueError, match="block format"):
        call(types=types[:3] + [0] + types[4:])  # F32 is not a block format
    with pytest.raises(ValueError, match="7 entries"):
        call(datas=datas[:6])
    with pytest.raises(ValueError, match="position"):
        call(position=4)
    with pytest.raises(ValueError, match="scratch"):
        call(scratch=scratch[:10])
    with pytest.raises(ValueError, match="heads"):
        call(heads=0)


@given(case=layer_cases())
@settings(max_examples=20, deadline=None)
def test_reference_is_the_float32_step_on_dequantized_weights_and_rounded_inputs(case):
    """decode_quantized_layer_reference == decode_layer_reference on the dequantized weights when no input is
    rounded; with every input rounded, == the float32 step whose products round their inputs (quantized.
    rounded_input) first, computed here independently."""
    x, layer, cache_k, cache_v, position, cos, sin = case
    dequantized = [getattr(layer, name).dequantize() for name in decode_step.PROJECTIONS]
    q, k, v, o, gate, up, down = dequantized
    float_layer = decode_step.LayerWeights(layer.norm1, q, k, v, o, layer.norm2, gate, up, down, layer.eps, layer.heads)
    expected = x.copy(), cache_k.copy(), cache_v.copy()
    ours = x.copy(), cache_k.copy(), cache_v.copy()
    if any(layer.quantize_input):
        layer = layer._replace(quantize_input=(True,) * 7)
        decode_step._layer_step(expected[0], layer.norm1, layer.norm2, layer.eps, layer.heads,
                                lambda name, vector: getattr(float_layer, name) @ rounded_input(vector[None, :])[0],
                                *expected[1:], position, cos, sin)
    else:
        decode_step.decode_layer_reference(expected[0], float_layer, *expected[1:], position, cos, sin)
    decode_step.decode_quantized_layer_reference(ours[0], layer, *ours[1:], position, cos, sin)
    for mine, theirs in zip(ours, expected):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5 * (1 + np.abs(theirs).max()))


def test_the_dispatch_takes_the_reference_without_the_compiled_module():
    rng = np.random.default_rng(5)
    layer = quantized_layer(rng, 64, 2, 1, 32, 64, ["Q4_1"] * 7, [True, False, True, False, True, False, True])
    x, cache_k, cache_v = _random(rng, 64), _random(rng, 1, 3, 32), _random(rng, 1, 3, 32)
    cos, sin = _random(rng, 16), _random(rng, 16)
    expected = x.copy(), cache_k.copy(), cache_v.copy()
    decode_step.decode_quantized_layer_reference(expected[0], layer, *expected[1:], 2, cos, sin)
    previous = _backend.reference_forced()
    _backend.use_reference(True)
    try:
        assert not decode_step.applies_quantized(x, layer, cache_k, cache_v)
        decode_step.decode_quantized_layer(x, layer, cache_k, cache_v, 2, cos, sin)
    finally:
        _backend.use_reference(previous)
    for ours, theirs in zip((x, cache_k, cache_v), expected):
        np.testing.assert_array_equal(ours, theirs)
