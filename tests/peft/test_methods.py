"""Bottleneck adapters, IA3, prompt tuning, prefix tuning — and properties every method shares."""
import argparse

import numpy as np
import pytest

import minifm as mf
from minifm.cli.peft_options import add_peft_arguments, apply_peft_from_args
from minifm.nn import MultiHeadAttention
from minifm.optim import AdamW
from minifm.peft import (
    AdapterConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model,
)
from minifm.peft.adapters import Bottleneck, adapter_parameter_count
from minifm.peft.ia3 import IA3Linear, ia3_parameter_count
from minifm.peft.prefix_tuning import PrefixEncoder, prefix_parameter_count
from minifm.peft.prompt_tuning import prompt_tuning_parameter_count
from peft_testing import check_parameter_gradients, perturb_trainable, random_ids, tiny_gpt

ALL_METHODS = {
    "lora": lambda: LoraConfig(r=2, target_modules="all-linear"),
    "adapter": lambda: AdapterConfig(reduction_factor=4),
    "prompt": lambda: PromptTuningConfig(num_virtual_tokens=3),
    "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=2),
    "prefix_mlp": lambda: PrefixTuningConfig(num_virtual_tokens=2, prefix_projection=True, encoder_hidden_size=5),
    "ia3": lambda: IA3Config(),
}


@pytest.mark.parametrize("method", ["lora", "adapter", "ia3"])
def test_zero_initialised_methods_leave_outputs_unchanged(rng, method):
    model = tiny_gpt(mlp="swiglu", n_kv_head=2, dtype="float32")
    ids = random_ids(rng, 2, 8)
    before = model(ids).data.copy()
    peft_model = get_peft_model(model, ALL_METHODS[method]())
    np.testing.assert_array_equal(peft_model(ids).data, before)


def test_parameter_counts_equal_closed_forms():
    d, n_layer, kv_heads, head_dim, hidden = 16, 2, 2, 4, 24
    kv_dim = kv_heads * head_dim
    options = dict(mlp="swiglu", n_kv_head=kv_heads, mlp_hidden=hidden)
    counts = {}
    for method, make in ALL_METHODS.items():
        counts[method] = get_peft_model(tiny_gpt(**options), make()).get_nb_trainable_parameters()[0]
    assert counts["adapter"] == n_layer * 2 * adapter_parameter_count(d, 4) == n_layer * 2 * (2 * d * 4 + 4 + d)
    ia3_per_layer = 2 * ia3_parameter_count(d, kv_dim, False) + ia3_parameter_count(hidden, d, True)
    assert counts["ia3"] == n_layer * ia3_per_layer == n_layer * (kv_dim + kv_dim + hidden)  # k, v out; down_proj in
    assert counts["prompt"] == prompt_tuning_parameter_count(3, d) == 3 * d
    shapes = [(kv_heads, head_dim)] * n_layer
    assert counts["prefix"] == prefix_parameter_count(2, shapes, d, False) == 2 * n_layer * 2 * kv_dim
    columns = n_layer * 2 * kv_dim
    assert counts["prefix_mlp"] == prefix_parameter_count(2, shapes, d, True, 5) == 2 * d + d * 5 + 5 + 5 * columns + columns


@pytest.mark.parametrize("method", sorted(ALL_METHODS))
def test_gradients_of_method_parameters_match_finite_differences(rng, method):
    model = tiny_gpt(n_layer=1, n_embd=8, n_head=2, block_size=12)
    peft_model = get_peft_model(model, ALL_METHODS[method]())
    perturb_trainable(peft_model, rng, scale=0.2)
    ids = random_ids(rng, 2, 4)
    targets = random_ids(rng, 2, 4)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    check_parameter_gradients(lambda: peft_model.loss(ids, targets), params, max_entries=5)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_bottleneck_and_ia3_layers_gradcheck(rng):
    bottleneck = Bottleneck(6, 2, "gelu", rng=rng, dtype=np.float64)
    perturb_trainable(bottleneck, rng)
    x = mf.tensor(rng.standard_normal((3, 6)), dtype=np.float64)
    projection = rng.standard_normal((3, 6))
    check_parameter_gradients(lambda: (bottleneck(x) * projection).sum(), list(bottleneck.parameters()))
    for feedforward in (False, True):
        from minifm.nn import Linear
        layer = IA3Linear(Linear(6, 4, rng=rng, dtype=np.float64), is_feedforward=feedforward)
        layer.add_adapter("default")
        layer.set_adapter("default")
        perturb_trainable(layer, rng)
        check_parameter_gradients(lambda: (layer(x) * projection[:, :4]).sum(), list(layer.ia3_l.parameters()))


