"""Float and double from one source (csrc/_common.pxd.tp, the fused type `real`): the template expands
to one C primitive per element type, and every compiled kernel gives, for float32 and float64 alike,
its NumPy reference's result in that dtype."""
import re
from pathlib import Path

import numpy as np
import pytest

from minifm.kernels import activations, adam, attention, cross_entropy, normalization, sampling, softmax
from kernel_helpers import compiled_path, rtol_for

CSRC = Path(__file__).resolve().parents[2] / "csrc"
PRIMITIVES = ("max", "exp_store_sum", "exp_sum", "exp_affine", "sum", "dot", "scale", "shift", "mul_sub",
              "sub_exp_mul")


def test_template_defines_each_primitive_once_and_expands_it_for_both_types():
    template = (CSRC / "_common.pxd.tp").read_text()
    tempita = pytest.importorskip("Cython.Tempita", reason='pip install "Cython>=3" (in the test extra)')
    expanded = tempita.sub(template)
    for name in PRIMITIVES:
        assert len(re.findall(rf"static inline \S+ minifm_{name}_{{{{suffix}}}}\(", template)) == 1, name
        assert re.search(rf"static inline \S+ minifm_{name}_f\(const float\*|static inline \S+ minifm_{name}_f\(float\*",
                         expanded), name
        assert re.search(rf"static inline \S+ minifm_{name}_d\(const double\*|static inline \S+ minifm_{name}_d\(double\*",
                         expanded), name
    generated = CSRC / "_common.pxd"
    if generated.exists():  # the build's expansion is the template's current one
        assert generated.read_text() == expanded


def _cases(rng, dtype):
    """(kernel family, compiled call, reference call) on inputs of `dtype`, reaching every fused primitive."""
    x = (rng.standard_normal((7, 300)) * 4).astype(dtype)
    x[2] = -np.inf
    y = softmax.softmax_reference(x)
    log_y = np.where(np.isfinite(x[:1]), softmax.log_softmax_reference(x[:1]), 0).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    logits = (rng.standard_normal((9, 50)) * 3).astype(dtype)
    targets = rng.integers(0, 50, 9)
    targets[4] = -100
    q = rng.standard_normal((2, 4, 70, 8)).astype(dtype)
    k = rng.standard_normal((2, 2, 70, 8)).astype(dtype)
    v = rng.standard_normal((2, 2, 70, 8)).astype(dtype)
    out, lse = attention.attention_forward_reference(q, k, v, causal=True)
    rows = rng.standard_normal((5, 33)).astype(dtype)
    weight, bias = rng.standard_normal(33).astype(dtype), rng.standard_normal(33).astype(dtype)
    _, xhat, inv_std = normalization.layer_norm_forward_reference(rows, weight, bias)
    scores = (rng.standard_normal((3, 200)) * 2).astype(dtype)
    flat = (rng.standard_normal(1000) * 3).astype(dtype)

    def adam_step(update):
        state = [a.copy() for a in (flat, flat[::-1], np.zeros_like(flat), np.zeros_like(flat))]
        update(*state, 1, 1e-2, 0.9, 0.999, 1e-8, 0.01, True)
        return state[0], state[2], state[3]

    return [
        ("softmax", lambda: softmax.softmax(x), lambda: softmax.softmax_reference(x)),
        ("softmax", lambda: softmax.log_softmax(x), lambda: softmax.log_softmax_reference(x)),
        ("softmax", lambda: softmax.softmax_backward(y, dy), lambda: softmax.softmax_backward_reference(y, dy)),
        ("softmax", lambda: softmax.log_softmax_backward(log_y, dy[:1]),
         lambda: softmax.log_softmax_backward_reference(log_y, dy[:1])),
        ("cross_entropy", lambda: cross_entropy.cross_entropy(logits, targets, label_smoothing=0.1),
         lambda: cross_entropy.cross_entropy_reference(logits, targets, label_smoothing=0.1)),
        ("attention", lambda: attention.attention_forward(q, k, v, causal=True), lambda: (out, lse)),
        ("attention", lambda: attention.attention_backward(q, k, v, out, lse, q, causal=True),
         lambda: attention.attention_backward_reference(q, k, v, out, lse, q, causal=True)),
        ("normalization", lambda: normalization.layer_norm_forward(rows, weight, bias),
         lambda: normalization.layer_norm_forward_reference(rows, weight, bias)),
        ("normalization", lambda: normalization.layer_norm_backward(rows, xhat, inv_std, weight),
         lambda: normalization.layer_norm_backward_reference(rows, xhat, inv_std, weight)),
        ("activations", lambda: activations.gelu(flat), lambda: activations.gelu_reference(flat)),
        ("activations", lambda: activations.gelu_backward(flat, flat), lambda: activations.gelu_backward_reference(flat, flat)),
        ("adam", lambda: adam_step(adam.adam_update), lambda: adam_step(adam.adam_update_reference)),
        ("sampling", lambda: sampling.filter_logits(scores, top_k=20, top_p=0.8),
         lambda: sampling.filter_logits_reference(scores, top_k=20, top_p=0.8)),
    ]


def _as_tuple(result):
    return tuple(r for r in result if r is not None) if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_fused_kernel_matches_its_reference_in_both_dtypes(rng, dtype):
    for family, compiled_call, reference_call in _cases(rng, dtype):
        with compiled_path(family):
            results = _as_tuple(compiled_call())
        expected = _as_tuple(reference_call())
        assert len(results) == len(expected), family
        for got, want in zip(results, expected):
            assert got.dtype == want.dtype == dtype, family
            np.testing.assert_allclose(got, want, rtol=10 * rtol_for(dtype), atol=10 * rtol_for(dtype),
                                       err_msg=family)
