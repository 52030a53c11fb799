"""GPT against an independent PyTorch statement of the same math, KV-cache equivalences, config handling,
and a memorisation run."""
import dataclasses

import numpy as np
import pytest

import minifm as mf
from minifm.models import GPT, GPTConfig

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for the model math")
from torch_reference import gpt_forward, to_torch_params  # noqa: E402

BASE = dict(vocab_size=37, block_size=24, n_layer=2, n_head=4, n_embd=32)
VARIANTS = {
    "gpt2": {},
    "rope-rms-swiglu-gqa-untied": dict(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, tie_weights=False),
    "mqa-nobias": dict(n_kv_head=1, bias=False),
    "rope-layernorm-gelu": dict(pos="rope"),
    "learned-rmsnorm-swiglu-untied": dict(norm="rmsnorm", mlp="swiglu", tie_weights=False),
}


def make(dtype="float64", **overrides):
    config = GPTConfig(**{**BASE, **overrides, "dtype": dtype})
    return GPT(config), config


def compare_with_torch(model, config, ids, targets, mask=None, atol=1e-10, rtol=1e-10):
    logits = model(ids, attention_mask=mask)
    loss = mf.functional.cross_entropy(logits, targets)
    model.zero_grad()
    loss.backward()
    params = to_torch_params(model.state_dict())
    torch_logits, _ = gpt_forward(params, config, ids, attention_mask=mask)
    torch_loss = torch.nn.functional.cross_entropy(torch_logits.reshape(-1, config.vocab_size),
                                                   torch.as_tensor(targets).reshape(-1))
    torch_loss.backward()
    np.testing.assert_allclose(logits.data, torch_logits.detach().numpy(), atol=atol, rtol=rtol)
    np.testing.assert_allclose(loss.item(), torch_loss.item(), atol=atol, rtol=rtol)
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        np.testing.assert_allclose(param.grad, params[name].grad.numpy(), atol=atol, rtol=rtol, err_msg=name)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_loss_and_every_gradient_equal_torch_float64(variant, rng):
    model, config = make(**VARIANTS[variant])
    ids = rng.integers(0, config.vocab_size, size=(3, 11))
    targets = rng.integers(0, config.vocab_size, size=(3, 11))
    compare_with_torch(model, config, ids, targets)


@pytest.mark.parametrize("variant", ["gpt2", "rope-rms-swiglu-gqa-untied"])
def test_left_padded_batch_equals_torch(variant, rng):
    model, config = make(**VARIANTS[variant])
    ids = rng.integers(0, config.vocab_size, size=(3, 9))
    mask = np.ones((3, 9), dtype=np.int64)
    mask[0, :3] = 0
    mask[2, :1] = 0
    targets = np.where(mask == 1, rng.integers(0, config.vocab_size, size=(3, 9)), -100)
    compare_with_torch(model, config, ids, targets, mask)


def test_float32_matches_torch_to_1e_4(rng):
    model, config = make("float32", **VARIANTS["rope-rms-swiglu-gqa-untied"])
    ids = rng.integers(0, config.vocab_size, size=(2, 16))
    compare_with_torch(model, config, ids, np.roll(ids, -1, axis=1), atol=1e-4, rtol=1e-4)


