"""The transformer block shared by GPT, BERT and T5, pre-norm (the default) or post-norm.

Pre-norm (norm_position="pre"):
    x = x + dropout(attn(norm1(x)))                          self-attention (causal or not)
    x = x + dropout(cross_attn(norm_cross(x), encoder))      only in T5's decoder blocks
    x = x + dropout(mlp(norm2(x)))
Post-norm (norm_position="post", the original Transformer's and BERT's):
    x = norm1(x + dropout(attn(x)))
    x = norm_cross(x + dropout(cross_attn(x, encoder)))
    x = norm2(x + dropout(mlp(x)))

Pre-norm (normalise the input of each sub-layer, keep the residual stream un-normalised) is
GPT-2's and most modern models' choice, and trains more stably without warm-up; the models then put
one final norm after the last block. A post-norm block's output is already normalised, so a
post-norm model has no final norm. The parameters are the same either way, so one set of names
(norm1, norm2, ...) serves both.

Inference fast path: with graph recording off, pre-norm, no cross-attention, no extra keys/values
(prefix tuning), no sliding window and the stock sub-modules (exact Linear / LayerNorm / RMSNorm / MLP / SwiGLU types,
so a PEFT-wrapped projection or a forward hook-like subclass takes the general path), `forward` runs
the same Function forwards on raw NumPy arrays, skipping Tensor/Function bookkeeping (about 25
Python-level autograd calls per block per token during KV-cached decoding). It covers everything a
Llama-style decoder needs: RoPE (the same cos/sin tables and `_Rotate` forward as the attention
module), GQA, RMSNorm, SwiGLU (the fused SiluMul forward), q/k/v biases, padding masks and the KV cache.
The numbers are identical: the same kernels run in the same order. Frozen quantized projections
(minifm/nn/quantized.py QuantizedLinear) run on the fast path too: their products go through
minifm.kernels.quantized, q/k/v and gate/up as one quantized_products call each.

One-token decoding step: when the fast path gets one float32 token of one sequence with a KV cache, no
padding mask and a Llama-style block (RMSNorm, RoPE, causal attention, SwiGLU, bias-free float32 Linear
layers), the whole block is one call of minifm.kernels.decode_step.decode_layer (`_decode_step_array`):
the same arithmetic with its products streaming the weights at the memory bandwidth. Its numbers differ
from the general path's by float32 rounding only (sums in another order).
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Context
from minifm.autograd.grad_mode import is_grad_enabled
from minifm.autograd.ops import attention as attention_ops
from minifm.autograd.ops import elementwise, linalg, normalization
from minifm.autograd.tensor import Tensor
from minifm.kernels import decode_step
from minifm.kernels.quantized import quantized_products
from minifm.kernels.threads import matmul_weights
from minifm.nn.attention import KVCache, MultiHeadAttention, RotaryEmbedding, _Rotate
from minifm.nn.layers import (Dropout, LayerNorm, Linear, RMSNorm, make_norm, stacked_linear_array, stacked_product_array,
                              stacks_linears)
from minifm.nn.mlp import MLP, SwiGLU, make_mlp
from minifm.nn.module import Module
from minifm.nn.quantized import QuantizedLinear

PROJECTION_TYPES = (Linear, QuantizedLinear)  # the exact types the inference fast path runs


def _norm_array(norm: Module, x: np.ndarray) -> np.ndarray:
    """The norm's Function forward on a raw array (stock LayerNorm / RMSNorm only)."""
    weight = norm.weight.data
    if type(norm) is LayerNorm:
        bias = None if norm.bias is None else norm.bias.data
        return normalization.LayerNorm.forward(Context(), x, weight, bias, norm.eps)
    return normalization.RMSNorm.forward(Context(), x, weight, norm.eps)


def _linear_array(layer: Linear | QuantizedLinear, x: np.ndarray) -> np.ndarray:
    """layer(x) on a raw array: the fused Linear Function's forward (or the quantized layer's)."""
    if type(layer) is QuantizedLinear:
        return layer.forward_array(x)
    bias = None if layer.bias is None else layer.bias.data
    return linalg.Linear.forward(Context(), x, layer.weight.data, bias)


