"""PyTorch statements of the GPT / BERT / T5 math, written independently of minifm, used as test oracles.

Parameters come in as a dict name -> torch tensor (minifm's state_dict names), so gradients can be
compared name by name. Attention is written out (scores, masks, softmax, weighted sum) rather than
calling torch's fused kernel; GQA repeats each key/value head; RoPE rotates the two halves of each head.
Also imported by benchmarks/bench_train_step.py for the PyTorch side of the comparison.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as TF


def to_torch_params(state_dict: dict, requires_grad: bool = True) -> dict:
    return {name: torch.tensor(np.array(array), requires_grad=requires_grad) for name, array in state_dict.items()}


def linear(P, prefix, x):
    out = x @ P[prefix + ".weight"].T
    bias = P.get(prefix + ".bias")
    return out if bias is None else out + bias


def norm(P, prefix, x, kind, eps):
    weight = P[prefix + ".weight"]
    if kind == "layernorm":
        return TF.layer_norm(x, (x.shape[-1],), weight, P.get(prefix + ".bias"), 1e-5 if eps is None else eps)
    eps = 1e-6 if eps is None else eps
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def rope(x, positions, base):
    """x (B, H, T, D); positions (B, T) or (T,)."""
    dim = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    positions = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    if positions.ndim == 1:
        positions = positions[None]
    angles = positions[:, None, :, None] * inv_freq  # (B, 1, T, D/2)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    first, second = x[..., : dim // 2], x[..., dim // 2:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def attention(P, prefix, x, n_head, n_kv_head, causal, positions=None, rope_base=None, key_mask=None, source=None,
              extra_kv=None, past_len=0):
    batch, steps, width = x.shape
    head_dim = width // n_head
    source = x if source is None else source
    q = linear(P, prefix + ".q_proj", x).view(batch, steps, n_head, head_dim).transpose(1, 2)
    k = linear(P, prefix + ".k_proj", source).view(batch, source.shape[1], n_kv_head, head_dim).transpose(1, 2)
    v = linear(P, prefix + ".v_proj", source).view(batch, source.shape[1], n_kv_head, head_dim).transpose(1, 2)
    if rope_base is not None:
        q, k = rope(q, positions, rope_base), rope(k, positions, rope_base)
    allowed = torch.ones(batch, 1, steps, k.shape[2], dtype=torch.bool)
    if causal:
        allowed = allowed & torch.tril(torch.ones(steps, k.shape[2], dtype=torch.bool))
    if key_mask is not None:
        allowed = allowed & torch.as_tensor(np.asarray(key_mask, dtype=bool))[:, None, None, :]
    if extra_kv is not None:
        pk, pv = extra_kv
        n_prefix = pk.shape[1]
        k = torch.cat([pk[None].expand(batch, -1, -1, -1), k], dim=2)
        v = torch.cat([pv[None].expand(batch, -1, -1, -1), v], dim=2)
        allowed = torch.cat([torch.ones(batch, 1, steps, n_prefix, dtype=torch.bool), allowed.expand(batch, 1, -1, -1)], -1)
    groups = n_head // n_kv_head
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.where(allowed.any(-1, keepdim=True), probs, torch.zeros_like(probs))  # fully masked rows -> 0
    out = (probs @ v).transpose(1, 2).reshape(batch, steps, n_head * head_dim)
    return linear(P, prefix + ".o_proj", out)


def mlp(P, prefix, x, kind):
    if kind == "swiglu":
        return linear(P, prefix + ".down_proj", TF.silu(linear(P, prefix + ".gate_proj", x)) * linear(P, prefix + ".up_proj", x))
    return linear(P, prefix + ".fc_out", TF.gelu(linear(P, prefix + ".fc_in", x)))


def block(P, prefix, x, cfg, causal, positions, key_mask, rope_base, encoder=None, encoder_mask=None, extra_kvs=None):
    n_kv = cfg.n_head if cfg.n_kv_head is None else cfg.n_kv_head
    extra_kv = None if extra_kvs is None else extra_kvs.get(prefix)
    x = x + attention(P, prefix + ".attn", norm(P, prefix + ".norm1", x, cfg.norm, cfg.norm_eps), cfg.n_head, n_kv,
                      causal, positions, rope_base, key_mask, extra_kv=extra_kv)
    if encoder is not None:
        x = x + attention(P, prefix + ".cross_attn", norm(P, prefix + ".norm_cross", x, cfg.norm, cfg.norm_eps),
                          cfg.n_head, n_kv, False, key_mask=encoder_mask, source=encoder)
    return x + mlp(P, prefix + ".mlp", norm(P, prefix + ".norm2", x, cfg.norm, cfg.norm_eps), cfg.mlp)


def gpt_forward(P, cfg, ids, attention_mask=None, inputs_embeds=None, extra_kvs=None):
    """Logits (B, T, V) and final hidden states of a GPT with parameters P."""
    x = P["wte.weight"][torch.as_tensor(ids)] if inputs_embeds is None else inputs_embeds
    steps = x.shape[1]
    if attention_mask is None:
        positions = np.arange(steps)
    else:
        positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
    if cfg.pos == "learned":
        x = x + P["wpe.weight"][torch.as_tensor(positions)]
    rope_base = cfg.rope_base if cfg.pos == "rope" else None
    for layer in range(cfg.n_layer):
        x = block(P, f"blocks.{layer}", x, cfg, True, positions, attention_mask, rope_base, extra_kvs=extra_kvs)
    hidden = norm(P, "norm_f", x, cfg.norm, cfg.norm_eps)
    head = P["wte.weight"] if cfg.tie_weights else P["lm_head.weight"]
    return hidden @ head.T, hidden


def bert_forward(P, cfg, ids, attention_mask=None):
    """(hidden (B, T, d), mlm logits (B, T, V), class logits (B, num_labels))."""
    steps = ids.shape[1]
    positions = np.arange(steps)
    x = P["wte.weight"][torch.as_tensor(ids)]
    if cfg.pos == "learned":
        x = x + P["wpe.weight"][torch.as_tensor(positions)]
    rope_base = cfg.rope_base if cfg.pos == "rope" else None
    for layer in range(cfg.n_layer):
        x = block(P, f"blocks.{layer}", x, cfg, False, positions, attention_mask, rope_base)
    hidden = norm(P, "norm_f", x, cfg.norm, cfg.norm_eps)
    transformed = TF.layer_norm(TF.gelu(linear(P, "mlm_dense", hidden)), (hidden.shape[-1],), P["mlm_norm.weight"],
                                P["mlm_norm.bias"], 1e-5)
    mlm = transformed @ P["wte.weight"].T + P["mlm_bias"]
    classes = linear(P, "classifier", torch.tanh(linear(P, "pooler", hidden[:, 0])))
    return hidden, mlm, classes


def t5_forward(P, cfg, ids, decoder_ids, attention_mask=None):
    """Decoder logits (B, T, V) of a T5 with parameters P."""
    rope_base = cfg.rope_base if cfg.pos == "rope" else None
    enc_positions = np.arange(ids.shape[1])
    x = P["shared.weight"][torch.as_tensor(ids)]
    if cfg.pos == "learned":
        x = x + P["encoder_wpe.weight"][torch.as_tensor(enc_positions)]
    for layer in range(cfg.n_layer):
        x = block(P, f"encoder_blocks.{layer}", x, cfg, False, enc_positions, attention_mask, rope_base)
    encoder = norm(P, "encoder_norm", x, cfg.norm, cfg.norm_eps)
    dec_positions = np.arange(decoder_ids.shape[1])
    y = P["shared.weight"][torch.as_tensor(decoder_ids)]
    if cfg.pos == "learned":
        y = y + P["decoder_wpe.weight"][torch.as_tensor(dec_positions)]
    for layer in range(cfg.decoder_layers):
        y = block(P, f"decoder_blocks.{layer}", y, cfg, True, dec_positions, None, rope_base, encoder=encoder,
                  encoder_mask=attention_mask)
    hidden = norm(P, "decoder_norm", y, cfg.norm, cfg.norm_eps)
    head = P["shared.weight"] if cfg.tie_weights else P["lm_head.weight"]
    return hidden @ head.T
