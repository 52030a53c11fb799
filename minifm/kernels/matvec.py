"""Few-row products with row-major weights (decoding's Linear layers): NumPy reference + dispatch.

Compiled twin: csrc/matvec.pyx (module minifm.kernels._matvec), whose fewrows_many is minifm.kernels.fewrows's
kernel (the same product for weights that sit in the caches): the two share the compiled table of weights and
split of rows, and this module's operand checks (check_operands, applies).

The math, for x (M, K) and weights W_1 .. W_n, each (N_i, K) as a Linear layer stores it:

    out_i = x @ W_i^T            out_i[m, r] = sum_k x[m, k] * W_i[r, k]        (M, N_i)

With M small (M = batch size in KV-cached decoding) the product reads each weight once and does
two flops per weight per input row, so it runs at the memory bandwidth. The compiled kernel spreads
the rows of all the weights of one call over the OpenMP threads (a second core adds bandwidth), keeps
a weight row in L1 for all M inputs, and computes each output in a fixed order on one thread, so its
result does not depend on the thread count. It computes several products that share their input
(q, k and v; gate and up) in one parallel region: `matvec_many`. For one float32 input row (M = 1,
decoding) the compiled kernel runs the streaming product minifm.kernels.decode_step uses (csrc/_stream_dot.pxd:
each thread's rows read as four sequential streams), one shared float32 matrix-vector kernel, the same bits.

When it runs: minifm.kernels.threads.matmul sends `a @ W.T` (W row-major, as Linear stores it) here
when `applies(a, W)`: at most MAX_ROWS rows, float32 or float64, and the compiled kernel built. Above
MAX_ROWS rows BLAS's blocked GEMM, which reuses each loaded weight for many rows, is faster.
Simplification: no bias (Linear adds it afterwards); K = 0 and N = 0 take the reference.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels._backend import compiled

# Products with at most this many input rows go to the compiled kernel (see the module docstring).
MAX_ROWS = 4

# The kernel uses every thread of the budget when the weights of one call hold at least this many
# bytes, else one thread. Measured (docs/performance.md, "Real model: SmolLM2-135M"): a second thread
# helps from a few hundred KiB of weights on; below, waking it costs about what it saves.
PARALLEL_BYTES = 256 * 1024

_FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_operands(x: np.ndarray, weights, dtypes=_FLOAT_TYPES) -> None:
    """Raise, naming the argument, unless x is a 2-D array of one of `dtypes` and every weight a 2-D array
    of x's dtype with x's column count: the references' check (minifm.kernels.fewrows's too)."""
    if not isinstance(x, np.ndarray) or x.dtype not in dtypes or x.ndim != 2:
        raise TypeError(f"x must be a 2-D {' or '.join(dtype.name for dtype in dtypes)} numpy array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    for index, weight in enumerate(weights):
        if not isinstance(weight, np.ndarray) or weight.ndim != 2 or weight.shape[1] != x.shape[1]:
            raise ValueError(f"weights[{index}] must be a 2-D array with {x.shape[1]} columns (x is {x.shape}), "
                             f"got shape {getattr(weight, 'shape', type(weight).__name__)}")
        if weight.dtype != x.dtype:
            raise TypeError(f"weights[{index}] dtype {weight.dtype} must equal x dtype {x.dtype}")


def matvec_reference(x: np.ndarray, weights) -> list[np.ndarray]:
    """[x @ W^T for W in weights]: x (M, K), each W (N_i, K) -> (M, N_i) arrays in x's dtype."""
    check_operands(x, weights)
    return [np.ascontiguousarray(x @ weight.T) for weight in weights]  # (M, N_i) each


def applies(x: np.ndarray, weights, max_rows: int = MAX_ROWS, dtypes=_FLOAT_TYPES) -> bool:
    """True when the compiled module computes x @ W^T for every W in `weights` (a sequence of weights, or
    one weight): x (M, K) with 0 < M <= max_rows and K > 0, of one of `dtypes`, every weight a non-empty
    C-contiguous (N, K) array of x's dtype, the module built. The defaults are matvec_many's operands (see
    the module docstring); minifm.kernels.fewrows asks with fewrows_many's. x is checked once, then each weight."""
    if isinstance(weights, np.ndarray):
        weights = (weights,)
    try:  # (no isinstance checks: this runs before every few-row product; a non-array has no .ndim or .dtype)
        if not (x.ndim == 2 and 0 < x.shape[0] <= max_rows and x.shape[1] > 0 and x.dtype in dtypes
                and weights and compiled("matvec") is not None):
            return False
        width, dtype = x.shape[1], x.dtype
        for weight in weights:
            if not (weight.dtype == dtype and weight.ndim == 2 and weight.flags.c_contiguous
                    and weight.shape[1] == width and weight.shape[0] > 0):
                return False
    except AttributeError:
        return False
    return True


def compiled_products(x: np.ndarray, weights) -> list[np.ndarray]:
    """[x @ W^T for W in weights] by the compiled kernel, for callers that checked `applies(x, weights)`."""
    x = np.ascontiguousarray(x)
    outs = tuple([np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype) for weight in weights])  # (M, N_i)
    compiled("matvec").matvec_many(x, tuple(weights), outs, PARALLEL_BYTES)
    return list(outs)


def matvec_many(x: np.ndarray, weights) -> list[np.ndarray]:
    """[x @ W^T for W in weights] in one parallel region; the compiled kernel when it applies to all."""
    weights = tuple(weights)
    if applies(x, weights):
        return compiled_products(x, weights)
    return matvec_reference(x, weights)


def matvec(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x @ weight^T for x (M, K) and weight (N, K) -> (M, N); the compiled kernel when it applies."""
    return matvec_many(x, (weight,))[0]
