"""One KV-cached decoding step of a Llama-style block, batch 1, one token, float32: NumPy reference + dispatch.

Compiled twin: csrc/decode_step.pyx (module minifm.kernels._decode_step): the whole step in one call,
its matrix-vector products streaming the weights at the memory bandwidth (4 rows per pass, AVX2, rows
split across the OpenMP threads).

The math, for the residual stream x (E,) of one token at `position`, a pre-norm block with RMSNorm, RoPE
(rotate-half), grouped-query attention (H query heads, G key/value heads of D values) and SwiGLU (F hidden):

    h = x / sqrt(mean(x^2) + eps) * norm1
    q = Wq h (H, D),  k = Wk h (G, D),  v = Wv h (G, D);  q, k rotated by the position's cos/sin
    cache_k[:, position] = k;  cache_v[:, position] = v
    a_i = softmax(q_i . cache_k[g]^T / sqrt(D)) cache_v[g]   over positions 0..position, g = i // (H / G)
    x = x + Wo a
    h = x / sqrt(mean(x^2) + eps) * norm2
    x = x + Wdown (silu(Wgate h) * Wup h)

This is TransformerBlock's no-grad forward (minifm/nn/block.py) for that case, written as one function:
decoding a token is ~25 NumPy and kernel calls per layer there, and the products read 538 MB of float32
weights per token for SmolLM2-135M, so the Python between them and the products' speed are what decoding
costs. `matvec` is the product alone (the output head uses it; its kernel, csrc/_stream_dot.pxd, is also
minifm.kernels.matvec's for one float32 row). The compiled results differ from the
reference (and from the general path) by float32 rounding only: sums in another order. The reference's
RMSNorm factor, rotation and softmax are the normalization, rotary and softmax references'.

Quantized blocks (QuantizedLayerWeights: the seven projections as Q8_0 / Q4_0 / Q4_1 QuantizedTensor
blocks, minifm/nn/quantized.py): `decode_quantized_layer`, the same step with each product
x @ dequantize(W)^T computed by the fused dequantize-and-dot loops of csrc/_block_dot.pxd (the bits of
minifm.kernels.quantized's compiled products); a projection whose quantize_input flag is set multiplies
its input rounded to int8 per block of 32 (quantized.quantize_input_q8's rounding). Reference:
`decode_quantized_layer_reference`, the same step with every product quantized.reference_matmul. A SmolLM2
Q4_1 block is one call instead of ~7 quantized product calls, 7 OpenMP regions and ~25 array calls.

When it runs: `applies(...)` / `applies_quantized(...)`: the compiled module built, every array float32
(the packed blocks uint8) and C-contiguous. Simplifications: no biases, no padding mask, batch 1 and one
token; the caller (TransformerBlock) checks its structure and takes the general path otherwise.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minifm.kernels import threads
from minifm.kernels._backend import compiled
from minifm.kernels.normalization import rms_norm_forward_reference
from minifm.kernels.quantized import BLOCK_TYPES, reference_matmul
from minifm.kernels.rotary import rotate_reference
from minifm.kernels.softmax import softmax_reference
from minifm.pretrained.quants import FORMATS, QuantizedTensor


class LayerWeights(NamedTuple):
    """The arrays and sizes of one block, as decode_layer reads them (shapes in the module docstring)."""
    norm1: np.ndarray   # (E,)
    wq: np.ndarray      # (H*D, E)
    wk: np.ndarray      # (G*D, E)
    wv: np.ndarray      # (G*D, E)
    wo: np.ndarray      # (E, H*D)
    norm2: np.ndarray   # (E,)
    wgate: np.ndarray   # (F, E)
    wup: np.ndarray     # (F, E)
    wdown: np.ndarray   # (E, F)
    eps: float
    heads: int


# the seven products of a block, in the order LayerWeights and the compiled kernels take them
PROJECTIONS = ("wq", "wk", "wv", "wo", "wgate", "wup", "wdown")


class QuantizedLayerWeights(NamedTuple):
    """LayerWeights with the seven projections as QuantizedTensor blocks (Q8_0, Q4_0, Q4_1; logical shapes
    as LayerWeights's arrays), and per projection whether its input is rounded to int8 first."""
    norm1: np.ndarray           # (E,)
    wq: QuantizedTensor         # (H*D, E)
    wk: QuantizedTensor         # (G*D, E)
    wv: QuantizedTensor         # (G*D, E)
    wo: QuantizedTensor         # (E, H*D)
    norm2: np.ndarray           # (E,)
    wgate: QuantizedTensor      # (F, E)
    wup: QuantizedTensor        # (F, E)
    wdown: QuantizedTensor      # (E, F)
    eps: float
    heads: int
    quantize_input: tuple = (False,) * 7  # in PROJECTIONS order (QuantizedLinear.quantize_input)


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x * inv_rms * weight for x (E,): inv_rms = 1 / sqrt(mean(x^2) + eps) by normalization's reference on x
    in float64, rounded to float32 (the compiled step's factor: its sum in double), then float32 products."""
    inv_rms = rms_norm_forward_reference(x.astype(np.float64)[None, :], eps=eps, want_xhat=False)[2]  # (1,)
    return x * np.float32(inv_rms[0]) * weight


def _rotate(rows: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """rotate-half RoPE of rows (heads, D) by one position's cos, sin (D/2,): rotary's reference."""
    return rotate_reference(rows[None, :, None, :], cos[None, None, None, :], sin[None, None, None, :])[0, :, 0]


def _layer_step(x: np.ndarray, norm1: np.ndarray, norm2: np.ndarray, eps: float, heads: int, product,
                cache_k: np.ndarray, cache_v: np.ndarray, position: int, cos: np.ndarray, sin: np.ndarray) -> None:
    """The step's arithmetic with product(name, vector) -> W_name @ vector (name: "wq", "wk", ..., "wdown")."""
    kv_heads, _, head_dim = cache_k.shape
    group = heads // kv_heads
    h = _rms_norm(x, norm1, eps)  # (E,)
    q = _rotate(product("wq", h).reshape(heads, head_dim), cos, sin)  # (H, D)
    k = _rotate(product("wk", h).reshape(kv_heads, head_dim), cos, sin)  # (G, D)
    v = product("wv", h).reshape(kv_heads, head_dim)  # (G, D)
    cache_k[:, position], cache_v[:, position] = k, v
    keys = np.repeat(cache_k[:, :position + 1], group, axis=0)  # (H, position + 1, D)
    values = np.repeat(cache_v[:, :position + 1], group, axis=0)  # (H, position + 1, D)
    scores = np.einsum("hd,htd->ht", q, keys) / np.float32(np.sqrt(head_dim))  # (H, position + 1)
    weights = softmax_reference(scores)  # (H, position + 1)
    attended = np.einsum("ht,htd->hd", weights, values).reshape(-1)  # (H*D,)
    x += product("wo", attended)
    h = _rms_norm(x, norm2, eps)  # (E,)
    gate, up = product("wgate", h), product("wup", h)  # (F,) each
    x += product("wdown", gate / (1 + np.exp(-gate)) * up)


def decode_layer_reference(x: np.ndarray, layer: LayerWeights, cache_k: np.ndarray, cache_v: np.ndarray,
                           position: int, cos: np.ndarray, sin: np.ndarray) -> None:
    """One block's decoding step on x (E,) in place; writes this token's key/value into cache_k, cache_v
    (G, max_length, D) at `position`; cos, sin (D/2,)."""
    _layer_step(x, layer.norm1, layer.norm2, layer.eps, layer.heads, lambda name, vector: getattr(layer, name) @ vector,
                cache_k, cache_v, position, cos, sin)


def decode_quantized_layer_reference(x: np.ndarray, layer: QuantizedLayerWeights, cache_k: np.ndarray,
                                     cache_v: np.ndarray, position: int, cos: np.ndarray, sin: np.ndarray) -> None:
    """decode_layer_reference with each product reference_matmul(vector, W, quantize_input=flag): W
    dequantized, the vector rounded to int8 per block of 32 first where the weight's flag says so."""
    flags = dict(zip(PROJECTIONS, layer.quantize_input))

    def product(name: str, vector: np.ndarray) -> np.ndarray:
        return reference_matmul(vector[None, :], getattr(layer, name), quantize_input=flags[name])[0]  # (N,)

    _layer_step(x, layer.norm1, layer.norm2, layer.eps, layer.heads, product, cache_k, cache_v, position, cos, sin)


def matvec_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """weight @ x for x (K,), weight (N, K) -> (N,)."""
    return weight @ x


def _float32_contiguous(*arrays) -> bool:
    return all(array.dtype == np.float32 and array.flags.c_contiguous for array in arrays)


def _scratch(layer, position: int) -> np.ndarray:
    """The compiled step's scratch for a LayerWeights or QuantizedLayerWeights layer at `position`: q (H*D),
    k and v (G*D each), attended (H*D), gate and up (F each), scores (H, position + 1), float32."""
    q_size, kv_size, hidden = layer.wq.shape[0], layer.wk.shape[0], layer.wgate.shape[0]
    return np.empty(2 * q_size + 2 * kv_size + 2 * hidden + layer.heads * (position + 1), dtype=np.float32)


def applies(x: np.ndarray, layer: LayerWeights, cache_k: np.ndarray, cache_v: np.ndarray) -> bool:
    """True when the compiled decode_layer takes this step (see the module docstring)."""
    return (compiled("decode_step") is not None and x.ndim == 1
            and _float32_contiguous(x, cache_k, cache_v, *layer[:9]))


def decode_layer(x: np.ndarray, layer: LayerWeights, cache_k: np.ndarray, cache_v: np.ndarray,
                 position: int, cos: np.ndarray, sin: np.ndarray) -> None:
    """decode_layer_reference's step, compiled when it applies; x (E,) updated in place."""
    kernel = compiled("decode_step")
    if kernel is None or not applies(x, layer, cache_k, cache_v):
        decode_layer_reference(x, layer, cache_k, cache_v, position, cos, sin)
        return
    threads.follow_load()  # the OpenMP thread count follows the load, as threads.matmul's products do
    kernel.decode_layer(x, *layer[:9], cache_k, cache_v, position, np.ascontiguousarray(cos, dtype=np.float32),
                        np.ascontiguousarray(sin, dtype=np.float32), layer.eps, layer.heads, _scratch(layer, position))


_GGML_TYPES = {name: FORMATS[name].ggml_type for name in BLOCK_TYPES}  # "Q4_1" -> 3, ...


def _packed(layer: QuantizedLayerWeights):
    """(blocks, GGML types) of the seven projections, or None when one is not a QuantizedTensor in a block
    format with C-contiguous blocks. (One pass: this runs once per layer per decoded token.)"""
    datas, types = [], []
    for weight in (layer.wq, layer.wk, layer.wv, layer.wo, layer.wgate, layer.wup, layer.wdown):
        ggml_type = _GGML_TYPES.get(weight.type) if type(weight) is QuantizedTensor else None
        if ggml_type is None or not weight.data.flags.c_contiguous:
            return None
        datas.append(weight.data)
        types.append(ggml_type)
    return tuple(datas), tuple(types)


def applies_quantized(x: np.ndarray, layer: QuantizedLayerWeights, cache_k: np.ndarray, cache_v: np.ndarray) -> bool:
    """True when the compiled decode_quantized_layer takes this step: the module built, x, the norms and the
    caches float32 and C-contiguous, every projection a Q8_0 / Q4_0 / Q4_1 QuantizedTensor with C-contiguous blocks."""
    return (compiled("decode_step") is not None and x.ndim == 1
            and _float32_contiguous(x, cache_k, cache_v, layer.norm1, layer.norm2) and _packed(layer) is not None)


def decode_quantized_layer(x: np.ndarray, layer: QuantizedLayerWeights, cache_k: np.ndarray, cache_v: np.ndarray,
                           position: int, cos: np.ndarray, sin: np.ndarray) -> None:
    """decode_quantized_layer_reference's step, compiled when it applies; x (E,) updated in place. The
    products have the bits of minifm.kernels.quantized's compiled ones (the same block-dot loops)."""
    kernel = compiled("decode_step")
    packed = None
    if kernel is not None and x.ndim == 1 and _float32_contiguous(x, cache_k, cache_v, layer.norm1, layer.norm2):
        packed = _packed(layer)
    if packed is None:
        decode_quantized_layer_reference(x, layer, cache_k, cache_v, position, cos, sin)
        return
    threads.follow_load()
    kernel.decode_quantized_layer(x, layer.norm1, packed[0], packed[1], tuple(layer.quantize_input), layer.norm2,
                                  cache_k, cache_v, position, np.ascontiguousarray(cos, dtype=np.float32),
                                  np.ascontiguousarray(sin, dtype=np.float32), layer.eps, layer.heads,
                                  _scratch(layer, position))


def matvec(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """weight @ x for x (K,), weight (N, K) -> (N,): the compiled streaming product when both are float32
    and C-contiguous, else the reference."""
    kernel = compiled("decode_step")
    if kernel is None or x.ndim != 1 or weight.ndim != 2 or not _float32_contiguous(x, weight) \
            or weight.shape[1] != x.shape[0] or weight.size == 0:
        return matvec_reference(x, weight)
    threads.follow_load()
    out = np.empty(weight.shape[0], dtype=np.float32)  # (N,)
    kernel.matvec_rows(x, weight, out)
    return out
