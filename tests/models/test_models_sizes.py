"""The closed-form sizes equal the real models, and the FLOP formula is consistent with the model's matrices."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minifm.models import BERT, GPT, T5, BERTConfig, GPTConfig, T5Config, sizes
from minifm.nn import Linear


@st.composite
def shapes(draw):
    n_kv_head = draw(st.sampled_from([1, 2, 4]))
    n_head = n_kv_head * draw(st.sampled_from([1, 2]))
    head_dim = draw(st.sampled_from([2, 4]))
    return dict(vocab_size=draw(st.integers(2, 40)), block_size=draw(st.integers(1, 20)),
                n_layer=draw(st.integers(1, 3)), n_head=n_head, n_embd=n_head * head_dim,
                n_kv_head=draw(st.sampled_from([None, n_kv_head])), bias=draw(st.booleans()),
                norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
                mlp=draw(st.sampled_from(["gelu", "gelu_tanh", "swiglu"])),
                mlp_ratio=draw(st.sampled_from([1.0, 2.0, 4.0])))


@settings(max_examples=25)
@given(shapes(), st.sampled_from(["learned", "rope"]), st.booleans(), st.sampled_from([None, False, True]))
def test_gpt_param_count_equals_real_count(shape, pos, tie, qkv_bias):
    config = GPTConfig(**shape, pos=pos, tie_weights=tie, qkv_bias=qkv_bias)
    assert sizes.param_count(config) == GPT(config).num_parameters()


@settings(max_examples=15)
@given(shapes(), st.sampled_from(["learned", "rope"]), st.integers(1, 5), st.sampled_from(["pre", "post"]),
       st.integers(0, 3), st.booleans())
def test_bert_param_count_equals_real_count(shape, pos, labels, norm_position, type_vocab_size, embedding_norm):
    config = BERTConfig(**shape, pos=pos, num_labels=labels, norm_position=norm_position,
                        type_vocab_size=type_vocab_size, embedding_norm=embedding_norm)
    assert sizes.param_count(config) == BERT(config).num_parameters()


@settings(max_examples=15)
@given(shapes(), st.sampled_from(["learned", "rope"]), st.booleans(), st.sampled_from([None, 1, 2]))
def test_t5_param_count_equals_real_count(shape, pos, tie, decoder_layers):
    config = T5Config(**shape, pos=pos, tie_weights=tie, n_decoder_layer=decoder_layers)
    assert sizes.param_count(config) == T5(config).num_parameters()


def linear_weights(model) -> int:
    return sum(module.weight.size for module in model.modules() if isinstance(module, Linear))


@settings(max_examples=15)
@given(shapes(), st.booleans())
def test_matmul_params_are_the_linear_weights_plus_output_head(shape, tie):
    gpt_config = GPTConfig(**shape, tie_weights=tie)
    gpt = GPT(gpt_config)
    head = gpt_config.vocab_size * gpt_config.n_embd
    assert sizes.matmul_params(gpt_config) == linear_weights(gpt) + (head if tie else 0)
    t5_config = T5Config(**shape, tie_weights=tie)
    assert sizes.matmul_params(t5_config) == linear_weights(T5(t5_config)) + (head if tie else 0)
    bert_config = BERTConfig(**shape)  # the pooler and classifier are not run per token
    bert = BERT(bert_config)
    assert sizes.matmul_params(bert_config) == linear_weights(bert) + head - bert.pooler.weight.size \
        - bert.classifier.weight.size


def test_flops_formula():
    config = GPTConfig(vocab_size=1000, block_size=128, n_layer=4, n_head=4, n_embd=64)
    n_mm = sizes.matmul_params(config)
    attention = 4 * config.n_layer * 128 * config.n_embd
    assert sizes.flops_per_token(config, training=False) == 2 * n_mm + attention
    assert sizes.flops_per_token(config) == 3 * (2 * n_mm + attention) == 6 * n_mm + 12 * 4 * 128 * 64
    assert sizes.flops_per_token(config, seq_len=64) < sizes.flops_per_token(config)


def test_memory_estimate():
    config = GPTConfig(vocab_size=100, block_size=16, n_layer=1, n_head=2, n_embd=8)
    memory = sizes.memory_estimate(config)
    n = sizes.param_count(config)
    assert memory["total"] == 16 * n and memory["optimizer_state"] == 8 * n
    assert sizes.memory_estimate(config, optimizer="sgd")["total"] == 12 * n
    assert np.isclose(sizes.memory_estimate(config, bytes_per_value=8)["weights"], 8 * n)
