"""Activation checkpointing (minifm/nn/checkpoint.py, GPT.gradient_checkpointing_enable): the same loss and
the same gradients, bit for bit, as the un-checkpointed model; finite differences through a checkpointed block;
LoRA on a frozen base; dropout's random draws repeated exactly; parameter hooks run once per backward."""
from __future__ import annotations

import numpy as np
import pytest

import minifm as mf
from minifm.autograd import gradcheck
from minifm.models import GPT, GPTConfig
from minifm.nn import TransformerBlock
from minifm.nn.checkpoint import checkpoint
from minifm.peft import LoraConfig, get_peft_model

LLAMA_LIKE = dict(vocab_size=61, block_size=32, n_layer=3, n_head=4, n_kv_head=2, n_embd=32, pos="rope",
                  norm="rmsnorm", mlp="swiglu", bias=False)


def _batch(config: dict, seed: int = 0, batch: int = 3, steps: int = 12):  # 36 rows: SwiGLU stacks
    ids = np.random.default_rng(seed).integers(0, config["vocab_size"], size=(batch, steps + 1))
    return ids[:, :-1], ids[:, 1:]


def _loss_and_grads(model, inputs, targets, attention_mask=None):
    for param in model.parameters():
        param.grad = None
    loss = model.loss(inputs, targets, attention_mask=attention_mask)
    loss.backward()
    return float(loss.data), {name: param.grad for name, param in model.named_parameters() if param.requires_grad}


def _twin_models(config: dict):
    plain = GPT(GPTConfig(**config))
    checkpointed = GPT(GPTConfig(**config))
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable()
    return plain, checkpointed


@pytest.mark.parametrize("config", [
    LLAMA_LIKE,
    dict(LLAMA_LIKE, dtype="float64"),
    dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16),  # GPT-2 layout: learned positions, GELU
])
def test_checkpointed_gpt_gives_the_same_loss_and_gradients_bit_for_bit(config):
    plain, checkpointed = _twin_models(config)
    inputs, targets = _batch(config)
    plain_loss, plain_grads = _loss_and_grads(plain, inputs, targets)
    loss, grads = _loss_and_grads(checkpointed, inputs, targets)
    assert loss == plain_loss
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        assert grad is not None and grad.dtype == plain_grads[name].dtype, name
        np.testing.assert_array_equal(grad, plain_grads[name], err_msg=name)


def test_checkpointed_gpt_with_padding_mask_matches():
    plain, checkpointed = _twin_models(LLAMA_LIKE)
    inputs, targets = _batch(LLAMA_LIKE)
    mask = np.ones(inputs.shape, dtype=np.int64)
    mask[0, :3] = 0  # left padding on the first row
    plain_loss, plain_grads = _loss_and_grads(plain, inputs, targets, mask)
    loss, grads = _loss_and_grads(checkpointed, inputs, targets, mask)
    assert loss == plain_loss
    for name, grad in grads.items():
        np.testing.assert_array_equal(grad, plain_grads[name], err_msg=name)


def test_checkpointed_lora_on_a_frozen_base_gets_the_same_adapter_gradients():
    # the embedding is frozen, so no block input requires grad: the adapters' gradients must still flow
    plain, checkpointed = _twin_models(LLAMA_LIKE)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    plain = get_peft_model(plain, lora, rng=np.random.default_rng(1))
    checkpointed = get_peft_model(checkpointed, lora, rng=np.random.default_rng(1))
    for model in (plain, checkpointed):  # B off zero, so A gets a gradient too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data[...] = np.random.default_rng(len(name)).standard_normal(param.shape) * 0.1
    inputs, targets = _batch(LLAMA_LIKE, seed=3)
    plain_loss, plain_grads = _loss_and_grads(plain, inputs, targets)
    loss, grads = _loss_and_grads(checkpointed, inputs, targets)
    assert loss == plain_loss
    assert len(grads) == 2 * 4 * LLAMA_LIKE["n_layer"]
    for name, grad in grads.items():
        assert grad is not None and np.abs(grad).max() > 0, name
        np.testing.assert_array_equal(grad, plain_grads[name], err_msg=name)
    assert all(param.grad is None for name, param in checkpointed.named_parameters() if "lora_" not in name)