def test_hidden_states_are_the_final_normed_states(rng):
    model, config = make()
    ids = rng.integers(0, config.vocab_size, size=(2, 7))
    logits, hidden = model(ids, return_hidden=True)
    _, torch_hidden = gpt_forward(to_torch_params(model.state_dict()), config, ids)
    assert hidden.shape == (2, 7, config.n_embd)
    np.testing.assert_allclose(hidden.data, torch_hidden.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(logits.data, hidden.data @ model.wte.weight.data.T, atol=1e-10)


# ---------------------------------------------------------------------------- KV cache
def decode_token_by_token(model, ids, prompt_len, mask=None):
    batch, total = ids.shape
    cache = model.make_cache(batch, total)
    pieces = [model(ids[:, :prompt_len], cache=cache,
                    attention_mask=None if mask is None else mask[:, :prompt_len]).data]
    for t in range(prompt_len, total):
        pieces.append(model(ids[:, t:t + 1], cache=cache,
                            attention_mask=None if mask is None else mask[:, :t + 1]).data)
    assert cache.length == total
    return np.concatenate(pieces, axis=1)


@pytest.mark.parametrize("variant", ["gpt2", "rope-rms-swiglu-gqa-untied", "mqa-nobias"])
def test_kv_cached_decoding_equals_full_forward(variant, rng):
    model, config = make(**VARIANTS[variant])
    ids = rng.integers(0, config.vocab_size, size=(2, 12))
    with mf.no_grad():
        full = model(ids).data
        cached = decode_token_by_token(model, ids, prompt_len=5)
    np.testing.assert_allclose(cached, full, atol=1e-10)


@pytest.mark.parametrize("variant", ["gpt2", "rope-rms-swiglu-gqa-untied"])
def test_kv_cached_decoding_with_left_padding_equals_full_forward_and_unpadded(variant, rng):
    model, config = make(**VARIANTS[variant])
    ids = rng.integers(0, config.vocab_size, size=(2, 12))
    mask = np.ones((2, 12), dtype=np.int64)
    mask[1, :4] = 0  # second row is left-padded by 4
    with mf.no_grad():
        full = model(ids, attention_mask=mask).data
        cached = decode_token_by_token(model, ids, prompt_len=6, mask=mask)
        unpadded = model(ids[1:, 4:]).data
    np.testing.assert_allclose(cached[:, 4:], full[:, 4:], atol=1e-10)
    np.testing.assert_allclose(full[1, 4:], unpadded[0], atol=1e-10)  # padding changes nothing


@pytest.mark.parametrize("variant", ["gpt2", "rope-rms-swiglu-gqa-untied"])
def test_extra_kv_cached_equals_full_and_torch(variant, rng):
    model, config = make(**VARIANTS[variant])
    kv_heads = config.kv_heads
    prefixes = {}
    for index, block in enumerate(model.blocks):
        pair = (mf.Tensor(rng.normal(size=(kv_heads, 3, config.head_dim))),
                mf.Tensor(rng.normal(size=(kv_heads, 3, config.head_dim))))
        block.attn.extra_kv = pair
        prefixes[f"blocks.{index}"] = tuple(torch.tensor(p.data) for p in pair)
    ids = rng.integers(0, config.vocab_size, size=(2, 10))
    with mf.no_grad():
        full = model(ids).data
        cached = decode_token_by_token(model, ids, prompt_len=4)
    torch_logits, _ = gpt_forward(to_torch_params(model.state_dict(), False), config, ids, extra_kvs=prefixes)
    np.testing.assert_allclose(cached, full, atol=1e-10)
    np.testing.assert_allclose(full, torch_logits.numpy(), atol=1e-10)


def test_extra_kv_receives_gradients(rng):
    model, config = make()
    prefix_k = mf.Tensor(rng.normal(size=(config.kv_heads, 2, config.head_dim)), requires_grad=True)
    prefix_v = mf.Tensor(rng.normal(size=(config.kv_heads, 2, config.head_dim)), requires_grad=True)
    model.blocks[0].attn.extra_kv = (prefix_k, prefix_v)
    ids = rng.integers(0, config.vocab_size, size=(2, 6))
    model.loss(ids, np.roll(ids, -1, 1)).backward()
    assert prefix_k.grad.shape == prefix_k.shape and np.abs(prefix_k.grad).sum() > 0
    assert np.abs(prefix_v.grad).sum() > 0


def test_gqa_equals_mha_with_duplicated_key_value_heads(rng):
    """A GQA model equals the MHA model whose k/v projections repeat each shared head for its group."""
    gqa, config = make(n_kv_head=2, pos="rope")
    mha, _ = make(pos="rope")
    groups, head_dim = config.n_head // 2, config.head_dim
    state = dict(gqa.state_dict(copy=True))
    for layer in range(config.n_layer):
        for name in ("k_proj", "v_proj"):
            for suffix in ("weight", "bias"):
                key = f"blocks.{layer}.attn.{name}.{suffix}"
                heads = state[key].reshape(2, head_dim, *state[key].shape[1:])
                state[key] = np.repeat(heads, groups, axis=0).reshape(config.n_head * head_dim, *state[key].shape[1:])
    mha.load_state_dict(state)
    ids = rng.integers(0, config.vocab_size, size=(2, 9))
    np.testing.assert_allclose(gqa(ids).data, mha(ids).data, atol=1e-12)


def test_n_kv_head_equal_to_n_head_is_mha(rng):
    explicit, config = make(n_kv_head=BASE["n_head"])
    implicit, _ = make()
    ids = rng.integers(0, config.vocab_size, size=(2, 9))
    assert list(explicit.state_dict()) == list(implicit.state_dict())
    np.testing.assert_array_equal(explicit(ids).data, implicit(ids).data)


def test_inputs_embeds_equals_ids_path_and_gets_gradient(rng):
    model, config = make(pos="rope")
    ids = rng.integers(0, config.vocab_size, size=(2, 8))
    embeds = mf.Tensor(model.wte.weight.data[ids], requires_grad=True)
    np.testing.assert_allclose(model(inputs_embeds=embeds).data, model(ids).data, atol=1e-12)
    model(inputs_embeds=embeds).sum().backward()
    assert embeds.grad is not None and embeds.grad.shape == embeds.shape


def test_cache_reorder_follows_batch_permutation(rng):
    model, config = make()
    ids = rng.integers(0, config.vocab_size, size=(3, 8))
    with mf.no_grad():
        cache = model.make_cache(3, 8)
        model(ids[:, :5], cache=cache)
        cache.reorder(np.array([2, 2, 0]))
        step = model(ids[[2, 2, 0], 5:6], cache=cache).data
        full = model(ids[[2, 2, 0], :6]).data
    np.testing.assert_allclose(step[:, 0], full[:, 5], atol=1e-10)


# ---------------------------------------------------------------------------- config and errors
def test_config_dict_round_trip_and_unknown_keys():
    config = GPTConfig(**BASE, pos="rope", n_kv_head=2)
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown keys \['n_embed'\].*valid keys.*n_embd"):
        GPTConfig.from_dict({**config.to_dict(), "n_embed": 8})


@pytest.mark.parametrize("bad, message", [
    (dict(n_embd=30), "divisible by n_head"),
    (dict(n_kv_head=3), "multiple of n_kv_head"),
    (dict(pos="alibi"), "pos must be one of"),
    (dict(norm="batchnorm"), "norm must be one of"),
    (dict(mlp="relu"), "mlp must be one of"),
    (dict(n_layer=0), "n_layer must be a positive integer"),
    (dict(dropout=1.0), "dropout"),
])
def test_bad_config_values_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**BASE, **bad})


