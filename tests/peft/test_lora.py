"""LoRA: the fused low-rank Function, the layer against torch, init, scaling, merge/unmerge, targeting."""
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, strategies as st

import minifm as mf
from minifm.autograd import gradcheck
from minifm.nn import Linear
from minifm.peft import LoraConfig, get_peft_model
from minifm.peft.lora import LoraLinear, LowRankDelta, lora_parameter_count
from peft_testing import check_parameter_gradients, perturb_trainable, random_ids, tiny_gpt


@given(batch_shape=st.lists(st.integers(1, 3), min_size=0, max_size=2), in_features=st.integers(1, 5),
       out_features=st.integers(1, 5), rank=st.integers(1, 3), scaling=st.floats(0.1, 4.0),
       seed=st.integers(0, 2**16))
def test_low_rank_delta_matches_numpy_and_finite_differences(batch_shape, in_features, out_features, rank,
                                                             scaling, seed):
    rng = np.random.default_rng(seed)
    x = mf.tensor(rng.standard_normal((*batch_shape, in_features)), requires_grad=True, dtype=np.float64)
    lora_A = mf.tensor(rng.standard_normal((rank, in_features)), requires_grad=True, dtype=np.float64)
    lora_B = mf.tensor(rng.standard_normal((out_features, rank)), requires_grad=True, dtype=np.float64)
    out = LowRankDelta.apply(x, lora_A, lora_B, scaling=scaling)
    expected = scaling * (x.data @ lora_A.data.T) @ lora_B.data.T
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda a, b, c: LowRankDelta.apply(a, b, c, scaling=scaling), x, lora_A, lora_B)


def test_low_rank_delta_rejects_mismatched_shapes():
    x = mf.tensor(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="A expects 4"):
        LowRankDelta.apply(x, mf.tensor(np.zeros((3, 4))), mf.tensor(np.zeros((6, 3))))
    with pytest.raises(ValueError, match="B \\(out, r\\)"):
        LowRankDelta.apply(x, mf.tensor(np.zeros((3, 5))), mf.tensor(np.zeros((6, 2))))


def _wrapped_linear(rng, in_features=6, out_features=5, r=3, alpha=6.0, use_rslora=False, dtype=np.float64):
    base = Linear(in_features, out_features, rng=rng, dtype=dtype)
    layer = LoraLinear(base, rng)
    layer.add_adapter("default", LoraConfig(r=r, lora_alpha=alpha, use_rslora=use_rslora), rng)
    layer.set_adapter("default")
    layer.lora_B["default"].weight.data[...] = rng.standard_normal((out_features, r))
    return layer


def test_lora_layer_matches_torch_reimplementation(rng):
    torch = pytest.importorskip("torch", reason="torch is the oracle for the LoRA layer")
    layer = _wrapped_linear(rng)
    x = rng.standard_normal((2, 4, 6))
    projection = rng.standard_normal((2, 4, 5))
    out = layer(mf.tensor(x, dtype=np.float64))
    (out * projection).sum().backward()

    weight = torch.tensor(layer.base_layer.weight.data)
    bias = torch.tensor(layer.base_layer.bias.data)
    lora_A = torch.tensor(layer.lora_A["default"].weight.data, requires_grad=True)
    lora_B = torch.tensor(layer.lora_B["default"].weight.data, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    reference = torch.nn.functional.linear(tx, weight, bias) + (6.0 / 3) * (tx @ lora_A.T @ lora_B.T)
    (reference * torch.tensor(projection)).sum().backward()

    np.testing.assert_allclose(out.data, reference.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.lora_A["default"].weight.grad, lora_A.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.lora_B["default"].weight.grad, lora_B.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert layer.base_layer.weight.grad is None and layer.base_layer.bias.grad is None


def test_lora_layer_gradients_match_finite_differences(rng):
    layer = _wrapped_linear(rng)
    x = mf.tensor(rng.standard_normal((3, 6)), dtype=np.float64)
    projection = rng.standard_normal((3, 5))
    params = [layer.lora_A["default"].weight, layer.lora_B["default"].weight]
    check_parameter_gradients(lambda: (layer(x) * projection).sum(), params)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_scaling_is_alpha_over_r_or_alpha_over_sqrt_r(rng, use_rslora):
    layer = _wrapped_linear(rng, r=4, alpha=12.0, use_rslora=use_rslora)
    expected = 12.0 / (2.0 if use_rslora else 4.0)
    assert layer.scaling["default"] == expected
    x = rng.standard_normal((3, 6))
    delta = layer(mf.tensor(x, dtype=np.float64)).data - layer.base_layer(mf.tensor(x, dtype=np.float64)).data
    lora_A, lora_B = layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data
    np.testing.assert_allclose(delta, expected * x @ lora_A.T @ lora_B.T, rtol=1e-10, atol=1e-12)


def test_init_is_kaiming_uniform_for_A_and_zero_for_B():
    rng = np.random.default_rng(7)
    base = Linear(256, 32, rng=rng)
    layer = LoraLinear(base, rng)
    layer.add_adapter("default", LoraConfig(r=64), rng)
    lora_A = layer.lora_A["default"].weight.data
    bound = 1.0 / np.sqrt(256)  # kaiming_uniform_(a=sqrt(5)) on fan_in = 256
    assert np.all(np.abs(lora_A) <= bound)
    assert not np.any(layer.lora_B["default"].weight.data)
    result = scipy.stats.kstest(lora_A.ravel(), scipy.stats.uniform(loc=-bound, scale=2 * bound).cdf)
    assert result.pvalue > 1e-3, f"A does not look uniform on [-{bound}, {bound}]: {result}"


def test_peft_model_starts_identical_and_counts_parameters(rng):
    model = tiny_gpt()
    ids = random_ids(rng, 2, 7)
    before = model(ids).data.copy()
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    np.testing.assert_array_equal(peft_model(ids).data, before)
    trainable, total = peft_model.get_nb_trainable_parameters()
    d, n_layer = 16, 2
    assert trainable == n_layer * 2 * lora_parameter_count(d, d, 4) == n_layer * 2 * 4 * (d + d)
    assert total == sum(p.size for p in model.parameters())
    line = peft_model.print_trainable_parameters()
    assert f"trainable params: {trainable:,d}" in line


def test_gqa_swiglu_all_linear_count():
    model = tiny_gpt(n_kv_head=2, mlp="swiglu", mlp_hidden=24, tie_weights=False)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    d, kv, hidden, r = 16, 2 * 4, 24, 2
    per_layer = r * ((d + d) + (d + kv) * 2 + (d + d) + 2 * (d + hidden) + (hidden + d))
    assert peft_model.get_nb_trainable_parameters()[0] == 2 * per_layer  # lm_head is not targeted
    wrapped = {name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, LoraLinear)}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_target_by_regex_and_errors():
    model = tiny_gpt()
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=r"blocks\.1\.attn\.(q|k)_proj"))
    wrapped = sorted(name for name, m in model.named_modules() if isinstance(m, LoraLinear))
    assert wrapped == ["blocks.1.attn.k_proj", "blocks.1.attn.q_proj"]
    assert peft_model.get_nb_trainable_parameters()[0] == 2 * 2 * (16 + 16)
    with pytest.raises(ValueError, match="matched no Linear.*q_proj"):
        get_peft_model(tiny_gpt(), LoraConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="only Linear"):
        get_peft_model(tiny_gpt(), LoraConfig(target_modules=["attn"]))
    with pytest.raises(ValueError, match="r must be a positive integer"):
        LoraConfig(r=0)
    with pytest.raises(ValueError, match="lora_dropout"):
        LoraConfig(lora_dropout=1.5)


