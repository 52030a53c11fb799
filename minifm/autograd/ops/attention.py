"""Scaled dot-product attention as one Function over (B, H, T, D) arrays: `FlashAttention`.

Causal and key-padding masks go to the flash-style kernel (minifm.kernels.attention, whose
docstring states the math and whose NumPy reference is the oracle), which keeps only the per-row
log-sum-exp and recomputes scores in backward. An arbitrary `attn_mask` takes the materialised
path in minifm.functional.scaled_dot_product_attention instead, composed of differentiable ops.
"""
from __future__ import annotations

from minifm.autograd.function import Function
from minifm.kernels import attention as kernels


class FlashAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, scale=None, causal=False, q_offset=0, key_mask=None):
        # the heads usually arrive as transposed views of (B, T, H, D) projections; the compiled
        # kernel reads them in place (minifm.kernels.attention), so nothing is copied here
        out, lse = kernels.attention_forward(q, k, v, scale=scale, causal=causal, q_offset=q_offset, key_mask=key_mask)
        ctx.saved = (q, k, v, out, lse)
        ctx.options = dict(scale=scale, causal=causal, q_offset=q_offset, key_mask=key_mask)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved
        dq, dk, dv = kernels.attention_backward(q, k, v, out, lse, grad, **ctx.options)
        return dq, dk, dv
