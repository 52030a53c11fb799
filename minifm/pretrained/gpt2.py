"""GPT-2 (GPT2LMHeadModel) as a minifm GPT.

GPT-2's block is minifm's default block: pre-norm LayerNorm with biases, learned absolute positions,
a 4x GELU MLP with biases and a tied output head. Two differences in how the checkpoint stores it:
- its projections are `Conv1D` layers whose weight is (in, out), the transpose of torch's Linear
  (out, in): every matrix row below has transpose=True;
- q, k and v are one fused projection `attn.c_attn` of width 3 * n_embd: the three rows that read it
  take parts 0, 1 and 2 of its output axis.
Its activation "gelu_new" is the tanh approximation of GELU (minifm's mlp="gelu_tanh"); "gelu" is the
exact one. Checkpoints name the body `transformer.` (saved from GPT2LMHeadModel) or nothing (the
original OpenAI conversion); both are read. The causal-mask buffers old checkpoints carry
(`attn.bias`, `attn.masked_bias`) are not weights and are ignored.

Config: n_positions -> block_size, n_embd, n_layer, n_head, n_inner (None = 4 n_embd) -> mlp_hidden,
layer_norm_epsilon -> norm_eps, activation_function -> mlp, tie_word_embeddings -> tie_weights.
"""
from __future__ import annotations

from collections.abc import Mapping

from minifm.pretrained.name_maps import Rule, check_supported, config_value, expand_rules

ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
NAME_ALIASES = (("transformer.", ""),)  # (prefix in the rows, prefix in older checkpoints)
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not weights
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}

MODEL_RULES = (
    # minifm name          Hugging Face name
    Rule("wte.weight", "transformer.wte.weight"),
    Rule("wpe.weight", "transformer.wpe.weight"),
    Rule("norm_f.weight", "transformer.ln_f.weight"),
    Rule("norm_f.bias", "transformer.ln_f.bias"),
    Rule("lm_head.weight", "lm_head.weight"),  # only when not tied
)

LAYER_RULES = (
    # minifm name (blocks.{i}.)      Hugging Face name (transformer.h.{i}.)     Conv1D transpose, fused part
    Rule("blocks.{i}.norm1.weight", "transformer.h.{i}.ln_1.weight"),
    Rule("blocks.{i}.norm1.bias", "transformer.h.{i}.ln_1.bias"),
    Rule("blocks.{i}.attn.q_proj.weight", "transformer.h.{i}.attn.c_attn.weight", transpose=True, part=0, parts=3),
    Rule("blocks.{i}.attn.k_proj.weight", "transformer.h.{i}.attn.c_attn.weight", transpose=True, part=1, parts=3),
    Rule("blocks.{i}.attn.v_proj.weight", "transformer.h.{i}.attn.c_attn.weight", transpose=True, part=2, parts=3),
    Rule("blocks.{i}.attn.q_proj.bias", "transformer.h.{i}.attn.c_attn.bias", part=0, parts=3),
    Rule("blocks.{i}.attn.k_proj.bias", "transformer.h.{i}.attn.c_attn.bias", part=1, parts=3),
    Rule("blocks.{i}.attn.v_proj.bias", "transformer.h.{i}.attn.c_attn.bias", part=2, parts=3),
    Rule("blocks.{i}.attn.o_proj.weight", "transformer.h.{i}.attn.c_proj.weight", transpose=True),
    Rule("blocks.{i}.attn.o_proj.bias", "transformer.h.{i}.attn.c_proj.bias"),
    Rule("blocks.{i}.norm2.weight", "transformer.h.{i}.ln_2.weight"),
    Rule("blocks.{i}.norm2.bias", "transformer.h.{i}.ln_2.bias"),
    Rule("blocks.{i}.mlp.fc_in.weight", "transformer.h.{i}.mlp.c_fc.weight", transpose=True),
    Rule("blocks.{i}.mlp.fc_in.bias", "transformer.h.{i}.mlp.c_fc.bias"),
    Rule("blocks.{i}.mlp.fc_out.weight", "transformer.h.{i}.mlp.c_proj.weight", transpose=True),
    Rule("blocks.{i}.mlp.fc_out.bias", "transformer.h.{i}.mlp.c_proj.bias"),
)


def rules(config: Mapping) -> list[Rule]:
    return expand_rules(MODEL_RULES, LAYER_RULES, config["n_layer"])


def config_from_hf(hf_config: Mapping) -> dict:
    """GPTConfig fields for a Hugging Face GPT-2 config.json (see the module docstring)."""
    check_supported(hf_config, "activation_function", ACTIVATIONS, "GELU, exact or tanh")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if hf_config.get(flag):
            raise ValueError(f"config.json: {flag}=true is not supported by minifm (supported: false)")
    n_embd = config_value(hf_config, "n_embd")
    return dict(
        vocab_size=config_value(hf_config, "vocab_size"),
        block_size=config_value(hf_config, "n_positions"),
        n_layer=config_value(hf_config, "n_layer"),
        n_head=config_value(hf_config, "n_head"),
        n_embd=n_embd, bias=True, pos="learned", norm="layernorm",
        mlp=ACTIVATIONS[hf_config["activation_function"]],
        tie_weights=bool(config_value(hf_config, "tie_word_embeddings", True)),
        mlp_hidden=config_value(hf_config, "n_inner", 4 * n_embd),
        norm_eps=float(config_value(hf_config, "layer_norm_epsilon", 1e-5)),
    )


def matches(config: Mapping) -> bool:
    """Whether a minifm GPTConfig has GPT-2's layout (learned positions, LayerNorm, GELU, biases, no GQA)."""
    return (config["pos"] == "learned" and config["norm"] == "layernorm" and config["mlp"] in ("gelu", "gelu_tanh")
            and config["bias"] and config.get("qkv_bias") in (None, True)
            and config["n_kv_head"] in (None, config["n_head"]))


def config_to_hf(config: Mapping) -> dict:
    """A Hugging Face GPT-2 config.json for a minifm GPT that `matches`."""
    return dict(
        architectures=["GPT2LMHeadModel"], model_type="gpt2",
        vocab_size=config["vocab_size"], n_positions=config["block_size"], n_embd=config["n_embd"],
        n_layer=config["n_layer"], n_head=config["n_head"], n_inner=config["mlp_hidden"],
        activation_function="gelu_new" if config["mlp"] == "gelu_tanh" else "gelu",
        layer_norm_epsilon=1e-5 if config["norm_eps"] is None else config["norm_eps"],
        tie_word_embeddings=config["tie_weights"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        dtype="float32",
    )
