"""The Llama family (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM) as a minifm GPT.

A Llama block is minifm's pre-norm block with RMSNorm, RoPE ("rotate half" layout, as minifm's),
grouped-query attention and a SwiGLU MLP, no biases; Qwen2 adds biases to q/k/v only (qkv_bias);
Mistral is Llama with a sliding attention window. SmolLM2 and TinyLlama are plain Llamas.

Config: Hugging Face key -> GPTConfig field
    vocab_size -> vocab_size                  max_position_embeddings -> block_size
    num_hidden_layers -> n_layer              num_attention_heads -> n_head
    hidden_size -> n_embd                     num_key_value_heads -> n_kv_head
    intermediate_size -> mlp_hidden           rms_norm_eps -> norm_eps
    rope_theta (or rope_parameters.rope_theta) -> rope_base
    tie_word_embeddings -> tie_weights        attention_bias and mlp_bias -> bias
plus the fixed choices pos="rope", norm="rmsnorm", mlp="swiglu".

Simplifications, checked rather than ignored: only the default RoPE (no rope scaling: Llama 3.1's
"llama3" and YaRN scaling raise an error); hidden_act must be "silu"; head_dim must be
hidden_size / num_attention_heads. Mistral's sliding window is not applied: outputs equal the
reference for sequences up to the window (4096 for Mistral 7B), which is all minifm generates here.
"""
from __future__ import annotations

from collections.abc import Mapping

from minifm.pretrained.name_maps import Rule, check_supported, config_value, expand_rules

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
NAME_ALIASES = ()  # (prefix in the rows, prefix in other checkpoints): Llama checkpoints all use "model."
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)  # a RoPE table some old checkpoints saved: not a weight
MODEL_TYPES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}

MODEL_RULES = (
    # minifm name               Hugging Face name
    Rule("wte.weight", "model.embed_tokens.weight"),
    Rule("norm_f.weight", "model.norm.weight"),
    Rule("lm_head.weight", "lm_head.weight"),  # only when the output head is not tied to the embedding
)

