"""Matrix products with weights kept in GGUF block formats (Q8_0, Q4_0, Q4_1): NumPy reference + dispatch.

Compiled twin: csrc/quantized.pyx (module minifm.kernels._quantized).

The math, for x (M, K) float32 and a weight W of logical shape (N, K) stored as blocks (see
minifm/pretrained/quants.py for the block layouts):

    out = x @ dequantize(W)^T          out[m, n] = sum_k x[m, k] * W[n, k]            (M, N)

`reference_matmul` is that definition, written out: dequantize the whole weight to float32, then one
BLAS product. It is the oracle the tests compare the compiled kernels against.

With `quantize_input=True` the input is first rounded to 8 bits per block of 32 values, as llama.cpp
does for its CPU dot products (its "Q8_0 activations"), and the product is that of the rounded x:

    amax = max |x[m, 32b : 32b + 32]|,   dx = amax / 127,   xq = rint(x * (127 / amax))  in -127..127
    out = (xq * dx) @ dequantize(W)^T                                   (`quantize_input_q8` + the above)

The compiled decoding kernel then multiplies 8-bit weights (or 4-bit) with 8-bit inputs in integer
arithmetic (exact) and scales each block's sum once: about 2x faster than widening every weight to
float32 for Q4_0 / Q4_1 at one input row (docs/performance.md, "Quantized decoding"). The rounding
moves each x by at most dx / 2, so the result moves from the float32-input product by at most
sum_b dx_b / 2 * sum_(k in block b) |W[n, k]| (measured on SmolLM2-135M's weights and normed
embeddings: 0.5-1.3% of the outputs' RMS, against ~1e-7 without it; SmolLM2's held-out perplexity
+0.41%, tests/models/test_quantized_gpt.py); the kernel still equals its own reference,
`reference_matmul(..., quantize_input=True)`, up to float32 rounding. Off by default: the float32-input
product is the exact definition above; a model turns it on with GPT.use_int8_activations (nn/quantized.py).

The compiled kernels never hold the whole float32 weight:

  * decoding (M <= MAX_ROWS): a fused dequantize-and-dot reads each packed block once, turns its 32
    values into float32 in registers and multiplies them with the matching 32 values of each input
    row; the packed bytes (34, 18 or 20 per 32 weights instead of 128) are what memory delivers, so
    the product could run up to 128/34 = 3.8x (Q8_0) or 128/18 = 7.1x (Q4_0) faster than a float32
    matvec at the same bandwidth; widening the integers to float32 costs more than reading them, so it
    measured 1.4-3.1x (docs/performance.md, "Quantized decoding"). x stays float32 (no quantization of the activations), so the result
    differs from the reference only by the float32 summation order;
  * prefill (more rows): a tile of weight rows is dequantized into a float32 scratch buffer of about
    1 MiB (a core's L2 here) and multiplied with all M input rows by BLAS (sgemm), so prefill is one pass over
    the weight rather than M matvecs. (With quantize_input the rounded x, xq * dx, goes in, rounded by the
    compiled round_input: rounded_input's bits, 3-15x faster than the NumPy rounding on (512, 1536).)

Both compute every output on one thread in an order fixed by the shapes, so the result does not
depend on the thread count.

F32 and F16 stored tensors are accepted too (a GGUF file keeps some small tensors that way): they
are converted to float32 and multiplied by BLAS on every path.
Simplifications: x must be float32 (the dtype quantized models run in); no bias (the Linear layer adds
it); other stored types (BF16, the K-quants, Q5_0, ...) raise a TypeError naming the weight and its type.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minifm.kernels._backend import compiled
from minifm.kernels.threads import follow_load, single_threaded_scipy_blas
from minifm.pretrained.quants import FORMATS, QuantizedTensor, dequantize

# The block formats the compiled kernels read. F32 / F16 go through BLAS after a conversion.
BLOCK_TYPES = ("Q8_0", "Q4_0", "Q4_1")
FLOAT_TYPES = ("F32", "F16")

# quantize_input: a block of 32 inputs whose largest |x| is below this rounds to zeros (127 / amax would overflow).
MIN_AMAX = np.float32(1e-30)

# Products with at most this many input rows take the fused decoding kernel; more take the tiled one.
MAX_ROWS = 4

# The decoding kernel uses every thread of the budget when the packed weights of one call hold at
# least this many bytes, else one thread (as matvec.PARALLEL_BYTES, for the float32 kernel).
PARALLEL_BYTES = 128 * 1024


def _check(x: np.ndarray, weights: Sequence[QuantizedTensor]) -> None:
    """Raise a TypeError / ValueError naming the argument and what was seen."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32 (quantized products run in float32), got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (M, K), got shape {x.shape}")
    for index, weight in enumerate(weights):
        label = f"weights[{index}]" if len(weights) > 1 else "weight"
        if not isinstance(weight, QuantizedTensor):
            raise TypeError(f"{label} must be a QuantizedTensor, got {type(weight).__name__}")
        if weight.type not in BLOCK_TYPES + FLOAT_TYPES:
            raise TypeError(f"{label} ({weight.name!r}) is stored as {weight.type}; quantized products take "
                            f"{', '.join(BLOCK_TYPES + FLOAT_TYPES)}")
        if len(weight.shape) != 2 or weight.shape[1] != x.shape[1]:
            raise ValueError(f"{label} ({weight.name!r}) must have logical shape (N, {x.shape[1]}) to multiply "
                             f"x of shape {x.shape}, got {weight.shape}")


