"""Model size in closed form: parameter counts, FLOPs per token, and training memory.

Notation: d = n_embd, V = vocab_size, L = layers, f = feed-forward width (config.ffn_hidden),
d_kv = n_kv_head * head_dim (the key/value width; d_kv = d without GQA), b = 1 if biases else 0.

Parameters of one self-attention:  2 d^2 + 2 d d_kv + b_qkv (d + 2 d_kv) + b d   (q, o and k, v;
                                   b_qkv = b unless qkv_bias says otherwise)
Parameters of the MLP:             GELU 2 d f + b (f + d);   SwiGLU 3 d f + b (2 f + d)
A norm:                            LayerNorm d + b d;   RMSNorm d
GPT   = V d [+ block_size d learned positions] + L (2 norms + attention + MLP) + final norm [+ V d untied head]
BERT  = GPT's body (not causal; [+ 2 d embedding LayerNorm] [+ types d segment embeddings] [- the final
        norm when post-norm]) + MLM head (d^2 + d + LayerNorm 2d + V bias) + pooler (d^2 + d)
        + classifier (d num_labels + num_labels)
T5    = V d [+ 2 block_size d learned positions] + L_enc (2 norms + attention + MLP) + norm + L_dec (3 norms + 2 attentions + MLP) + norm [+ V d]

FLOPs per token (the Kaplan / Chinchilla convention, multiply-add = 2 FLOPs):
  N_mm = parameters that take part in a matrix product (every Linear weight, plus V d for the output
         head, tied or not; embedding lookups, biases and norms are not matrix products and are left out)
  forward  = 2 N_mm + 4 L T d_attn       (q k^T and p v: each 2 T d_attn per token and layer, d_attn = d)
  training = 3 x forward = 6 N_mm + 12 L T d_attn    (backward costs twice the forward)
  inference (one new token with a KV cache) = 2 N_mm + 4 L T d_attn with T the context length.
The attention term counts the full T x T score matrix (PaLM's convention), not the causal half.
T = seq_len (default block_size). For T5 a "token" is one encoder token plus one decoder token (equal
lengths T); the decoder adds its cross-attention term 4 L_dec T d.

Memory (bytes) for training with Adam/AdamW in float32: weights 4P, gradients 4P, two moments 8P;
activations are not included.
"""
from __future__ import annotations

from minifm.models.bert import BERTConfig
from minifm.models.gpt import GPTConfig
from minifm.models.t5 import T5Config


def _norm_params(kind: str, d: int, bias: bool) -> int:
    return d + (d if kind == "layernorm" and bias else 0)


def _attention_params(d: int, d_kv: int, bias: bool, qkv_bias: bool | None = None) -> int:
    qkv_bias = bias if qkv_bias is None else qkv_bias
    return 2 * d * d + 2 * d * d_kv + (d + 2 * d_kv if qkv_bias else 0) + (d if bias else 0)


def _mlp_params(kind: str, d: int, hidden: int, bias: bool) -> int:
    if kind == "swiglu":
        return 3 * d * hidden + (2 * hidden + d if bias else 0)
    return 2 * d * hidden + (hidden + d if bias else 0)


def _attention_matmul(d: int, d_kv: int) -> int:
    return 2 * d * d + 2 * d * d_kv


def _mlp_matmul(kind: str, d: int, hidden: int) -> int:
    return (3 if kind == "swiglu" else 2) * d * hidden


def _kv_width(config) -> int:
    return config.kv_heads * config.head_dim


def _block_params(config, norm_bias: bool, cross: bool = False) -> int:
    d, d_kv = config.n_embd, _kv_width(config)
    norms = 3 if cross else 2
    attentions = 2 if cross else 1
    attention = _attention_params(d, d_kv, config.bias, config.qkv_bias)
    return (norms * _norm_params(config.norm, d, norm_bias) + attentions * attention
            + _mlp_params(config.mlp, d, config.ffn_hidden, config.bias))


def param_count(config) -> int:
    """The exact number of parameters of the model built from `config` (GPT, BERT or T5)."""
    d, vocab = config.n_embd, config.vocab_size
    if isinstance(config, GPTConfig):
        total = vocab * d + (config.block_size * d if config.pos == "learned" else 0)
        total += config.n_layer * _block_params(config, config.bias)
        total += _norm_params(config.norm, d, config.bias)
        return total + (0 if config.tie_weights else vocab * d)
    if isinstance(config, BERTConfig):
        total = vocab * d + (config.block_size * d if config.pos == "learned" else 0)
        total += config.type_vocab_size * d  # segment embeddings
        total += config.n_layer * _block_params(config, config.bias)
        final_norms = (config.norm_position == "pre") + config.embedding_norm  # final norm, embedding norm
        total += final_norms * _norm_params(config.norm, d, config.bias)
        total += (d * d + d) + 2 * d + vocab  # MLM transform, its LayerNorm, output bias
        total += (d * d + d) + (d * config.num_labels + config.num_labels)  # pooler, classifier
        return total
    if isinstance(config, T5Config):
        total = vocab * d + (2 * config.block_size * d if config.pos == "learned" else 0)
        total += config.n_layer * _block_params(config, config.bias) + _norm_params(config.norm, d, config.bias)
        total += config.decoder_layers * _block_params(config, config.bias, cross=True)
        total += _norm_params(config.norm, d, config.bias)
        return total + (0 if config.tie_weights else vocab * d)
    raise TypeError(f"param_count needs a GPTConfig, BERTConfig or T5Config, got {type(config).__name__}")


def matmul_params(config) -> int:
    """N_mm: parameters used in matrix products per token (see the module docstring)."""
    d, d_kv, vocab = config.n_embd, _kv_width(config), config.vocab_size
    layer = _attention_matmul(d, d_kv) + _mlp_matmul(config.mlp, d, config.ffn_hidden)
    if isinstance(config, GPTConfig):
        return config.n_layer * layer + vocab * d
    if isinstance(config, BERTConfig):
        return config.n_layer * layer + d * d + vocab * d  # + MLM transform and decoder
    if isinstance(config, T5Config):
        decoder_layer = layer + _attention_matmul(d, d_kv)
        return config.n_layer * layer + config.decoder_layers * decoder_layer + vocab * d
    raise TypeError(f"matmul_params needs a GPTConfig, BERTConfig or T5Config, got {type(config).__name__}")


def flops_per_token(config, seq_len: int | None = None, training: bool = True) -> int:
    """Training (6 N_mm + 12 L T d) or forward/inference (2 N_mm + 4 L T d) FLOPs per token."""
    seq_len = config.block_size if seq_len is None else seq_len
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    d_attn = config.n_embd
    attention_layers = config.n_layer
    if isinstance(config, T5Config):
        attention_layers = config.n_layer + 2 * config.decoder_layers  # encoder self, decoder self + cross
    forward = 2 * matmul_params(config) + 4 * attention_layers * seq_len * d_attn
    return 3 * forward if training else forward


def memory_estimate(config, bytes_per_value: int = 4, optimizer: str = "adamw") -> dict:
    """Bytes for weights, gradients and optimizer state (Adam: 2 moments; SGD with momentum: 1)."""
    moments = {"adam": 2, "adamw": 2, "sgd": 1, "none": 0}
    if optimizer not in moments:
        raise ValueError(f"optimizer must be one of {list(moments)}, got {optimizer!r}")
    params = param_count(config)
    weights = params * bytes_per_value
    gradients = params * bytes_per_value
    state = moments[optimizer] * params * bytes_per_value
    return {"params": params, "weights": weights, "gradients": gradients, "optimizer_state": state,
            "total": weights + gradients + state}