def test_ia3_scales_keys_values_and_ffn_input(rng):
    model = tiny_gpt()
    peft_model = get_peft_model(model, IA3Config())
    layer_k = model.get_submodule("blocks.0.attn.k_proj")
    layer_ff = model.get_submodule("blocks.0.mlp.fc_out")
    assert isinstance(layer_k, IA3Linear) and not layer_k.is_feedforward
    assert isinstance(layer_ff, IA3Linear) and layer_ff.is_feedforward
    perturb_trainable(peft_model, rng)
    x = mf.tensor(rng.standard_normal((2, 16)), dtype=np.float64)
    scale_k = layer_k.ia3_l["default"].weight.data
    np.testing.assert_allclose(layer_k(x).data, layer_k.base_layer(x).data * scale_k, rtol=1e-12)
    h = mf.tensor(rng.standard_normal((2, 64)), dtype=np.float64)
    scale_ff = layer_ff.ia3_l["default"].weight.data
    np.testing.assert_allclose(layer_ff(h).data, layer_ff.base_layer(mf.tensor(h.data * scale_ff)).data, rtol=1e-12)


def test_ia3_merge_and_exact_unmerge(rng):
    model = tiny_gpt()
    ids = random_ids(rng, 2, 7)
    original = [p.data.copy() for p in model.parameters()]
    peft_model = get_peft_model(model, IA3Config())
    perturb_trainable(peft_model, rng)
    unmerged = peft_model(ids).data.copy()
    peft_model.merge_adapter()
    np.testing.assert_allclose(peft_model(ids).data, unmerged, rtol=1e-10, atol=1e-10)
    peft_model.unmerge_adapter()
    base_params = [p for n, p in model.named_parameters() if "ia3_l" not in n]
    for param, saved in zip(base_params, original):
        np.testing.assert_array_equal(param.data, saved)


def test_adapters_cannot_merge():
    peft_model = get_peft_model(tiny_gpt(), AdapterConfig())
    with pytest.raises(NotImplementedError, match="cannot be merged"):
        peft_model.merge_and_unload()


