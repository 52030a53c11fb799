"""Multi-head attention (MHA / GQA / MQA, self or cross), rotary position embedding, and the KV cache.

MultiHeadAttention, for x (B, T, dim):
    q = q_proj(x) -> (B, H, T, D)      k = k_proj(src), v = v_proj(src) -> (B, Hkv, S, D)
    (RoPE rotates q and k by their positions, self-attention only)
    (a KVCache appends the new k, v to the cached ones; `extra_kv` prepends extra ones)
    out = softmax(q k^T / sqrt(D) + masks) v -> (B, T, H * D) -> o_proj
with src = x for self-attention or the encoder's states for cross-attention. In self-attention with plain
Linear projections and more than 32 rows, q, k and v come from one product with the three weights stacked
(nn/layers.py stacks_linears), sliced apart. H must be a multiple
of Hkv: each group of H / Hkv query heads shares one key/value head (GQA; Hkv = 1 is MQA,
Hkv = H is ordinary MHA). The softmax/attention is one fused Function
(F.scaled_dot_product_attention, flash-style kernel); masks are passed as a causal flag with a
query offset and a per-key padding mask, never as a materialised (T, T) matrix.

RoPE (Su et al.): the pair (x_i, x_{i + D/2}) of each head is rotated by the angle
position * base^(-2i / D) ("rotate half" layout, as in LLaMA / GPT-NeoX). Rotation by the position
difference is what the q.k product then sees, so attention depends on relative position only.

KVCache: one preallocated (B, Hkv, max_length, D) key and value buffer per layer plus `length`,
the number of positions already stored. A forward with a cache writes its new keys/values at
[length, length + T) of every layer and the model then advances `length` by T; `reorder` permutes
the batch (beam search).

Extra keys/values: `attention.extra_kv`, None by default, may hold a pair (keys, values) of Tensors,
each (Hkv, P, D). They are prepended to the keys and values of every call, for every row of the
batch, and every query may attend to them (before the causal and padding masks, which cover the
real keys only); gradients flow into them. This is the general hook through which a caller adds
learned keys/values to a frozen model: prefix tuning (minifm/peft/prefix_tuning.py) sets it around
each forward call. The KV cache never stores them.

Sliding window: `attention.window`, None by default, may hold a positive int; each query then
sees only the keys fewer than `window` positions away (F.sliding_window_mask; with the causal
mask, itself and the window - 1 keys before it, as Mistral's sliding_window). It runs on the
materialised attention path, not the flash kernel (the lab's attention experiment sets it).
Simplifications: no attention-probability dropout; the cache stores the
self-attention keys/values only (cross-attention keys are recomputed from the encoder output).
"""
from __future__ import annotations

import numpy as np

import minifm.functional as F
from minifm.autograd import ops
from minifm.autograd.function import Function
from minifm.autograd.tensor import Tensor
from minifm.kernels import rotary as rotary_kernels
from minifm.nn.layers import Linear, stacked_linear, stacks_linears
from minifm.nn.module import Module