def test_merge_equals_unmerged_and_unmerge_restores_exactly(rng):
    model = tiny_gpt()
    ids = random_ids(rng, 2, 9)
    original = {name: p.data.copy() for name, p in model.named_parameters()}
    peft_model = get_peft_model(model, LoraConfig(r=3, lora_alpha=5, target_modules="all-linear"))
    perturb_trainable(peft_model, rng)
    unmerged = peft_model(ids).data.copy()
    peft_model.merge_adapter()
    merged = peft_model(ids).data
    np.testing.assert_allclose(merged, unmerged, rtol=1e-10, atol=1e-10)
    changed = [n for n, p in model.named_parameters() if "base_layer.weight" in n and not np.array_equal(
        p.data, original[n.replace(".base_layer", "")])]
    assert changed, "merging should change the wrapped weights"
    peft_model.unmerge_adapter()
    for name, param in model.named_parameters():
        key = name.replace(".base_layer", "")
        if key in original:
            np.testing.assert_array_equal(param.data, original[key], err_msg=name)
    np.testing.assert_array_equal(peft_model(ids).data, unmerged)


def test_merge_and_unload_gives_plain_model_with_same_outputs(rng):
    model = tiny_gpt()
    ids = random_ids(rng, 2, 6)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "fc_in"]))
    perturb_trainable(peft_model, rng)
    expected = peft_model(ids).data.copy()
    plain = peft_model.merge_and_unload()
    assert not any(isinstance(m, LoraLinear) for m in plain.modules())
    assert all(type(plain.get_submodule(f"blocks.{i}.attn.q_proj")) is Linear for i in range(2))
    np.testing.assert_allclose(plain(ids).data, expected, rtol=1e-10, atol=1e-10)


def test_several_named_adapters_and_set_adapter(rng):
    model = tiny_gpt()
    ids = random_ids(rng, 1, 5)
    base_out = model(ids).data.copy()
    peft_model = get_peft_model(model, LoraConfig(r=2))
    peft_model.add_adapter("other", LoraConfig(r=3, target_modules=["k_proj"]))
    perturb_trainable(peft_model, rng)  # only "default" is trainable now
    out_default = peft_model(ids).data.copy()
    assert not np.allclose(out_default, base_out)
    peft_model.set_adapter("other")
    np.testing.assert_array_equal(peft_model(ids).data, base_out)  # "other" still has B = 0
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".other." in n for n in trainable)
    assert peft_model.get_nb_trainable_parameters()[0] == 2 * 3 * (16 + 16)
    peft_model.set_adapter("default")
    np.testing.assert_array_equal(peft_model(ids).data, out_default)
    with peft_model.disable_adapter():
        np.testing.assert_array_equal(peft_model(ids).data, base_out)
    peft_model.delete_adapter("other")
    assert list(peft_model.peft_config) == ["default"]
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        peft_model.set_adapter("nope")


def test_lora_dropout_only_in_training(rng):
    model = tiny_gpt()
    ids = random_ids(rng, 2, 6)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_dropout=0.5))
    perturb_trainable(peft_model, rng)
    peft_model.eval()
    first, second = peft_model(ids).data.copy(), peft_model(ids).data.copy()
    np.testing.assert_array_equal(first, second)
    peft_model.train()
    assert not np.allclose(peft_model(ids).data, first)
