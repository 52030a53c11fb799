"""The pre-norm transformer block shared by GPT, BERT and T5.

    x = x + dropout(attn(norm1(x)))                          self-attention (causal or not)
    x = x + dropout(cross_attn(norm_cross(x), encoder))      only in T5's decoder blocks
    x = x + dropout(mlp(norm2(x)))

Pre-norm (normalise the input of each sub-layer, keep the residual stream un-normalised) is
GPT-2's and most modern models' choice; the models put one final norm after the last block.
"""
from __future__ import annotations

from minifm.nn.attention import KVCache, MultiHeadAttention, RotaryEmbedding
from minifm.nn.layers import Dropout, make_norm
from minifm.nn.mlp import make_mlp
from minifm.nn.module import Module


class TransformerBlock(Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, mlp_hidden: int | None = None,
                 bias: bool = True, norm: str = "layernorm", mlp: str = "gelu", dropout: float = 0.0,
                 causal: bool = True, cross_attention: bool = False, rope: RotaryEmbedding | None = None,
                 norm_eps: float | None = None):
        super().__init__()
        mlp_hidden = 4 * dim if mlp_hidden is None else mlp_hidden
        self.norm1 = make_norm(norm, dim, norm_eps, bias)
        self.attn = MultiHeadAttention(dim, num_heads, num_kv_heads, bias=bias, causal=causal, rope=rope)
        if cross_attention:
            self.norm_cross = make_norm(norm, dim, norm_eps, bias)
            self.cross_attn = MultiHeadAttention(dim, num_heads, num_kv_heads, bias=bias, causal=False)
        self.has_cross_attention = cross_attention
        self.norm2 = make_norm(norm, dim, norm_eps, bias)
        self.mlp = make_mlp(mlp, dim, mlp_hidden, bias)
        self.dropout = Dropout(dropout)

    def forward(self, x, positions=None, key_padding_mask=None, cache: KVCache | None = None, layer_index: int = 0,
                encoder_hidden=None, encoder_mask=None):
        """x (B, T, dim) -> (B, T, dim); encoder_hidden (B, S, dim) and encoder_mask (B, S) for cross-attention."""
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