# ---------------------------------------------------------------------------- rotary embedding
class _Rotate(Function):
    """out = x rotated pairwise by angles whose cos/sin are given; x (..., T, D), cos/sin (..., T, D/2).
    The rotation is minifm.kernels.rotary's (NumPy reference + Cython twin)."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.cos, ctx.sin = cos, sin
        return rotary_kernels.rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad):
        # the transpose of a rotation is the rotation by the opposite angle
        return rotary_kernels.rotate(grad, ctx.cos, -ctx.sin), None, None


class RotaryEmbedding:
    """Computes RoPE's cos/sin tables for given positions and applies the rotation (no parameters).

    The cos/sin values of positions 0..n-1 are computed once per dtype and kept (`_tables`), grown
    to the next power of two when a larger position comes: every layer of every forward then looks
    its rows up instead of recomputing np.cos/np.sin (30 times per token in a 30-layer model). A
    row of the table is computed exactly as a direct call would (float64 angle position * inv_freq,
    cos/sin in float64, cast to the dtype), so the numbers do not depend on the table. The last
    lookup is kept too (keyed by the positions' values and the dtype): the layers of one forward ask
    for the same positions. The returned arrays are read-only.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        self.base = float(base)
        self.inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
        self._tables: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}  # dtype -> cos, sin (n, D/2)
        self._last_key, self._last_result = None, None  # the last cos_sin call's (positions, dtype) and answer

    def _angles(self, positions: np.ndarray) -> np.ndarray:
        """positions (...) -> angles (..., D/2) in float64."""
        return positions[..., None].astype(np.float64) * self.inv_freq

    def _table(self, dtype, length: int) -> tuple[np.ndarray, np.ndarray]:
        """cos, sin of positions 0..n-1 in `dtype`, each (n, D/2), with n >= length."""
        dtype = np.dtype(dtype)
        tables = self._tables.get(dtype)
        if tables is None or tables[0].shape[0] < length:
            size = 1 << max(10, (length - 1).bit_length())  # the next power of two, at least 1024
            angles = self._angles(np.arange(size))  # (n, D/2)
            tables = (np.cos(angles).astype(dtype), np.sin(angles).astype(dtype))
            self._tables[dtype] = tables
        return tables

    def cos_sin(self, positions: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
        """positions (B, T) or (T,) integers -> cos, sin shaped (B or 1, 1, T, D/2) in `dtype`."""
        positions = np.asarray(positions)
        if positions.ndim == 1:
            positions = positions[None, :]
        key = (np.dtype(dtype), positions.dtype, positions.shape, positions.tobytes())
        if key == self._last_key:
            return self._last_result
        if positions.dtype.kind not in "iu" or positions.size == 0 or positions.min() < 0:
            angles = self._angles(positions)[:, None]  # (B, 1, T, D/2): computed directly
            cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
        else:
            cos_table, sin_table = self._table(dtype, int(positions.max()) + 1)
            cos, sin = cos_table[positions][:, None], sin_table[positions][:, None]  # (B, 1, T, D/2) each
        cos.setflags(write=False)
        sin.setflags(write=False)
        self._last_key, self._last_result = key, (cos, sin)
        return cos, sin

    def rotate(self, x, cos, sin):
        """x (B, heads, T, D) Tensor rotated by the precomputed tables."""
        return _Rotate.apply(x, cos, sin)


# ---------------------------------------------------------------------------- KV cache
class KVCache:
    """Per-layer key/value buffers for incremental decoding (see the module docstring)."""

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_dim: int, max_length: int):
        for name, value in (("n_layer", n_layer), ("batch_size", batch_size), ("n_kv_head", n_kv_head),
                            ("head_dim", head_dim), ("max_length", max_length)):
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"KVCache {name} must be a positive integer, got {value!r}")
        self.n_layer, self.batch_size, self.n_kv_head = n_layer, batch_size, n_kv_head
        self.head_dim, self.max_length = head_dim, max_length
        self.keys: list[np.ndarray | None] = [None] * n_layer  # each (B, Hkv, max_length, D), allocated lazily
        self.values: list[np.ndarray | None] = [None] * n_layer
        self.length = 0

    def extend(self, layer_index: int, k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:
        """Store k_new, v_new (B, Hkv, T, D) after the cached positions; return all keys/values so far.

        Does not advance `length` (every layer of one forward writes at the same offset; the model
        calls `advance` once). Gradients flow to the new keys/values, never into the cache.
        """
        batch, heads, steps, dim = k_new.shape
        if (batch, heads, dim) != (self.batch_size, self.n_kv_head, self.head_dim):
            raise ValueError(
                f"KVCache holds (batch={self.batch_size}, kv_heads={self.n_kv_head}, head_dim={self.head_dim}) "
                f"but got keys of shape {k_new.shape}"
            )
        end = self.length + steps
        if end > self.max_length:
            raise ValueError(f"KVCache is full: {self.length} cached + {steps} new > max_length {self.max_length}")
        if self.keys[layer_index] is None:
            shape = (self.batch_size, self.n_kv_head, self.max_length, self.head_dim)
            self.keys[layer_index] = np.zeros(shape, dtype=k_new.dtype)
            self.values[layer_index] = np.zeros(shape, dtype=v_new.dtype)
        keys, values = self.keys[layer_index], self.values[layer_index]
        keys[:, :, self.length:end] = k_new.data
        values[:, :, self.length:end] = v_new.data
        if (k_new.requires_grad or v_new.requires_grad) and self.length > 0:
            past_k = Tensor(keys[:, :, :self.length])
            past_v = Tensor(values[:, :, :self.length])
            return ops.concatenate([past_k, k_new], axis=2), ops.concatenate([past_v, v_new], axis=2)
        if k_new.requires_grad or v_new.requires_grad:
            return k_new, v_new
        return Tensor(keys[:, :, :end]), Tensor(values[:, :, :end])

    def advance(self, steps: int) -> None:
        if self.length + steps > self.max_length:
            raise ValueError(f"KVCache cannot advance by {steps}: length {self.length}, max_length {self.max_length}")
        self.length += steps

    def reorder(self, batch_indices) -> None:
        """Keep/duplicate batch rows: row i of the new cache is row batch_indices[i] of the old one."""
        batch_indices = np.asarray(batch_indices)
        if batch_indices.ndim != 1 or batch_indices.dtype.kind not in "iu":
            raise ValueError(f"batch_indices must be a 1-D integer array, got {batch_indices.dtype} {batch_indices.shape}")
        if batch_indices.size and (batch_indices.min() < 0 or batch_indices.max() >= self.batch_size):
            raise IndexError(f"batch_indices must lie in [0, {self.batch_size}), got {batch_indices.tolist()}")
        for layer in range(self.n_layer):
            if self.keys[layer] is not None:
                self.keys[layer] = self.keys[layer][batch_indices]
                self.values[layer] = self.values[layer][batch_indices]
        self.batch_size = int(batch_indices.size)

    def reset(self) -> None:
        self.length = 0


# ---------------------------------------------------------------------------- attention
class MultiHeadAttention(Module):
    """Self- or cross-attention with separate q/k/v/o projections (see the module docstring).

    Arguments: embed_dim (model width), num_heads, num_kv_heads (default num_heads), bias,
    causal (mask future keys), rope (a RotaryEmbedding or None), kv_dim (width of the
    cross-attention source; default embed_dim), qkv_bias (biases on q/k/v only; default `bias`:
    Qwen2 has q/k/v biases and no output bias).
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: int | None = None, bias: bool = True,
                 causal: bool = False, rope: RotaryEmbedding | None = None, kv_dim: int | None = None,
                 qkv_bias: bool | None = None):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} must be a positive multiple of num_kv_heads {num_kv_heads}")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.causal = causal
        self.rope = rope
        kv_dim = embed_dim if kv_dim is None else kv_dim
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.q_proj = Linear(embed_dim, num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = Linear(kv_dim, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = Linear(kv_dim, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = Linear(num_heads * self.head_dim, embed_dim, bias=bias)
        self.extra_kv = None  # None or (keys, values), each (Hkv, P, D), prepended in every call (see above)
        self.window = None  # None (full attention) or the sliding window's width in positions (see above)

    def _split_heads(self, x, heads: int):
        batch, steps, _ = x.shape
        return x.reshape(batch, steps, heads, self.head_dim).transpose(0, 2, 1, 3)  # (B, heads, T, D)

    def forward(self, x, key_value_states=None, key_padding_mask=None, positions=None, cache: KVCache | None = None,
                layer_index: int = 0):
        """x (B, T, embed_dim) -> (B, T, embed_dim).

        key_value_states: (B, S, kv_dim) for cross-attention, None for self-attention.
        key_padding_mask: (B, S_total) bool, True = may attend, covering cached + new keys (not extra_kv).
        positions: (B, T) or (T,) integer positions of the new tokens (needed with RoPE).
        cache/layer_index: a KVCache to read and extend (self-attention only).
        """
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"attention input must be (B, T, {self.embed_dim}), got {x.shape}")
        batch, steps, _ = x.shape
        is_cross = key_value_states is not None
        source = key_value_states if is_cross else x
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if not is_cross and stacks_linears(projections, batch * steps):
            q, k, v = stacked_linear(x, projections)  # one product (nn/layers.py); slices of it
        else:
            q, k, v = self.q_proj(x), self.k_proj(source), self.v_proj(source)
        q = self._split_heads(q, self.num_heads)  # (B, H, T, D)
        k = self._split_heads(k, self.num_kv_heads)  # (B, Hkv, S, D)
        v = self._split_heads(v, self.num_kv_heads)  # (B, Hkv, S, D)
        if self.rope is not None and not is_cross:
            if positions is None:
                past = cache.length if cache is not None else 0
                positions = np.arange(past, past + steps)
            cos, sin = self.rope.cos_sin(positions, x.dtype)  # (B|1, 1, T, D/2)
            q = self.rope.rotate(q, cos, sin)
            k = self.rope.rotate(k, cos, sin)
        if cache is not None:
            if is_cross:
                raise ValueError("a KVCache is for self-attention; cross-attention recomputes from the encoder states")
            k, v = cache.extend(layer_index, k, v)  # (B, Hkv, past + T, D)
        if self.extra_kv is not None:
            k, v, key_padding_mask = self._prepend_extra_kv(k, v, key_padding_mask, batch)
        q_offset = k.shape[2] - steps if self.causal else 0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, key_padding_mask=key_padding_mask,
                                             q_offset=q_offset, window=self.window)  # (B, H, T, D)
        out = out.transpose(0, 2, 1, 3).reshape(batch, steps, self.num_heads * self.head_dim)  # (B, T, H*D)
        return self.o_proj(out)

    def _prepend_extra_kv(self, k, v, key_padding_mask, batch):
        """[extra keys ; k], [extra values ; v] and the padding mask widened by P always-attendable keys."""
        extra_k, extra_v = self.extra_kv
        extra_k = extra_k if isinstance(extra_k, Tensor) else Tensor(np.asarray(extra_k, dtype=k.dtype))
        extra_v = extra_v if isinstance(extra_v, Tensor) else Tensor(np.asarray(extra_v, dtype=v.dtype))
        expected = (self.num_kv_heads, extra_k.shape[1] if extra_k.ndim == 3 else -1, self.head_dim)
        if extra_k.shape != expected or extra_v.shape != expected:
            raise ValueError(
                f"extra_kv must be two tensors of shape (num_kv_heads={self.num_kv_heads}, P, "
                f"head_dim={self.head_dim}); got {extra_k.shape} and {extra_v.shape}"
            )
        n_extra = extra_k.shape[1]
        full_shape = (batch, self.num_kv_heads, n_extra, self.head_dim)
        extra_k = extra_k.unsqueeze(0).broadcast_to(full_shape)  # (B, Hkv, P, D)
        extra_v = extra_v.unsqueeze(0).broadcast_to(full_shape)  # (B, Hkv, P, D)
        k = ops.concatenate([extra_k, k], axis=2)  # (B, Hkv, P + S, D)
        v = ops.concatenate([extra_v, v], axis=2)  # (B, Hkv, P + S, D)
        if key_padding_mask is not None:
            always = np.ones((batch, n_extra), dtype=bool)  # (B, P)
            key_padding_mask = np.concatenate([always, np.asarray(key_padding_mask, dtype=bool)], axis=1)  # (B, P + S)
        return k, v, key_padding_mask

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"causal={self.causal}, rope={self.rope is not None}"
                + (f", window={self.window}" if self.window is not None else ""))