LAYER_RULES = (
    # minifm name (blocks.{i}.)        Hugging Face name (model.layers.{i}.)
    Rule("blocks.{i}.norm1.weight", "model.layers.{i}.input_layernorm.weight"),
    Rule("blocks.{i}.attn.q_proj.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    Rule("blocks.{i}.attn.k_proj.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    Rule("blocks.{i}.attn.v_proj.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    Rule("blocks.{i}.attn.o_proj.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    Rule("blocks.{i}.attn.q_proj.bias", "model.layers.{i}.self_attn.q_proj.bias"),  # Qwen2, attention_bias
    Rule("blocks.{i}.attn.k_proj.bias", "model.layers.{i}.self_attn.k_proj.bias"),
    Rule("blocks.{i}.attn.v_proj.bias", "model.layers.{i}.self_attn.v_proj.bias"),
    Rule("blocks.{i}.attn.o_proj.bias", "model.layers.{i}.self_attn.o_proj.bias"),  # attention_bias only
    Rule("blocks.{i}.norm2.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    Rule("blocks.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    Rule("blocks.{i}.mlp.up_proj.weight", "model.layers.{i}.mlp.up_proj.weight"),
    Rule("blocks.{i}.mlp.down_proj.weight", "model.layers.{i}.mlp.down_proj.weight"),
    Rule("blocks.{i}.mlp.gate_proj.bias", "model.layers.{i}.mlp.gate_proj.bias"),  # mlp_bias only
    Rule("blocks.{i}.mlp.up_proj.bias", "model.layers.{i}.mlp.up_proj.bias"),
    Rule("blocks.{i}.mlp.down_proj.bias", "model.layers.{i}.mlp.down_proj.bias"),
)


def rules(config: Mapping) -> list[Rule]:
    """Every weight row for a model of this (minifm) config; the model's state dict decides which apply."""
    return expand_rules(MODEL_RULES, LAYER_RULES, config["n_layer"])


def rope_theta(hf_config: Mapping) -> float:
    """RoPE's base from either spelling (transformers 5's rope_parameters or the older rope_theta)."""
    parameters = hf_config.get("rope_parameters") or {}
    scaling = hf_config.get("rope_scaling") or {}
    rope_type = parameters.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type != "default":
        raise ValueError(f"config.json: rope_type={rope_type!r} (RoPE scaling) is not supported by minifm "
                         f"(supported: ['default'])")
    return float(parameters.get("rope_theta", hf_config.get("rope_theta", 10000.0)))


def config_from_hf(hf_config: Mapping) -> dict:
    """GPTConfig fields for a Hugging Face Llama/Mistral/Qwen2 config.json (see the module docstring)."""
    check_supported(hf_config, "hidden_act", ("silu",), "SwiGLU with SiLU")
    architecture = hf_config["architectures"][0]
    n_embd = config_value(hf_config, "hidden_size")
    n_head = config_value(hf_config, "num_attention_heads")
    head_dim = hf_config.get("head_dim") or n_embd // n_head
    if head_dim * n_head != n_embd:
        raise ValueError(f"config.json: head_dim={head_dim} with {n_head} heads does not equal hidden_size "
                         f"{n_embd}; minifm needs head_dim = hidden_size / num_attention_heads")
    attention_bias = bool(hf_config.get("attention_bias", False))
    mlp_bias = bool(hf_config.get("mlp_bias", False))
    if attention_bias != mlp_bias:
        raise ValueError(f"config.json: attention_bias={attention_bias} with mlp_bias={mlp_bias} is not "
                         f"supported by minifm (its `bias` covers both)")
    return dict(
        vocab_size=config_value(hf_config, "vocab_size"),
        block_size=config_value(hf_config, "max_position_embeddings"),
        n_layer=config_value(hf_config, "num_hidden_layers"),
        n_head=n_head,
        n_embd=n_embd,
        n_kv_head=config_value(hf_config, "num_key_value_heads", n_head),
        bias=attention_bias,
        qkv_bias=True if architecture == "Qwen2ForCausalLM" else None,
        pos="rope", norm="rmsnorm", mlp="swiglu",
        tie_weights=bool(config_value(hf_config, "tie_word_embeddings", False)),
        mlp_hidden=config_value(hf_config, "intermediate_size"),
        rope_base=rope_theta(hf_config),
        norm_eps=float(config_value(hf_config, "rms_norm_eps", 1e-6)),
    )


def matches(config: Mapping) -> bool:
    """Whether a minifm GPTConfig is a Llama (or Qwen2): RoPE, RMSNorm, SwiGLU."""
    return config["pos"] == "rope" and config["norm"] == "rmsnorm" and config["mlp"] == "swiglu"


def config_to_hf(config: Mapping) -> dict:
    """A Hugging Face config.json for a minifm GPT that `matches` (Qwen2 when only q/k/v have biases)."""
    is_qwen2 = bool(config.get("qkv_bias")) and not config["bias"]
    architecture = "Qwen2ForCausalLM" if is_qwen2 else "LlamaForCausalLM"
    n_head = config["n_head"]
    hf = dict(
        architectures=[architecture], model_type=MODEL_TYPES[architecture],
        vocab_size=config["vocab_size"], max_position_embeddings=config["block_size"],
        num_hidden_layers=config["n_layer"], num_attention_heads=n_head,
        num_key_value_heads=config["n_kv_head"] or n_head, hidden_size=config["n_embd"],
        head_dim=config["n_embd"] // n_head, intermediate_size=config["mlp_hidden"], hidden_act="silu",
        rms_norm_eps=1e-6 if config["norm_eps"] is None else config["norm_eps"],
        rope_theta=config["rope_base"], tie_word_embeddings=config["tie_weights"], dtype="float32",
    )
    if not is_qwen2:
        hf.update(attention_bias=config["bias"], mlp_bias=config["bias"])
    return hf
