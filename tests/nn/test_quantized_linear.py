"""QuantizedLinear / QuantizedEmbedding (minifm/nn/quantized.py): the forward equals a float Linear holding the
dequantized weight, the input gradient is grad_y @ dequantize(W) (checked against central differences), the
weights are frozen, the block's no-grad fast path runs them, and the packed bytes live in the state dict.

Tolerance of the forward: the quantized kernels multiply float32 inputs by the exactly dequantized float32
weights and differ from a float32 Linear only in the summation order, so |quantized - float| is held to
1e-5 * (|x| @ |W|^T) + 1e-6, a bound of float32 reordering error for these inner sizes.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minifm as mf
from minifm.models import GPT, GPTConfig
from minifm.nn import Embedding, Linear
from minifm.nn.quantized import (
    QuantizedEmbedding, QuantizedLinear, convert_linears, empty_quantized_linears, packed_nbytes,
)
from minifm.kernels.quantized import rounded_input, reference_matmul
from minifm.pretrained.quants import quantize

TYPES = ("Q8_0", "Q4_0", "Q4_1")


def _reorder_bound(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(weight.astype(np.float64)).T) + 1e-6


@st.composite
def linear_cases(draw):
    """(type, x (..., in) float32, float weight (out, in), bias or None)."""
    type_name = draw(st.sampled_from(TYPES))
    in_features = 32 * draw(st.integers(1, 3))
    out_features = draw(st.integers(1, 9))
    leading = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6))
    values = st.floats(-2, 2, width=32)
    x = draw(hnp.arrays(np.float32, (*leading, in_features), elements=values))
    weight = draw(hnp.arrays(np.float32, (out_features, in_features), elements=values))
    bias = draw(st.none() | hnp.arrays(np.float32, (out_features,), elements=values))
    return type_name, x, weight, bias


def _layers(type_name, weight, bias):
    """(QuantizedLinear, float Linear holding its dequantized weight) for one weight."""
    float_layer = Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    float_layer.weight.data = weight
    if bias is not None:
        float_layer.bias.data = bias
    quantized = QuantizedLinear.from_linear(float_layer, type_name)
    reference = Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    reference.weight.data = quantized.dequantized_weight()
    if bias is not None:
        reference.bias.data = bias.copy()
    return quantized, reference


@given(case=linear_cases())
def test_forward_equals_a_linear_of_the_dequantized_weight(case):
    type_name, x, weight, bias = case
    quantized, reference = _layers(type_name, weight, bias)
    ours, theirs = quantized(mf.tensor(x)).data, reference(mf.tensor(x)).data
    assert ours.shape == theirs.shape == (*x.shape[:-1], weight.shape[0]) and ours.dtype == np.float32
    bound = _reorder_bound(x.reshape(-1, x.shape[-1]), reference.weight.data).reshape(ours.shape)
    assert (np.abs(ours - theirs) <= bound).all()
    with mf.no_grad():  # the raw-array entry the block's fast path uses gives the same numbers
        np.testing.assert_array_equal(quantized.forward_array(x), ours)


@given(case=linear_cases())
def test_input_gradient_is_grad_times_dequantized_weight(case):
    type_name, x, weight, bias = case
    quantized, reference = _layers(type_name, weight, bias)
    rng = np.random.default_rng(0)
    upstream = rng.standard_normal((*x.shape[:-1], weight.shape[0])).astype(np.float32)
    inputs = mf.tensor(x, requires_grad=True)
    (quantized(inputs) * mf.tensor(upstream)).sum().backward()
    expected = upstream.reshape(-1, weight.shape[0]).astype(np.float64) @ reference.weight.data.astype(np.float64)
    np.testing.assert_allclose(inputs.grad.reshape(expected.shape), expected, rtol=1e-4, atol=1e-4)


def test_input_gradient_matches_central_differences(rng):
    """d/dx of sum(y * g), y = x W^T + b: central differences (float64 sums of the float32 outputs; the
    map is linear, so a step of 0.5 has no truncation error, only float32 rounding, ~1e-4 here)."""
    weight = (rng.standard_normal((5, 64)) * 0.3).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    quantized, _ = _layers("Q4_1", weight, bias)
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    upstream = rng.standard_normal((2, 3, 5)).astype(np.float32)

    def loss(values):
        return float((quantized(mf.tensor(values)).data.astype(np.float64) * upstream).sum())

    inputs = mf.tensor(x, requires_grad=True)
    (quantized(inputs) * mf.tensor(upstream)).sum().backward()
    numeric = np.zeros(x.shape)
    step = 0.5
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (loss(plus) - loss(minus)) / (2 * step)
    np.testing.assert_allclose(inputs.grad, numeric, rtol=1e-3, atol=1e-4)


def test_bias_gradient_when_the_bias_is_trainable(rng):
    weight = rng.standard_normal((4, 32)).astype(np.float32)
    quantized, _ = _layers("Q8_0", weight, np.zeros(4, np.float32))
    quantized.bias.requires_grad = True
    out = quantized(mf.tensor(rng.standard_normal((3, 32)).astype(np.float32)))
    out.sum().backward()
    np.testing.assert_array_equal(quantized.bias.grad, np.full(4, 3.0, np.float32))


def test_a_lora_style_branch_trains_through_a_frozen_quantized_layer(rng):
    """QLoRA's shape: y = Q(x) + x A^T B^T with A, B float32 Parameters; the gradient reaches A and B and
    nothing is asked of the packed weight."""
    weight = rng.standard_normal((8, 32)).astype(np.float32)
    quantized, _ = _layers("Q4_0", weight, None)
    a = mf.nn.Parameter(rng.standard_normal((2, 32)).astype(np.float32) * 0.1)
    b = mf.nn.Parameter(rng.standard_normal((8, 2)).astype(np.float32) * 0.1)
    x = mf.tensor(rng.standard_normal((4, 32)).astype(np.float32))
    base = mf.tensor(rng.standard_normal((4, 32)).astype(np.float32), requires_grad=True)
    y = quantized(x + base) + (x @ a.T) @ b.T
    (y * y).sum().backward()
    assert a.grad is not None and b.grad is not None and base.grad is not None
    assert list(quantized.parameters()) == [] and "weight" in quantized.state_dict()


def test_training_the_packed_weight_is_refused():
    layer = QuantizedLinear(32, 4, bias=True, weight_type="q8_0")
    with pytest.raises(RuntimeError, match="frozen Q8_0 weights.*dtype='float32'"):
        layer.requires_grad_(True)
    layer.requires_grad_(False)  # freezing is fine
    assert not layer.bias.requires_grad
    with pytest.raises(RuntimeError, match="frozen"):
        QuantizedEmbedding(10, 32).requires_grad_()


def test_float64_inputs_and_wrong_widths_are_clear_errors():
    layer = QuantizedLinear(32, 4, bias=False, weight_type="q4_1")
    with pytest.raises(TypeError, match="must be float32"):
        layer(mf.tensor(np.zeros((2, 32), np.float64)))
    with pytest.raises(ValueError, match="does not match in_features 32"):
        layer(mf.tensor(np.zeros((2, 33), np.float32)))
    with pytest.raises(ValueError, match="weight_type must be one of"):
        QuantizedLinear(32, 4, weight_type="q5_k")
    with pytest.raises(ValueError, match="uint8 blocks of shape"):
        QuantizedLinear(32, 4, weight_type="q8_0", data=np.zeros((4, 33), np.uint8))


@pytest.mark.parametrize("type_name", TYPES)
def test_embedding_rows_and_tied_head_use_the_dequantized_table(type_name, rng):
    table = rng.standard_normal((11, 64)).astype(np.float32)
    float_embedding = Embedding(11, 64)
    float_embedding.weight.data = table
    embedding = QuantizedEmbedding.from_embedding(float_embedding, type_name)
    values = quantize(table, type_name).dequantize()
    ids = np.array([[3, 0, 10], [3, 3, 1]])
    np.testing.assert_array_equal(embedding(ids).data, values[ids])
    hidden = rng.standard_normal((2, 3, 64)).astype(np.float32)
    logits = embedding.logits(mf.tensor(hidden)).data
    assert (np.abs(logits - hidden @ values.T) <= _reorder_bound(hidden.reshape(6, 64), values).reshape(2, 3, 11)).all()
    np.testing.assert_array_equal(embedding.to_embedding().weight.data, values)
    with pytest.raises(IndexError, match=r"\[0, 11\)"):
        embedding(np.array([11]))


def test_packed_bytes_are_the_state_dict_and_round_trip_through_load_state_dict(rng):
    linear = Linear(64, 6)
    linear.weight.data = rng.standard_normal((6, 64)).astype(np.float32)
    layer = QuantizedLinear.from_linear(linear, "q4_1")
    state = layer.state_dict()
    assert state["weight"].dtype == np.uint8 and state["weight"].shape == (6, 2 * 20)
    assert packed_nbytes(layer) == 6 * 40
    fresh = QuantizedLinear(64, 6, bias=True, weight_type="q4_1")
    fresh.load_state_dict(state)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_array_equal(fresh(mf.tensor(x)).data, layer(mf.tensor(x)).data)


def test_convert_linears_both_ways(rng):
    model = mf.nn.Sequential(Linear(32, 64), Linear(64, 32, bias=False))
    x = rng.standard_normal((3, 32)).astype(np.float32)
    assert convert_linears(model, "q8_0") == ["0", "1"]
    assert all(type(layer) is QuantizedLinear and layer.weight_type == "Q8_0" for layer in model)
    first = model(mf.tensor(x)).data
    assert convert_linears(model, "q8_0") == []  # already in that format: the blocks stay
    assert convert_linears(model, "q4_0") == ["0", "1"]  # requantized from the Q8_0 values
    convert_linears(model, None)
    assert all(type(layer) is Linear for layer in model)
    assert empty_quantized_linears(model, "q4_1") == ["0", "1"]
    assert not model[0].weight.any()
    assert first.shape == (3, 32)


@pytest.mark.parametrize("weight_dtype", ["q8_0", "q4_1"])
def test_the_block_fast_path_runs_quantized_projections(weight_dtype, rng):
    """A Llama-shaped GPT with quantized Linear weights and a quantized tied embedding: the no-grad fast
    path (q/k/v and gate/up each one quantized_products call) equals the recorded general path, with and
    without the KV cache."""
    config = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, mlp="swiglu",
                       pos="rope", norm="rmsnorm", bias=False, mlp_hidden=96, weight_dtype=weight_dtype,
                       embedding_dtype=weight_dtype)
    model = GPT(config)
    assert isinstance(model.wte, QuantizedEmbedding)
    ids = rng.integers(0, 40, size=(2, 9))
    recorded = model(ids).data  # graph recording on: the general path
    with mf.no_grad():
        assert model.blocks[0]._can_run_inference_path(mf.Tensor(np.zeros((1, 1, 64), np.float32)))
        fast = model(ids).data
        cache = model.make_cache(2)
        steps = [model(ids[:, :5], cache=cache).data[:, -1]]
        steps += [model(ids[:, t:t + 1], cache=cache).data[:, -1] for t in range(5, 9)]
    np.testing.assert_allclose(fast, recorded, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack(steps, 1), recorded[:, 4:9], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ int8 activations (llama.cpp's products)
@given(case=linear_cases())
def test_int8_activations_compute_the_rounded_input_product(case):
    """With quantize_input the layer computes reference_matmul(x, W, quantize_input=True): the input rounded
    to int8 per block of 32, times the dequantized weight, within the float32 reordering bound; the rounding
    itself moves each output by at most sum over blocks of dx / 2 * sum |w| (dx = max |x_block| / 127)."""
    type_name, x, weight, bias = case
    quantized, reference = _layers(type_name, weight, bias)
    quantized.quantize_input = True
    rows = x.reshape(-1, x.shape[-1])  # (N, in)
    ours = quantized(mf.tensor(x)).data.reshape(rows.shape[0], -1)  # (N, out)
    expected = reference_matmul(rows, quantized.quantized_weight, quantize_input=True)  # (N, out)
    if bias is not None:
        expected = expected + bias
    rounded = rounded_input(rows)  # (N, in): what the kernel multiplies
    assert (np.abs(ours - expected) <= _reorder_bound(rounded, reference.weight.data)).all()
    blocks = np.abs(rows.astype(np.float64)).reshape(rows.shape[0], -1, 32).max(axis=-1) / 127  # (N, in / 32)
    weight_sums = np.abs(reference.weight.data.astype(np.float64)).reshape(weight.shape[0], -1, 32).sum(-1)
    rounding_bound = blocks / 2 @ weight_sums.T  # (N, out)
    exact = reference(mf.tensor(x)).data.reshape(rows.shape[0], -1)
    assert (np.abs(ours - exact) <= rounding_bound + _reorder_bound(rows, reference.weight.data)).all()
    with mf.no_grad():
        np.testing.assert_array_equal(quantized.forward_array(x).reshape(ours.shape), ours)


def test_int8_activations_on_a_gpt_fast_path_equal_the_general_path_and_switch_off_again(rng):
    config = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, mlp="swiglu",
                       pos="rope", norm="rmsnorm", bias=False, mlp_hidden=96, weight_dtype="q4_1",
                       embedding_dtype="q8_0", int8_activations=True)
    model = GPT(config)
    layers = [m for m in model.modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))]
    assert len(layers) == 2 * 7 + 1 and all(layer.quantize_input for layer in layers)
    ids = rng.integers(0, 40, size=(2, 9))
    recorded = model(ids).data  # the general (autograd) path
    with mf.no_grad():
        fast = model(ids).data  # the block's raw-array path: q/k/v and gate/up in one call each
    np.testing.assert_allclose(fast, recorded, rtol=1e-5, atol=1e-5)
    model.use_int8_activations(False)
    exact = model(ids).data
    assert not any(layer.quantize_input for layer in layers) and not model.config.int8_activations
    assert 0 < np.abs(exact - recorded).max() < 0.05 * np.abs(exact).max()  # rounding moved them, a little
    model.use_int8_activations(True)
    np.testing.assert_array_equal(model(ids).data, recorded)
    model.convert_weights("q8_0")  # the new Q8_0 layers keep the model's setting
    assert all(m.quantize_input for m in model.modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding)))
    model.convert_weights("float32")
    assert model.config.int8_activations is False


def test_int8_activations_need_quantized_weights():
    with pytest.raises(ValueError, match="int8_activations=True .* needs weight_dtype or embedding_dtype"):
        GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=32, int8_activations=True)
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(ValueError, match=r"use_int8_activations\(True\) .* no quantized weights"):
        model.use_int8_activations()
