"""BERT (BertModel and the BERT heads) as a minifm BERT in the original layout.

The original BERT differs from minifm's default BERT in three ways, each a BERTConfig option of
minifm's own modules: post-norm blocks (norm_position="post"), segment embeddings
(type_vocab_size, usually 2) and a LayerNorm after the summed embeddings (embedding_norm=True).
Its GELU is the exact one ("gelu") and its LayerNorm eps 1e-12.

Names: a BertModel checkpoint names the body `embeddings.`, `encoder.`, `pooler.`; the task models
(BertForMaskedLM, ...) put it under `bert.` and add `cls.predictions.` (the masked-LM head). Both are
read. The pooler and the masked-LM head are optional: a checkpoint without them (all-MiniLM-L6-v2 has
no MLM head) leaves those minifm parameters at their initial values, as transformers does. The
classifier is never in a BertModel checkpoint. `embeddings.position_ids` is a buffer, not a weight.

Config: vocab_size, max_position_embeddings -> block_size, num_hidden_layers -> n_layer,
num_attention_heads -> n_head, hidden_size -> n_embd, intermediate_size -> mlp_hidden,
hidden_act -> mlp, layer_norm_eps -> norm_eps, type_vocab_size.
Simplification: only absolute position embeddings (position_embedding_type "absolute").
"""
from __future__ import annotations

from collections.abc import Mapping

from minifm.pretrained.name_maps import Rule, check_supported, config_value, expand_rules

ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification")
NAME_ALIASES = (("embeddings.", "bert.embeddings."), ("encoder.", "bert.encoder."), ("pooler.", "bert.pooler."))
IGNORED_SUFFIXES = ("embeddings.position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                    "cls.seq_relationship.weight", "cls.seq_relationship.bias")
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh"}

MODEL_RULES = (
    # minifm name          Hugging Face name
    Rule("wte.weight", "embeddings.word_embeddings.weight"),
    Rule("wpe.weight", "embeddings.position_embeddings.weight"),
    Rule("wtt.weight", "embeddings.token_type_embeddings.weight"),
    Rule("emb_norm.weight", "embeddings.LayerNorm.weight"),
    Rule("emb_norm.bias", "embeddings.LayerNorm.bias"),
    Rule("pooler.weight", "pooler.dense.weight", optional=True),
    Rule("pooler.bias", "pooler.dense.bias", optional=True),
    Rule("mlm_dense.weight", "cls.predictions.transform.dense.weight", optional=True),
    Rule("mlm_dense.bias", "cls.predictions.transform.dense.bias", optional=True),
    Rule("mlm_norm.weight", "cls.predictions.transform.LayerNorm.weight", optional=True),
    Rule("mlm_norm.bias", "cls.predictions.transform.LayerNorm.bias", optional=True),
    Rule("mlm_bias", "cls.predictions.bias", optional=True),  # the decoder's weight is tied to wte
)

LAYER_RULES = (
    # minifm name (blocks.{i}.)          Hugging Face name (encoder.layer.{i}.)
    Rule("blocks.{i}.attn.q_proj.weight", "encoder.layer.{i}.attention.self.query.weight"),
    Rule("blocks.{i}.attn.q_proj.bias", "encoder.layer.{i}.attention.self.query.bias"),
    Rule("blocks.{i}.attn.k_proj.weight", "encoder.layer.{i}.attention.self.key.weight"),
    Rule("blocks.{i}.attn.k_proj.bias", "encoder.layer.{i}.attention.self.key.bias"),
    Rule("blocks.{i}.attn.v_proj.weight", "encoder.layer.{i}.attention.self.value.weight"),
    Rule("blocks.{i}.attn.v_proj.bias", "encoder.layer.{i}.attention.self.value.bias"),
    Rule("blocks.{i}.attn.o_proj.weight", "encoder.layer.{i}.attention.output.dense.weight"),
    Rule("blocks.{i}.attn.o_proj.bias", "encoder.layer.{i}.attention.output.dense.bias"),
    Rule("blocks.{i}.norm1.weight", "encoder.layer.{i}.attention.output.LayerNorm.weight"),
    Rule("blocks.{i}.norm1.bias", "encoder.layer.{i}.attention.output.LayerNorm.bias"),
    Rule("blocks.{i}.mlp.fc_in.weight", "encoder.layer.{i}.intermediate.dense.weight"),
    Rule("blocks.{i}.mlp.fc_in.bias", "encoder.layer.{i}.intermediate.dense.bias"),
    Rule("blocks.{i}.mlp.fc_out.weight", "encoder.layer.{i}.output.dense.weight"),
    Rule("blocks.{i}.mlp.fc_out.bias", "encoder.layer.{i}.output.dense.bias"),
    Rule("blocks.{i}.norm2.weight", "encoder.layer.{i}.output.LayerNorm.weight"),
    Rule("blocks.{i}.norm2.bias", "encoder.layer.{i}.output.LayerNorm.bias"),
)


def rules(config: Mapping) -> list[Rule]:
    return expand_rules(MODEL_RULES, LAYER_RULES, config["n_layer"])


def config_from_hf(hf_config: Mapping) -> dict:
    """BERTConfig fields for a Hugging Face BERT config.json (see the module docstring)."""
    check_supported(hf_config, "hidden_act", ACTIVATIONS, "GELU, exact or tanh")
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        check_supported(hf_config, "position_embedding_type", ("absolute",), "learned absolute positions")
    labels = hf_config.get("id2label") or {}
    return dict(
        vocab_size=config_value(hf_config, "vocab_size"),
        block_size=config_value(hf_config, "max_position_embeddings"),
        n_layer=config_value(hf_config, "num_hidden_layers"),
        n_head=config_value(hf_config, "num_attention_heads"),
        n_embd=config_value(hf_config, "hidden_size"),
        mlp_hidden=config_value(hf_config, "intermediate_size"),
        mlp=ACTIVATIONS[hf_config["hidden_act"]],
        norm_eps=float(config_value(hf_config, "layer_norm_eps", 1e-12)),
        type_vocab_size=config_value(hf_config, "type_vocab_size", 2),
        num_labels=max(len(labels), 2),
        bias=True, pos="learned", norm="layernorm", norm_position="post", embedding_norm=True,
    )


def matches(config: Mapping) -> bool:
    """Whether a minifm BERTConfig has the original BERT's layout, which BertModel can hold."""
    return (config.get("norm_position") == "post" and config.get("embedding_norm") and config["bias"]
            and config["pos"] == "learned" and config["norm"] == "layernorm" and config["mlp"] in ACTIVATIONS.values()
            and config["n_kv_head"] in (None, config["n_head"]) and config.get("type_vocab_size", 0) > 0)


def config_to_hf(config: Mapping) -> dict:
    return dict(
        architectures=["BertForMaskedLM"], model_type="bert",
        vocab_size=config["vocab_size"], max_position_embeddings=config["block_size"],
        num_hidden_layers=config["n_layer"], num_attention_heads=config["n_head"], hidden_size=config["n_embd"],
        intermediate_size=config["mlp_hidden"],
        hidden_act="gelu_new" if config["mlp"] == "gelu_tanh" else "gelu",
        layer_norm_eps=1e-12 if config["norm_eps"] is None else config["norm_eps"],
        type_vocab_size=config["type_vocab_size"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        dtype="float32",
    )
