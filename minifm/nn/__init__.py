"""Neural-network building blocks with PyTorch's names.

    module.py     Module, Parameter, ModuleList, ModuleDict, Sequential
    layers.py     Linear, Embedding, LayerNorm, RMSNorm, Dropout
    mlp.py        MLP (GELU), SwiGLU
    attention.py  MultiHeadAttention (MHA/GQA/MQA, self/cross, causal), RotaryEmbedding, KVCache
    block.py      TransformerBlock (pre-norm)
    init.py       initialisers and manual_seed
"""
from minifm.nn import init
from minifm.nn.attention import KVCache, MultiHeadAttention, RotaryEmbedding
from minifm.nn.block import TransformerBlock
from minifm.nn.init import manual_seed
from minifm.nn.layers import Dropout, Embedding, LayerNorm, Linear, RMSNorm
from minifm.nn.mlp import MLP, SwiGLU
from minifm.nn.module import Module, ModuleDict, ModuleList, Parameter, Sequential

__all__ = [
    "Dropout", "Embedding", "KVCache", "LayerNorm", "Linear", "MLP", "Module", "ModuleDict", "ModuleList",
    "MultiHeadAttention", "Parameter", "RMSNorm", "RotaryEmbedding", "Sequential", "SwiGLU", "TransformerBlock",
    "init", "manual_seed",
]
