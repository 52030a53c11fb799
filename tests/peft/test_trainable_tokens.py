"""LoraConfig(trainable_token_indices=...): selected embedding rows train, tied head included, exact merge, small file."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import minifm as mf
from minifm.autograd import gradcheck
from minifm.optim import AdamW
from minifm.peft import LoraConfig, from_pretrained, get_peft_model, save_adapter
from minifm.peft.lora import lora_parameter_count
from minifm.peft.trainable_tokens import RowOverride, TrainableTokensEmbedding, trainable_tokens_parameter_count
from peft_testing import check_parameter_gradients, perturb_trainable, random_ids, tiny_gpt

TOKENS = [2, 7, 30]  # includes the last row of the 31-token vocabulary


def _config(**overrides):
    options = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], trainable_token_indices=TOKENS)
    options.update(overrides)
    return LoraConfig(**options)


def _ids_with_tokens(rng, batch=2, steps=6):
    ids = random_ids(rng, batch, steps)
    ids[:, 1] = TOKENS[0]
    ids[0, 3] = TOKENS[2]
    return ids


def _set_rows(peft_model, rng, scale=0.5):
    rows = peft_model.base_model.wte.trainable_tokens_delta["default"]
    rows.data[...] += scale * rng.standard_normal(rows.shape)
    return rows.data.copy()


@pytest.mark.parametrize("tie_weights", [True, False])
def test_outputs_unchanged_at_initialisation(rng, tie_weights):
    ids = _ids_with_tokens(rng)
    expected = tiny_gpt(tie_weights=tie_weights)(ids).data
    peft_model = get_peft_model(tiny_gpt(tie_weights=tie_weights), _config())
    assert isinstance(peft_model.base_model.wte, TrainableTokensEmbedding)
    np.testing.assert_array_equal(peft_model(ids).data, expected)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_trained_rows_reach_the_input_and_a_tied_head_only(rng, tie_weights):
    """The wrapped model equals a plain model whose embedding rows were overwritten; an untied lm_head is untouched."""
    peft_model = get_peft_model(tiny_gpt(tie_weights=tie_weights), _config(target_modules=["q_proj"]))
    rows = _set_rows(peft_model, rng)
    ids = _ids_with_tokens(rng)
    reference_model = tiny_gpt(tie_weights=tie_weights)
    reference_model.wte.weight.data[TOKENS] = rows  # (an untied reference keeps its lm_head as it was)
    got = peft_model.base_model.wte.weight  # the effective table W'
    np.testing.assert_array_equal(got.data, reference_model.wte.weight.data)
    with peft_model.disable_adapter():  # LoRA B is still zero: only the rows differ from the base model
        np.testing.assert_array_equal(peft_model(ids).data, tiny_gpt(tie_weights=tie_weights)(ids).data)
    np.testing.assert_array_equal(peft_model(ids).data, reference_model(ids).data)
    if tie_weights:  # a tied head scores the selected tokens with the trained rows, even where they are not inputs
        no_selected = np.ones((1, 4), dtype=np.int64)
        plain_logits = tiny_gpt(tie_weights=True)(no_selected).data
        wrapped_logits = peft_model(no_selected).data
        np.testing.assert_array_equal(np.delete(wrapped_logits, TOKENS, axis=-1), np.delete(plain_logits, TOKENS, axis=-1))
        assert not np.allclose(wrapped_logits[..., TOKENS], plain_logits[..., TOKENS])


def test_only_selected_rows_receive_gradients_and_change(rng):
    model = tiny_gpt(dtype="float32")
    base_table = model.wte.weight.data.copy()
    peft_model = get_peft_model(model, _config())
    wrapper = peft_model.base_model.wte
    ids = _ids_with_tokens(rng)
    loss = peft_model.loss(ids, np.roll(ids, -1, axis=1))
    loss.backward()
    assert wrapper.base_layer.weight.grad is None  # the frozen table never gets a gradient array
    rows = wrapper.trainable_tokens_delta["default"]
    assert rows.grad.shape == (len(TOKENS), 16) and np.all(np.abs(rows.grad).sum(axis=1) > 0)
    # every parameter handed to AdamW with weight decay, as a careless training script would
    optimizer = AdamW(list(peft_model.parameters()), lr=1e-2, weight_decay=0.1)
    before = rows.data.copy()
    optimizer.step()
    np.testing.assert_array_equal(wrapper.base_layer.weight.data, base_table)  # bit-identical base
    assert np.all(np.abs(rows.data - before).sum(axis=1) > 0)  # every selected row moved
    effective = wrapper.weight.data
    changed = np.flatnonzero(np.any(effective != base_table, axis=1))
    assert changed.tolist() == TOKENS


def test_gradients_match_finite_differences(rng):
    peft_model = get_peft_model(tiny_gpt(n_layer=1, n_embd=8, n_head=2, block_size=12), _config())
    perturb_trainable(peft_model, rng, scale=0.2)
    ids = _ids_with_tokens(rng, 2, 5)
    targets = np.roll(ids, -1, axis=1)
    targets[1, 2] = TOKENS[1]  # a selected token as a target: the tied head's side of the gradient
    params = [p for p in peft_model.parameters() if p.requires_grad]
    assert any(p.shape == (len(TOKENS), 8) for p in params)
    check_parameter_gradients(lambda: peft_model.loss(ids, targets), params, max_entries=12)


def test_row_override_function_gradcheck(rng):
    weight = mf.tensor(rng.standard_normal((6, 3)), requires_grad=True, dtype=np.float64)
    rows = mf.tensor(rng.standard_normal((2, 3)), requires_grad=True, dtype=np.float64)
    out = RowOverride.apply(weight, rows, indices=[4, 1])
    expected = weight.data.copy()
    expected[[4, 1]] = rows.data
    np.testing.assert_array_equal(out.data, expected)
    assert gradcheck(lambda w, r: RowOverride.apply(w, r, indices=[4, 1]), weight, rows)


def test_merge_then_unmerge_restores_the_embedding_exactly(rng):
    peft_model = get_peft_model(tiny_gpt(), _config())
    perturb_trainable(peft_model, rng)
    wrapper = peft_model.base_model.wte
    original = wrapper.base_layer.weight.data.copy()
    ids = _ids_with_tokens(rng)
    unmerged = peft_model(ids).data.copy()
    peft_model.merge_adapter()
    np.testing.assert_array_equal(wrapper.base_layer.weight.data[TOKENS],
                                  wrapper.trainable_tokens_delta["default"].data)
    np.testing.assert_allclose(peft_model(ids).data, unmerged, rtol=1e-10, atol=1e-10)
    peft_model.unmerge_adapter()
    np.testing.assert_array_equal(wrapper.base_layer.weight.data, original)
    np.testing.assert_array_equal(peft_model(ids).data, unmerged)


def test_merge_and_unload_gives_a_plain_embedding_with_the_rows(rng):
    peft_model = get_peft_model(tiny_gpt(), _config())
    perturb_trainable(peft_model, rng)
    ids = _ids_with_tokens(rng)
    expected = peft_model(ids).data.copy()
    rows = peft_model.base_model.wte.trainable_tokens_delta["default"].data.copy()
    plain = peft_model.merge_and_unload()
    assert type(plain.wte).__name__ == "Embedding"
    np.testing.assert_array_equal(plain.wte.weight.data[TOKENS], rows)
    np.testing.assert_allclose(plain(ids).data, expected, rtol=1e-10, atol=1e-10)
    assert not any("trainable_tokens" in name or "base_layer" in name for name in plain.state_dict())


def test_disable_adapter_runs_the_base_table(rng):
    peft_model = get_peft_model(tiny_gpt(), _config())
    _set_rows(peft_model, rng)
    ids = _ids_with_tokens(rng)
    with peft_model.disable_adapter():
        np.testing.assert_array_equal(peft_model(ids).data, tiny_gpt()(ids).data)
    assert not np.array_equal(peft_model(ids).data, tiny_gpt()(ids).data)


def test_save_load_round_trip_holds_only_the_selected_rows(tmp_path, rng):
    peft_model = get_peft_model(tiny_gpt(), _config())
    perturb_trainable(peft_model, rng)
    ids = _ids_with_tokens(rng)
    expected = peft_model(ids).data.copy()
    save_adapter(peft_model, tmp_path, layout="minifm")  # PEFT's layout: tests/peft/test_hf_peft_interop.py
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert saved["base_model.wte.trainable_tokens_delta"].shape == (len(TOKENS), 16)  # k rows, not the V-row table
    assert not any("base_layer" in key for key in saved)
    assert sum(a.size for a in saved.values()) == peft_model.get_nb_trainable_parameters()[0]
    assert json.loads((tmp_path / "adapter_config.json").read_text())["trainable_token_indices"] == TOKENS
    loaded = from_pretrained(tiny_gpt(), tmp_path)
    np.testing.assert_array_equal(loaded(ids).data, expected)
    assert loaded.get_nb_trainable_parameters()[0] == 0
    trainable = from_pretrained(tiny_gpt(), tmp_path, is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] == peft_model.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("tie_weights", [True, False])
def test_parameter_count_is_lora_plus_rows_times_width(tie_weights):
    d, n_layer, r = 16, 2, 2
    peft_model = get_peft_model(tiny_gpt(tie_weights=tie_weights), _config(r=r))
    lora = n_layer * 2 * lora_parameter_count(d, d, r)
    expected = lora + trainable_tokens_parameter_count(len(TOKENS), d)
    assert expected == lora + len(TOKENS) * d  # a tied head shares the rows: no second copy
    assert peft_model.get_nb_trainable_parameters()[0] == expected
    by_dict = get_peft_model(tiny_gpt(tie_weights=tie_weights), _config(r=r, trainable_token_indices={"wte": [0, 1]}))
    assert by_dict.get_nb_trainable_parameters()[0] == lora + 2 * d


def test_out_of_range_and_bad_indices_get_clear_errors():
    with pytest.raises(ValueError, match=r"trainable_token_indices holds token id 31, out of range .* 31 rows"):
        get_peft_model(tiny_gpt(), _config(trainable_token_indices=[3, 31]))
    with pytest.raises(ValueError, match=r"trainable_token_indices .* got -1"):
        LoraConfig(trainable_token_indices=[-1])
    with pytest.raises(ValueError, match=r"trainable_token_indices .* got \[\]"):
        LoraConfig(trainable_token_indices=[])
    with pytest.raises(ValueError, match=r"duplicate token ids \[4\]"):
        get_peft_model(tiny_gpt(), _config(trainable_token_indices=[4, 4]))
    with pytest.raises(ValueError, match=r"trainable_token_indices key 'embed_tokens' matched no Embedding"):
        get_peft_model(tiny_gpt(), _config(trainable_token_indices={"embed_tokens": [1]}))


def test_second_adapter_with_other_rows_and_set_adapter(rng):
    peft_model = get_peft_model(tiny_gpt(), _config())
    peft_model.add_adapter("other", _config(trainable_token_indices=[5]))
    wrapper = peft_model.base_model.wte
    assert wrapper.adapter_names() == ["default", "other"]
    assert wrapper.trainable_tokens_delta["default"].requires_grad
    assert not wrapper.trainable_tokens_delta["other"].requires_grad
    peft_model.set_adapter("other")
    assert wrapper.trainable_tokens_delta["other"].requires_grad
    assert not wrapper.trainable_tokens_delta["default"].requires_grad
    peft_model.delete_adapter("default")
    assert wrapper.adapter_names() == ["other"] and list(wrapper.token_indices) == ["other"]


def test_command_line_flag(capsys):
    import argparse

    from minifm.cli.peft_options import add_peft_arguments, apply_peft_from_args

    parser = add_peft_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--peft", "lora", "--lora-r", "2", "--trainable-token-indices", "3,5"])
    peft_model = apply_peft_from_args(tiny_gpt(), args)
    assert peft_model.base_model.wte.token_indices == {"default": [3, 5]}
    assert peft_model.get_nb_trainable_parameters()[0] == 2 * 2 * lora_parameter_count(16, 16, 2) + 2 * 16
    with pytest.raises(ValueError, match="--trainable-token-indices must be comma-separated integers, got 'a,1'"):
        apply_peft_from_args(tiny_gpt(), parser.parse_args(["--peft", "lora", "--trainable-token-indices", "a,1"]))


@pytest.mark.parametrize("arch", ["bert", "t5"])
def test_tied_heads_of_bert_and_t5_use_the_rows(rng, arch):
    """BERT's MLM head and T5's output head read the embedding's weight: they see the trained rows."""
    from minifm.models import BERT, BERTConfig, T5, T5Config

    def make():
        if arch == "bert":
            return BERT(BERTConfig(vocab_size=23, block_size=16, n_layer=1, n_head=2, n_embd=8, dtype="float64", seed=1))
        return T5(T5Config(vocab_size=23, block_size=16, n_layer=1, n_head=2, n_embd=8, dtype="float64", seed=2))

    def logits(model, ids):
        if arch == "bert":
            return model.mlm_logits(model(ids)).data
        return model(ids, ids).data

    ids = random_ids(rng, 2, 5, vocab=23)
    ids[:, 0] = 4
    peft_model = get_peft_model(make(), LoraConfig(r=2, target_modules="all-linear", trainable_token_indices=[4, 9]))
    np.testing.assert_array_equal(logits(peft_model, ids), logits(make(), ids))
    embedding_name = "wte" if arch == "bert" else "shared"
    rows = getattr(peft_model.base_model, embedding_name).trainable_tokens_delta["default"]
    rows.data[...] += rng.standard_normal(rows.shape)
    reference = make()
    getattr(reference, embedding_name).weight.data[[4, 9]] = rows.data
    np.testing.assert_array_equal(logits(peft_model, ids), logits(reference, ids))