def quantize_input_q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x float32 (M, K) rounded to 8 bits per block of 32 values: (xq int8 (M, K), dx float32 (M, K / 32)),
    x ~ xq * dx (module docstring). A block holding inf or NaN gets xq = 0 and dx = NaN; a block whose largest
    |x| is below MIN_AMAX gets xq = 0 (127 / amax would overflow)."""
    rows, width = x.shape
    if width % 32:
        raise ValueError(f"quantize_input needs x's columns in whole blocks of 32 values, got shape {x.shape}")
    blocks = x.reshape(rows, width // 32, 32)  # (M, K / 32, 32)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        finite = np.isfinite(blocks).all(axis=-1, keepdims=True)  # (M, K / 32, 1)
        amax = np.where(finite, np.abs(blocks).max(axis=-1, keepdims=True), np.float32(0))  # (M, K / 32, 1)
        # below MIN_AMAX, 127 / amax overflows to inf: such a block rounds to zeros (the compiled twin does the same)
        inverse = np.where(amax >= MIN_AMAX, np.float32(127) / amax, np.float32(0)).astype(np.float32)
        rounded = np.rint(np.where(finite, blocks * inverse, np.float32(0)))  # (M, K / 32, 32) in -127..127
        dx = np.where(finite, amax / np.float32(127), np.float32(np.nan)).astype(np.float32)
    return rounded.astype(np.int8).reshape(rows, width), dx.reshape(rows, width // 32)


def rounded_input(x: np.ndarray) -> np.ndarray:
    """xq * dx (M, K) float32: the input that quantize_input=True multiplies."""
    xq, dx = quantize_input_q8(x)
    with np.errstate(invalid="ignore"):
        return (xq.reshape(*dx.shape, 32) * dx[..., None]).astype(np.float32).reshape(x.shape)  # (M, K)


def _as_float(weight: QuantizedTensor) -> np.ndarray:
    """The float32 values (N, K) of `weight`."""
    return dequantize(weight.data, weight.type, weight.name).reshape(weight.shape)  # (N, K)


def _reference(x: np.ndarray, weights: Sequence[QuantizedTensor], quantize_input: bool) -> list[np.ndarray]:
    if quantize_input:
        x = rounded_input(x)  # (M, K)
    # A damaged block's non-finite scale gives non-finite outputs without a floating-point warning, as on
    # the compiled path and in dequantize (the checkpoint readers refuse non-finite weights, naming them).
    with np.errstate(invalid="ignore", over="ignore"):
        return [np.ascontiguousarray(x @ _as_float(weight).T) for weight in weights]  # (M, N_i) each


def reference_matmul(x: np.ndarray, weight: QuantizedTensor, *, quantize_input: bool = False) -> np.ndarray:
    """x @ dequantize(weight)^T: x float32 (M, K), weight logical (N, K) -> float32 (M, N). The oracle.
    quantize_input: round x to 8 bits per block first (module docstring)."""
    _check(x, (weight,))
    return _reference(x, (weight,), quantize_input)[0]


def reference_products(x: np.ndarray, weights: Sequence[QuantizedTensor], *,
                       quantize_input: bool = False) -> list[np.ndarray]:
    """[reference_matmul(x, W, quantize_input=...) for W in weights]."""
    weights = tuple(weights)
    _check(x, weights)
    return _reference(x, weights, quantize_input)


def _compiled_applies(x: np.ndarray, weights: Sequence[QuantizedTensor]) -> bool:
    return (compiled("quantized") is not None and x.shape[0] > 0 and x.shape[1] > 0
            and all(weight.type in BLOCK_TYPES and weight.shape[0] > 0 for weight in weights))


def _compiled_products(x: np.ndarray, weights: Sequence[QuantizedTensor], quantize_input: bool) -> list[np.ndarray]:
    module = compiled("quantized")
    x = np.ascontiguousarray(x)  # (M, K)
    # (list comprehensions, not generators: this runs ~120 times per decoded token of a 30-layer model)
    outs = tuple([np.empty((x.shape[0], weight.shape[0]), dtype=np.float32) for weight in weights])  # (M, N_i)
    datas = tuple([weight.data if weight.data.flags.c_contiguous else np.ascontiguousarray(weight.data)
                   for weight in weights])  # (N_i, row bytes) uint8 each
    types = tuple([FORMATS[weight.type].ggml_type for weight in weights])
    if x.shape[0] <= MAX_ROWS:
        follow_load()  # the kernels' thread count follows the machine's load (minifm.kernels.threads)
        module.decode_products(x, datas, types, outs, PARALLEL_BYTES, quantize_input)
    else:
        if quantize_input:  # prefill multiplies the rounded input in float32 (rounded_input's bits, compiled)
            rounded = np.empty_like(x)  # (M, K)
            module.round_input(x, rounded)
            x = rounded
        with single_threaded_scipy_blas():  # the tiles' sgemm calls come from the OpenMP threads
            for data, ggml_type, out in zip(datas, types, outs):
                module.prefill_product(x, data, ggml_type, out)
    return list(outs)  # (M, N_i) each


def quantized_products(x: np.ndarray, weights: Sequence[QuantizedTensor], *,
                       quantize_input: bool = False) -> list[np.ndarray]:
    """[x @ dequantize(W)^T for W in weights]: several weights sharing one input (q/k/v, gate/up) in one
    call. x float32 (M, K); each W logical (N_i, K) -> float32 (M, N_i) arrays. quantize_input: round x to
    8 bits per block of 32 first, llama.cpp's faster and less accurate product (module docstring)."""
    weights = tuple(weights)
    _check(x, weights)
    if quantize_input and x.shape[1] % 32:
        raise ValueError(f"quantize_input needs x's columns in whole blocks of 32 values, got shape {x.shape}")
    if _compiled_applies(x, weights):
        return _compiled_products(x, weights, quantize_input)
    return _reference(x, weights, quantize_input)


def quantized_matmul(x: np.ndarray, weight: QuantizedTensor, *, quantize_input: bool = False) -> np.ndarray:
    """x @ dequantize(weight)^T: x float32 (M, K), weight logical (N, K) in Q8_0/Q4_0/Q4_1 (or F32/F16)
    -> float32 (M, N). The compiled kernel when built; the NumPy reference otherwise. quantize_input:
    see quantized_products."""
    return quantized_products(x, (weight,), quantize_input=quantize_input)[0]
