"""Matrix products with weights kept in GGUF block formats (Q8_0, Q4_0, Q4_1): NumPy reference + dispatch.

Compiled twin: csrc/quantized.pyx (module minifm.kernels._quantized).

The math, for x (M, K) float32 and a weight W of logical shape (N, K) stored as blocks (see
minifm/pretrained/quants.py for the block layouts):

    out = x @ dequantize(W)^T          out[m, n] = sum_k x[m, k] * W[n, k]            (M, N)

`reference_matmul` is that definition, written out: dequantize the whole weight to float32, then one
BLAS product. It is the oracle the tests compare the compiled kernels against.

The compiled kernels never hold the whole float32 weight:

  * decoding (M <= MAX_ROWS): a fused dequantize-and-dot reads each packed block once, turns its 32
    values into float32 in registers and multiplies them with the matching 32 values of each input
    row; the packed bytes (34, 18 or 20 per 32 weights instead of 128) are what memory delivers, so
    the product runs up to 128/34 = 3.8x (Q8_0) or 128/18 = 7.1x (Q4_0) faster than a float32 matvec
    at the same bandwidth. x stays float32 (no quantization of the activations), so the result
    differs from the reference only by the float32 summation order;
  * prefill (more rows): a tile of weight rows is dequantized into a float32 scratch buffer small
    enough for L2 and multiplied with all M input rows by BLAS (sgemm), so prefill is one pass over
    the weight rather than M matvecs.

Both compute every output on one thread in an order fixed by the shapes, so the result does not
depend on the thread count.

F32 and F16 stored tensors are accepted too (a GGUF file keeps some small tensors that way): they
are converted to float32 and multiplied by BLAS on every path.
Simplifications: x must be float32 (the dtype quantized models run in); no bias (the Linear layer adds
it); the K-quants and other formats raise UnsupportedTensorTypeError (dequantize cannot read them).
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


def _as_float(weight: QuantizedTensor) -> np.ndarray:
    """The float32 values (N, K) of `weight`."""
    return dequantize(weight.data, weight.type, weight.name).reshape(weight.shape)  # (N, K)


def _reference(x: np.ndarray, weights: Sequence[QuantizedTensor]) -> list[np.ndarray]:
    # A damaged block's non-finite scale gives non-finite outputs without a floating-point warning, as on
    # the compiled path and in dequantize (the checkpoint readers refuse non-finite weights, naming them).
    with np.errstate(invalid="ignore", over="ignore"):
        return [np.ascontiguousarray(x @ _as_float(weight).T) for weight in weights]  # (M, N_i) each


def reference_matmul(x: np.ndarray, weight: QuantizedTensor) -> np.ndarray:
    """x @ dequantize(weight)^T: x float32 (M, K), weight logical (N, K) -> float32 (M, N). The oracle."""
    _check(x, (weight,))
    return _reference(x, (weight,))[0]


def reference_products(x: np.ndarray, weights: Sequence[QuantizedTensor]) -> list[np.ndarray]:
    """[reference_matmul(x, W) for W in weights]."""
    weights = tuple(weights)
    _check(x, weights)
    return _reference(x, weights)


def _compiled_applies(x: np.ndarray, weights: Sequence[QuantizedTensor]) -> bool:
    return (compiled("quantized") is not None and x.shape[0] > 0 and x.shape[1] > 0
            and all(weight.type in BLOCK_TYPES and weight.shape[0] > 0 for weight in weights))


def _compiled_products(x: np.ndarray, weights: Sequence[QuantizedTensor]) -> list[np.ndarray]:
    module = compiled("quantized")
    x = np.ascontiguousarray(x)  # (M, K)
    outs = tuple(np.empty((x.shape[0], weight.shape[0]), dtype=np.float32) for weight in weights)  # (M, N_i)
    datas = tuple(np.ascontiguousarray(weight.data).reshape(weight.shape[0], -1) for weight in weights)
    types = tuple(FORMATS[weight.type].ggml_type for weight in weights)
    if x.shape[0] <= MAX_ROWS:
        follow_load()  # the kernels' thread count follows the machine's load (minifm.kernels.threads)
        module.decode_products(x, datas, types, outs, PARALLEL_BYTES)
    else:
        with single_threaded_scipy_blas():  # the tiles' sgemm calls come from the OpenMP threads
            for data, ggml_type, out in zip(datas, types, outs):
                module.prefill_product(x, data, ggml_type, out)
    return list(outs)


def quantized_products(x: np.ndarray, weights: Sequence[QuantizedTensor]) -> list[np.ndarray]:
    """[x @ dequantize(W)^T for W in weights]: several weights sharing one input (q/k/v, gate/up) in one
    call. x float32 (M, K); each W logical (N_i, K) -> float32 (M, N_i) arrays."""
    weights = tuple(weights)
    _check(x, weights)
    if _compiled_applies(x, weights):
        return _compiled_products(x, weights)
    return _reference(x, weights)


def quantized_matmul(x: np.ndarray, weight: QuantizedTensor) -> np.ndarray:
    """x @ dequantize(weight)^T: x float32 (M, K), weight logical (N, K) in Q8_0/Q4_0/Q4_1 (or F32/F16)
    -> float32 (M, N). The compiled kernel when built; the NumPy reference otherwise."""
    return quantized_products(x, (weight,))[0]