def _linears_array(layers: tuple, x: np.ndarray) -> list[np.ndarray]:
    """[layer(x) for layer in layers] on a raw array x (..., in), the same numbers as _linear_array:
    the rows of x times each weight (threads.matmul_weights, one parallel region for all of them
    when the matvec kernel takes the products), then each bias added, as linalg.Linear computes it."""
    rows = x.reshape(-1, x.shape[-1])  # (N, in)
    kinds = {type(layer) for layer in layers}
    input_rounding = {getattr(layer, "quantize_input", False) for layer in layers}
    if kinds == {QuantizedLinear} and len(input_rounding) == 1:
        outs = quantized_products(rows, [layer.quantized_weight for layer in layers],
                                  quantize_input=input_rounding.pop())  # (N, out_i) each
    elif kinds == {Linear}:
        outs = matmul_weights(rows, [layer.weight.data for layer in layers])  # (N, out_i) each
    else:  # a mix of float and quantized projections (or of input roundings): one at a time
        return [_linear_array(layer, x) for layer in layers]
    results = []
    for layer, out in zip(layers, outs):
        out = out.reshape(*x.shape[:-1], out.shape[-1])  # (..., out_i)
        if layer.bias is not None:
            out += layer.bias.data
        results.append(out)
    return results


NORM_POSITIONS = ("pre", "post")