def test_checkpointing_repeats_dropout_draws_and_leaves_the_generator_where_the_forward_did():
    config = dict(LLAMA_LIKE, dropout=0.3)
    plain, checkpointed = _twin_models(config)
    plain.train()
    checkpointed.train()
    inputs, targets = _batch(config, seed=5)
    for _ in range(2):  # the second step starts from the generator state the first one left
        plain_loss, plain_grads = _loss_and_grads(plain, inputs, targets)
        loss, grads = _loss_and_grads(checkpointed, inputs, targets)
        assert loss == plain_loss
        for name, grad in grads.items():
            np.testing.assert_array_equal(grad, plain_grads[name], err_msg=name)
        assert checkpointed.rng.bit_generator.state == plain.rng.bit_generator.state


def test_checkpointed_block_matches_finite_differences_for_input_and_parameters():
    rng = np.random.default_rng(0)
    block = TransformerBlock(8, 2, num_kv_heads=1, mlp_hidden=12, bias=False, norm="rmsnorm", mlp="swiglu")
    for param in block.parameters():
        param.data = rng.standard_normal(param.shape) * 0.3  # float64 for finite differences
    x = mf.tensor(rng.standard_normal((2, 5, 8)), requires_grad=True)
    assert gradcheck(lambda inputs: checkpoint(block, inputs), x)
    weight = block.mlp.gate_proj.weight  # a parameter's gradient, against central differences of the loss
    projection = rng.standard_normal((2, 5, 8))
    weight.grad = None  # gradcheck's backward passes accumulated into it
    (checkpoint(block, x) * projection).sum().backward()
    analytic = weight.grad.copy()
    numeric = np.zeros_like(weight.data)
    for index in np.ndindex(weight.shape):
        saved = weight.data[index]
        values = []
        for shift in (1e-6, -1e-6):
            weight.data[index] = saved + shift
            with mf.no_grad():
                values.append(float((block(mf.tensor(x.data)).data * projection).sum()))
        weight.data[index] = saved
        numeric[index] = (values[0] - values[1]) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_parameter_hooks_run_once_per_backward_with_the_final_gradient():
    plain, checkpointed = _twin_models(LLAMA_LIKE)
    seen = []
    weight = checkpointed.blocks[1].attn.q_proj.weight
    weight.register_post_accumulate_grad_hook(lambda param: seen.append(param.grad.copy()))
    inputs, targets = _batch(LLAMA_LIKE)
    _, plain_grads = _loss_and_grads(plain, inputs, targets)
    _loss_and_grads(checkpointed, inputs, targets)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], plain_grads["blocks.1.attn.q_proj.weight"])


def test_checkpointing_is_off_without_recording_and_the_switch_round_trips():
    plain, checkpointed = _twin_models(LLAMA_LIKE)
    inputs, _ = _batch(LLAMA_LIKE)
    with mf.no_grad():
        np.testing.assert_array_equal(checkpointed(inputs).data, plain(inputs).data)
    assert checkpointed.gradient_checkpointing and not plain.gradient_checkpointing
    checkpointed.gradient_checkpointing_disable()
    assert not checkpointed.gradient_checkpointing


def test_checkpoint_rejects_what_it_cannot_run():
    block = TransformerBlock(8, 2)
    with pytest.raises(TypeError, match="module must be a minifm.nn.Module"):
        checkpoint(lambda x: x, mf.tensor(np.zeros((1, 2, 8), dtype=np.float32)))
    with pytest.raises(TypeError, match="x must be a Tensor"):
        checkpoint(block, np.zeros((1, 2, 8), dtype=np.float32))