def test_bad_inputs_give_clear_errors(rng):
    model, config = make()
    with pytest.raises(ValueError, match="exceeds block_size 24"):
        model(np.zeros((1, 25), dtype=np.int64))
    with pytest.raises(TypeError, match="integers"):
        model(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(1, 4\)"):
        model(np.zeros((1, 4), dtype=np.int64), attention_mask=np.ones((1, 5)))
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(IndexError, match="out of range"):
        model(np.full((1, 4), config.vocab_size))
    cache = model.make_cache(1, 4)
    with mf.no_grad():
        model(np.zeros((1, 4), dtype=np.int64), cache=cache)
        with pytest.raises(ValueError, match="KVCache is full"):
            model(np.zeros((1, 1), dtype=np.int64), cache=cache)


def test_init_is_gpt2_style_and_seeded():
    config = GPTConfig(vocab_size=64, block_size=16, n_layer=8, n_head=4, n_embd=256, seed=3)
    model = GPT(config)
    again = GPT(config)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    residual_std = 0.02 / np.sqrt(2 * 8)
    assert abs(model.blocks[0].attn.o_proj.weight.data.std() - residual_std) < 0.1 * residual_std
    assert abs(model.blocks[0].mlp.fc_out.weight.data.std() - residual_std) < 0.1 * residual_std
    assert abs(model.blocks[0].attn.q_proj.weight.data.std() - 0.02) < 0.002
    assert np.all(model.blocks[0].attn.q_proj.bias.data == 0)
    assert model.wte.weight.dtype == np.float32


def test_dropout_uses_model_rng_and_is_off_in_eval(rng):
    model, config = make(dropout=0.3)
    ids = rng.integers(0, config.vocab_size, size=(2, 6))
    state = model.rng.bit_generator.state
    first = model(ids).data
    model.rng.bit_generator.state = state
    np.testing.assert_array_equal(model(ids).data, first)  # same rng state -> same masks
    assert not np.allclose(model(ids).data, first)  # fresh masks differ
    model.eval()
    np.testing.assert_array_equal(model(ids).data, model(ids).data)


def test_tiny_gpt_memorises_a_sequence():
    from minifm.optim import AdamW

    model = GPT(GPTConfig(vocab_size=16, block_size=32, n_layer=2, n_head=2, n_embd=32, seed=1))
    sequence = np.random.default_rng(0).integers(0, 16, size=(1, 25))
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        loss = model.loss(sequence[:, :-1], sequence[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02
    model.eval()
    with mf.no_grad():
        predicted = np.argmax(model(sequence[:, :-1]).data, axis=-1)
    np.testing.assert_array_equal(predicted, sequence[:, 1:])


def test_to_dict_is_plain_json():
    import json

    config = GPTConfig(**BASE)
    assert json.loads(json.dumps(config.to_dict())) == dataclasses.asdict(config)


@pytest.mark.parametrize("keep", [1, 3, 7, 9])
def test_logits_to_keep_gives_the_last_positions_of_the_full_forward(keep, rng):
    # transformers' meaning: k > 0 keeps the last k positions (all of them when k >= T); 0 keeps every one
    model, config = make(**VARIANTS["rope-rms-swiglu-gqa-untied"])
    ids = rng.integers(0, config.vocab_size, size=(2, 7))
    full = model(ids).data  # (2, 7, V)
    kept, hidden = model(ids, logits_to_keep=keep, return_hidden=True)
    # the same numbers up to the summation order of a product over fewer rows (BLAS or the matvec kernel)
    np.testing.assert_allclose(kept.data, full[:, -keep:], rtol=0, atol=1e-12)
    assert hidden.shape == (2, 7, config.n_embd)  # the hidden states stay every position's
    np.testing.assert_array_equal(model(ids, logits_to_keep=0).data, full)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_logits_to_keep_refuses_what_is_not_a_count(bad, rng):
    model, config = make()
    with pytest.raises(ValueError, match="logits_to_keep must be an integer >= 0.*got"):
        model(rng.integers(0, config.vocab_size, size=(1, 4)), logits_to_keep=bad)
