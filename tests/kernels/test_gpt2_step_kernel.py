"""gpt2_step kernel (one decoding step of a GPT-2-style block): compiled == NumPy reference (outputs and the
cache slot it writes) on drawn sizes: batch 1-16, widths and head sizes that leave tails in the products,
biases present or None, exact or tanh GELU, any cache position; the same bits on one and two threads;
slots other than `position` untouched; bad arguments named."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_helpers import compiled_path
from minifm.kernels import gpt2_step, threads


def _case(rng, batch, heads, head_dim, hidden, length, position, biases, tanh_gelu):
    width = heads * head_dim

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vector(size, scale=0.1, offset=0.0):
        return (offset + scale * rng.standard_normal(size)).astype(np.float32)

    def bias(size):
        return vector(size) if biases else None

    weights = (vector(width, 0.2, 1.0), bias(width), 1e-5, matrix(width, width), bias(width), matrix(width, width),
               bias(width), matrix(width, width), bias(width), matrix(width, width), bias(width),
               vector(width, 0.2, 1.0), bias(width), 1e-5, matrix(hidden, width), bias(hidden), matrix(width, hidden),
               bias(width), tanh_gelu)
    x = rng.standard_normal((batch, width)).astype(np.float32)
    keys = rng.standard_normal((batch, heads, length, head_dim)).astype(np.float32)
    values = rng.standard_normal((batch, heads, length, head_dim)).astype(np.float32)
    return x, weights, keys, values, position


@st.composite
def step_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    length = draw(st.integers(1, 40))
    return _case(rng, batch=draw(st.integers(1, gpt2_step.MAX_BATCH)), heads=draw(st.integers(1, 4)),
                 head_dim=draw(st.sampled_from([1, 3, 8, 13, 16])), hidden=draw(st.integers(1, 70)), length=length,
                 position=draw(st.integers(0, length - 1)), biases=draw(st.booleans()), tanh_gelu=draw(st.booleans()))


@settings(max_examples=60, deadline=None)
@given(case=step_cases())
def test_compiled_matches_reference(case):
    x, weights, keys, values, position = case
    x_ref, keys_ref, values_ref = x.copy(), keys.copy(), values.copy()
    gpt2_step.gpt2_layer_reference(x_ref, weights, keys_ref, values_ref, position)
    with compiled_path("gpt2_step"):
        gpt2_step.gpt2_layer(x, weights, keys, values, position)
    scale = max(1.0, float(np.abs(x_ref).max()))
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(keys, keys_ref, rtol=0, atol=2e-5 * max(1.0, float(np.abs(keys_ref).max())))
    np.testing.assert_allclose(values, values_ref, rtol=0, atol=2e-5 * max(1.0, float(np.abs(values_ref).max())))
    untouched = np.ones(keys.shape[2], bool)
    untouched[position] = False
    np.testing.assert_array_equal(keys[:, :, untouched], keys_ref[:, :, untouched])  # both kept the old slots


def test_same_bits_on_one_and_two_threads(rng):
    """Sizes above PARALLEL_BYTES, so two threads split the products and the attention pairs."""
    case = _case(rng, batch=8, heads=8, head_dim=32, hidden=1024, length=50, position=31, biases=True,
                 tanh_gelu=False)
    x, weights, keys, values, position = case
    previous = threads.num_threads()
    results = []
    try:
        with compiled_path("gpt2_step"):
            for count in (1, 2):
                threads.set_num_threads(count)
                x_run, keys_run, values_run = x.copy(), keys.copy(), values.copy()
                gpt2_step.gpt2_layer(x_run, weights, keys_run, values_run, position)
                results.append((x_run, keys_run, values_run))
    finally:
        threads.set_num_threads(previous)
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)


def test_bad_arguments_are_named(rng):
    x, weights, keys, values, _ = _case(rng, batch=2, heads=2, head_dim=8, hidden=20, length=5, position=0,
                                        biases=True, tanh_gelu=False)
    with compiled_path("gpt2_step") as kernel:
        with pytest.raises(ValueError, match="position 5 outside the cache's 5 slots"):
            kernel.gpt2_layer(x, weights, keys, values, 5, 1)
        with pytest.raises(ValueError, match="weights do not fit x"):
            kernel.gpt2_layer(np.zeros((2, 8), np.float32), weights, np.ascontiguousarray(keys[:, :1]),
                              np.ascontiguousarray(values[:, :1]), 0, 1)
        with pytest.raises(ValueError, match=r"keys .* values .* do not fit x"):
            kernel.gpt2_layer(x, weights, keys, values[:1], 0, 1)