@pytest.mark.parametrize("method", sorted(ALL_METHODS))
def test_base_weights_bit_identical_and_optimizer_state_only_for_method(rng, method):
    model = tiny_gpt(dtype="float32", dropout=0.1)
    frozen_before = {name: p.data.copy() for name, p in model.named_parameters()}
    peft_model = get_peft_model(model, ALL_METHODS[method]())
    method_params = [p for p in peft_model.parameters() if p.requires_grad]
    method_before = [p.data.copy() for p in method_params]
    optimizer = AdamW(list(peft_model.parameters()), lr=1e-2, weight_decay=0.1)  # frozen ones included on purpose
    for _ in range(3):
        ids = random_ids(rng, 2, 8)
        loss = peft_model.loss(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, param in model.named_parameters():
        key = name.replace(".base_layer", "")
        if key in frozen_before and not param.requires_grad:
            np.testing.assert_array_equal(param.data, frozen_before[key], err_msg=name)
    assert all(not np.array_equal(p.data, b) for p, b in zip(method_params, method_before))
    state_ids = {id(p) for p in optimizer.state}
    assert state_ids == {id(p) for p in method_params}


@pytest.mark.parametrize("method", ["prompt", "prefix", "prefix_mlp", "lora"])
def test_cached_incremental_forward_equals_full_forward(rng, method):
    model = tiny_gpt()
    peft_model = get_peft_model(model, ALL_METHODS[method]())
    perturb_trainable(peft_model, rng, scale=0.1)
    ids = random_ids(rng, 2, 9)
    mask = np.ones((2, 9), dtype=np.int64)
    mask[1, :3] = 0  # left padding on the second row
    full = peft_model(ids, attention_mask=mask).data
    cache = peft_model.make_cache(2, 12)
    first = peft_model(ids[:, :6], attention_mask=mask[:, :6], cache=cache).data
    pieces = [first]
    for step in range(6, 9):
        pieces.append(peft_model(ids[:, step:step + 1], attention_mask=mask[:, :step + 1], cache=cache).data)
    incremental = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(incremental[0], full[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(incremental[1, 3:], full[1, 3:], rtol=1e-9, atol=1e-9)


def test_prompt_tuning_equals_feeding_the_soft_prompt_by_hand(rng):
    model = tiny_gpt()
    peft_model = get_peft_model(model, PromptTuningConfig(num_virtual_tokens=4))
    ids = random_ids(rng, 2, 5)
    soft = peft_model.prompt_encoder["default"].weight.data  # (4, d)
    token_embeds = model.wte.weight.data[ids]  # (2, 5, d)
    embeds = np.concatenate([np.broadcast_to(soft, (2, 4, 16)), token_embeds], axis=1)
    expected = model(inputs_embeds=mf.tensor(embeds, dtype=np.float64)).data[:, 4:]
    np.testing.assert_allclose(peft_model(ids).data, expected, rtol=1e-12, atol=1e-12)
    std = np.std(model.wte.weight.data)
    assert 0.5 * std < np.std(soft) < 2.0 * std  # RANDOM init at the embedding table's scale


def test_prompt_text_init_copies_token_embeddings():
    class CharTokenizer:
        def encode(self, text):
            return [ord(c) - ord("a") for c in text]

    model = tiny_gpt()
    config = PromptTuningConfig(num_virtual_tokens=5, prompt_tuning_init="TEXT", prompt_tuning_init_text="abc")
    peft_model = get_peft_model(model, config, tokenizer=CharTokenizer())
    expected = model.wte.weight.data[[0, 1, 2, 0, 1]]  # repeated to fill, truncated
    np.testing.assert_array_equal(peft_model.prompt_encoder["default"].weight.data, expected)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        get_peft_model(tiny_gpt(), config)
    with pytest.raises(ValueError, match="prompt_tuning_init_text"):
        PromptTuningConfig(prompt_tuning_init="TEXT")


def test_prefix_reaches_attention_as_learned_keys_and_values(rng):
    attention = MultiHeadAttention(8, 2, causal=True)
    attention.to(np.float64)
    encoder = PrefixEncoder(3, [(2, 4)], 8, prefix_projection=False, encoder_hidden_size=None, rng=rng,
                            dtype=np.float64)
    x = mf.tensor(rng.standard_normal((2, 5, 8)), dtype=np.float64)
    projection = rng.standard_normal((2, 5, 8))

    def loss():
        attention.extra_kv = encoder()[0]
        try:
            return (attention(x) * projection).sum()
        finally:
            attention.extra_kv = None

    check_parameter_gradients(loss, [encoder.embedding])
    # the same numbers by hand: prepend the prefix to every row's keys and values
    keys, values = (t.data for t in encoder()[0])  # (Hkv, P, hd)
    q = attention.q_proj(x).data.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
    k = attention.k_proj(x).data.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
    v = attention.v_proj(x).data.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
    k_all = np.concatenate([np.broadcast_to(keys, (2, 2, 3, 4)), k], axis=2)
    v_all = np.concatenate([np.broadcast_to(values, (2, 2, 3, 4)), v], axis=2)
    scores = q @ k_all.transpose(0, 1, 3, 2) / 2.0
    causal = np.tril(np.ones((5, 5), dtype=bool))
    allowed = np.concatenate([np.ones((5, 3), dtype=bool), causal], axis=1)
    scores = np.where(allowed, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    mixed = (weights @ v_all).transpose(0, 2, 1, 3).reshape(2, 5, 8)
    expected = attention.o_proj(mf.tensor(mixed)).data
    attention.extra_kv = encoder()[0]
    np.testing.assert_allclose(attention(x).data, expected, rtol=1e-10, atol=1e-12)
    attention.extra_kv = None


def test_prefix_hooks_are_cleared_after_each_call(rng):
    model = tiny_gpt()
    peft_model = get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=2))
    peft_model(random_ids(rng, 1, 4))
    assert all(m.extra_kv is None for m in model.modules() if hasattr(m, "extra_kv"))


def test_cli_helpers_build_the_requested_method():
    parser = add_peft_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--peft", "lora", "--lora-r", "4", "--target-modules", "q_proj,k_proj"])
    peft_model = apply_peft_from_args(tiny_gpt(), args)
    config = peft_model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.target_modules) == (4, 4, ["q_proj", "k_proj"])
    for method in ("adapter", "prompt", "prefix", "ia3"):
        wrapped = apply_peft_from_args(tiny_gpt(), parser.parse_args(["--peft", method, "--num-virtual-tokens", "2"]))
        assert wrapped.peft_type == method
    model = tiny_gpt()
    assert apply_peft_from_args(model, parser.parse_args([])) is model