class TransformerBlock(Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, mlp_hidden: int | None = None,
                 bias: bool = True, norm: str = "layernorm", mlp: str = "gelu", dropout: float = 0.0,
                 causal: bool = True, cross_attention: bool = False, rope: RotaryEmbedding | None = None,
                 norm_eps: float | None = None, norm_position: str = "pre", qkv_bias: bool | None = None):
        super().__init__()
        if norm_position not in NORM_POSITIONS:
            raise ValueError(f"norm_position must be one of {list(NORM_POSITIONS)}, got {norm_position!r}")
        self.norm_position = norm_position
        mlp_hidden = 4 * dim if mlp_hidden is None else mlp_hidden
        self.norm1 = make_norm(norm, dim, norm_eps, bias)
        self.attn = MultiHeadAttention(dim, num_heads, num_kv_heads, bias=bias, causal=causal, rope=rope,
                                       qkv_bias=qkv_bias)
        if cross_attention:
            self.norm_cross = make_norm(norm, dim, norm_eps, bias)
            self.cross_attn = MultiHeadAttention(dim, num_heads, num_kv_heads, bias=bias, causal=False,
                                                 qkv_bias=qkv_bias)
        self.has_cross_attention = cross_attention
        self.norm2 = make_norm(norm, dim, norm_eps, bias)
        self.mlp = make_mlp(mlp, dim, mlp_hidden, bias)
        self.dropout = Dropout(dropout)

    def forward(self, x, positions=None, key_padding_mask=None, cache: KVCache | None = None, layer_index: int = 0,
                encoder_hidden=None, encoder_mask=None):
        """x (B, T, dim) -> (B, T, dim); encoder_hidden (B, S, dim) and encoder_mask (B, S) for cross-attention."""
        if self._can_run_inference_path(x):
            return Tensor._from_array(self._inference_forward(x.data, positions, key_padding_mask, cache, layer_index))
        if self.norm_position == "post":
            return self._post_norm_forward(x, positions, key_padding_mask, cache, layer_index, encoder_hidden,
                                           encoder_mask)
        attended = self.attn(self.norm1(x), key_padding_mask=key_padding_mask, positions=positions, cache=cache,
                             layer_index=layer_index)
        x = x + self.dropout(attended)
        if self.has_cross_attention:
            if encoder_hidden is None:
                raise ValueError("this block has cross-attention and needs encoder_hidden")
            crossed = self.cross_attn(self.norm_cross(x), key_value_states=encoder_hidden,
                                      key_padding_mask=encoder_mask)
            x = x + self.dropout(crossed)
        x = x + self.dropout(self.mlp(self.norm2(x)))
        return x

    def _post_norm_forward(self, x, positions, key_padding_mask, cache, layer_index, encoder_hidden, encoder_mask):
        """The post-norm arithmetic (see the module docstring); x (B, T, dim) -> (B, T, dim)."""
        attended = self.attn(x, key_padding_mask=key_padding_mask, positions=positions, cache=cache,
                             layer_index=layer_index)
        x = self.norm1(x + self.dropout(attended))
        if self.has_cross_attention:
            if encoder_hidden is None:
                raise ValueError("this block has cross-attention and needs encoder_hidden")
            crossed = self.cross_attn(x, key_value_states=encoder_hidden, key_padding_mask=encoder_mask)
            x = self.norm_cross(x + self.dropout(crossed))
        return self.norm2(x + self.dropout(self.mlp(x)))

    # ------------------------------------------------------------------ inference fast path
    def _can_run_inference_path(self, x) -> bool:
        attn, mlp = self.attn, self.mlp
        if is_grad_enabled() or not isinstance(x, Tensor) or x.requires_grad:
            return False
        if self.norm_position != "pre" or self.has_cross_attention or attn.extra_kv is not None:
            return False
        if getattr(attn, "window", None) is not None:  # sliding-window attention: the general path
            return False
        if self.training and self.dropout.p > 0.0:
            return False
        if type(attn) is not MultiHeadAttention or type(self.norm1) not in (LayerNorm, RMSNorm) \
                or type(self.norm2) not in (LayerNorm, RMSNorm):
            return False
        if type(mlp) is MLP:
            mlp_layers = (mlp.fc_in, mlp.fc_out)
        elif type(mlp) is SwiGLU:
            mlp_layers = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        else:
            return False
        projections = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj) + mlp_layers
        return all(type(layer) in PROJECTION_TYPES for layer in projections)

    def _inference_forward(self, x, positions, key_padding_mask, cache, layer_index):
        """The general forward's arithmetic on raw arrays (see the module docstring); x (B, T, dim)."""
        attn = self.attn
        if x.ndim != 3 or x.shape[-1] != attn.embed_dim:
            raise ValueError(f"attention input must be (B, T, {attn.embed_dim}), got {x.shape}")
        batch, steps, _ = x.shape
        if steps == 1 and batch == 1 and key_padding_mask is None and self._can_run_decode_step(x, positions, cache,
                                                                                                layer_index):
            return self._decode_step_array(x, cache, layer_index)
        head_dim = attn.head_dim
        h = _norm_array(self.norm1, x)  # (B, T, dim)
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        if stacks_linears(projections, batch * steps):  # as MultiHeadAttention.forward: one product
            q, k, v = stacked_linear_array(h, projections)  # (B, T, H*D), (B, T, Hkv*D) x 2: slices
        else:
            q, k, v = _linears_array(projections, h)  # (B, T, H*D), (B, T, Hkv*D) x 2
        q = q.reshape(batch, steps, attn.num_heads, head_dim).transpose(0, 2, 1, 3)  # (B, H, T, D)
        k = k.reshape(batch, steps, attn.num_kv_heads, head_dim).transpose(0, 2, 1, 3)  # (B, Hkv, T, D)
        v = v.reshape(batch, steps, attn.num_kv_heads, head_dim).transpose(0, 2, 1, 3)  # (B, Hkv, T, D)
        if attn.rope is not None:
            if positions is None:
                past = cache.length if cache is not None else 0
                positions = np.arange(past, past + steps)
            cos, sin = attn.rope.cos_sin(positions, x.dtype)  # (B|1, 1, T, D/2)
            q = _Rotate.forward(Context(), q, cos, sin)  # (B, H, T, D)
            k = _Rotate.forward(Context(), k, cos, sin)  # (B, Hkv, T, D)
        if cache is not None:
            k, v = cache.extend(layer_index, Tensor._from_array(k), Tensor._from_array(v))  # (B, Hkv, past+T, D)
            k, v = k.data, v.data
        if key_padding_mask is not None:
            key_padding_mask = np.asarray(key_padding_mask, dtype=bool)
            if key_padding_mask.shape != (batch, k.shape[2]):
                raise ValueError(f"key_padding_mask must have shape {(batch, k.shape[2])}, "
                                 f"got {key_padding_mask.shape}")
        q_offset = k.shape[2] - steps if attn.causal else 0
        out = attention_ops.FlashAttention.forward(Context(), q, k, v, scale=None, causal=attn.causal,
                                                   q_offset=q_offset, key_mask=key_padding_mask)  # (B, H, T, D)
        out = out.transpose(0, 2, 1, 3).reshape(batch, steps, attn.num_heads * head_dim)  # (B, T, H*D)
        x = x + _linear_array(attn.o_proj, out)
        h = _norm_array(self.norm2, x)  # (B, T, dim)
        return x + self._mlp_array(h)

    def _can_run_decode_step(self, x: np.ndarray, positions, cache: KVCache | None, layer_index: int) -> bool:
        """True when decode_step.decode_layer computes this one-token step (see the module docstring), or
        decode_step.decode_quantized_layer when all seven projections are bias-free QuantizedLinear layers
        (a mix of float and quantized projections takes the general path)."""
        attn, mlp = self.attn, self.mlp
        if cache is None or cache.keys[layer_index] is None or cache.length >= cache.max_length \
                or x.dtype != np.float32 or attn.rope is None or not attn.causal:
            return False
        if positions is not None and int(np.asarray(positions).reshape(-1)[0]) != cache.length:
            return False
        if type(self.norm1) is not RMSNorm or type(self.norm2) is not RMSNorm or type(mlp) is not SwiGLU \
                or self.norm1.eps != self.norm2.eps:
            return False
        layers = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if all(type(layer) is QuantizedLinear and layer.bias is None for layer in layers):
            return True  # decode_step.decode_quantized_layer (a mix of float and quantized: the general path)
        return all(type(layer) is Linear and layer.bias is None and layer.weight.data.dtype == np.float32
                   for layer in layers)

    def _decode_step_array(self, x: np.ndarray, cache: KVCache, layer_index: int) -> np.ndarray:
        """The block on one token x (1, 1, dim) by decode_step.decode_layer (or decode_quantized_layer); writes
        the cache at cache.length."""
        attn, mlp = self.attn, self.mlp
        position = cache.length
        cos, sin = attn.rope.cos_sin(np.arange(position, position + 1), np.float32)  # (1, 1, 1, D/2) each
        out = x.reshape(-1).copy()  # (dim,): the residual stream, updated in place
        layers = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if type(attn.q_proj) is QuantizedLinear:
            q, k, v, o, gate, up, down = [layer.quantized_weight for layer in layers]
            weights = decode_step.QuantizedLayerWeights(
                self.norm1.weight.data, q, k, v, o, self.norm2.weight.data, gate, up, down, self.norm1.eps,
                attn.num_heads, tuple([layer.quantize_input for layer in layers]))
            decode_step.decode_quantized_layer(out, weights, cache.keys[layer_index][0], cache.values[layer_index][0],
                                               position, cos.reshape(-1), sin.reshape(-1))
            return out.reshape(x.shape)
        weights = decode_step.LayerWeights(
            self.norm1.weight.data, attn.q_proj.weight.data, attn.k_proj.weight.data, attn.v_proj.weight.data,
            attn.o_proj.weight.data, self.norm2.weight.data, mlp.gate_proj.weight.data, mlp.up_proj.weight.data,
            mlp.down_proj.weight.data, self.norm1.eps, attn.num_heads)
        decode_step.decode_layer(out, weights, cache.keys[layer_index][0], cache.values[layer_index][0], position,
                                 cos.reshape(-1), sin.reshape(-1))
        return out.reshape(x.shape)

    def _mlp_array(self, h: np.ndarray) -> np.ndarray:
        """The MLP's forward on a raw array h (B, T, dim) -> (B, T, dim), as MLP / SwiGLU compute it."""
        mlp = self.mlp
        if type(mlp) is SwiGLU:
            projections = (mlp.gate_proj, mlp.up_proj)
            if stacks_linears(projections, h.size // h.shape[-1]):  # as SwiGLU.forward: one product
                packed = stacked_product_array(h, projections)  # [gate | up] (B, T, 2 hidden)
                return _linear_array(mlp.down_proj, elementwise.SiluMulPacked.forward(Context(), packed))
            gate, up = _linears_array(projections, h)  # (B, T, hidden) each
            gated = elementwise.SiluMul.forward(Context(), gate, up)  # silu(gate) * up, (B, T, hidden)
            return _linear_array(mlp.down_proj, gated)
        hidden = elementwise.Gelu.forward(Context(), _linear_array(mlp.fc_in, h),
                                          approximate=mlp.approximate)  # (B, T, hidden)
        return _linear_array(mlp.fc_out, hidden)
