"""BERT and T5 against independent PyTorch statements of the same math, T5's cached decoding, and toy learning runs."""
import numpy as np
import pytest

import minifm as mf
from minifm.models import BERT, T5, BERTConfig, T5Config
from minifm.optim import AdamW

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for the model math")
from torch_reference import bert_forward, t5_forward, to_torch_params  # noqa: E402

TF = torch.nn.functional


def assert_grads_equal(model, params, atol):
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        np.testing.assert_allclose(param.grad, params[name].grad.numpy(), atol=atol, rtol=atol, err_msg=name)


@pytest.mark.parametrize("overrides", [{}, dict(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1, bias=False)])
def test_bert_hidden_heads_losses_and_gradients_equal_torch(overrides, rng):
    config = BERTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=16, num_labels=3, dtype="float64",
                        **overrides)
    model = BERT(config)
    ids = rng.integers(0, 29, size=(3, 10))
    mask = np.ones((3, 10), dtype=np.int64)
    mask[1, 7:] = 0  # right padding
    labels = np.where(rng.random((3, 10)) < 0.3, ids, -100)
    labels[0, 0] = ids[0, 0]
    classes = np.array([0, 2, 1])
    hidden = model(ids, mask)
    loss = mf.functional.cross_entropy(model.mlm_logits(hidden), labels) + \
        mf.functional.cross_entropy(model.classify(hidden), classes)
    loss.backward()
    params = to_torch_params(model.state_dict())
    t_hidden, t_mlm, t_classes = bert_forward(params, config, ids, mask)
    t_loss = TF.cross_entropy(t_mlm.reshape(-1, 29), torch.as_tensor(labels).reshape(-1)) + \
        TF.cross_entropy(t_classes, torch.as_tensor(classes))
    t_loss.backward()
    np.testing.assert_allclose(hidden.data, t_hidden.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(loss.item(), t_loss.item(), atol=1e-10)
    assert_grads_equal(model, params, 1e-10)


def test_bert_padding_does_not_change_real_tokens(rng):
    model = BERT(BERTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=16, dtype="float64"))
    ids = rng.integers(1, 29, size=(1, 6))
    padded = np.concatenate([ids, np.zeros((1, 3), dtype=ids.dtype)], axis=1)
    mask = np.array([[1] * 6 + [0] * 3])
    np.testing.assert_allclose(model(padded, mask).data[:, :6], model(ids).data, atol=1e-12)


@pytest.mark.parametrize("overrides", [{}, dict(norm="layernorm", bias=True, mlp="swiglu", n_kv_head=1,
                                                tie_weights=False, n_decoder_layer=3, pos="learned")])
def test_t5_logits_loss_and_gradients_equal_torch(overrides, rng):
    config = T5Config(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16, dtype="float64", **overrides)
    model = T5(config)
    ids = rng.integers(1, 23, size=(2, 9))
    mask = np.ones((2, 9), dtype=np.int64)
    mask[0, 6:] = 0
    labels = rng.integers(1, 23, size=(2, 7))
    labels[1, 5:] = -100
    loss = model.loss(ids, labels, attention_mask=mask)
    loss.backward()
    params = to_torch_params(model.state_dict())
    decoder_ids = model.shift_right(labels)
    assert decoder_ids[0, 0] == config.decoder_start_token_id and np.all(decoder_ids >= 0)
    t_logits = t5_forward(params, config, ids, decoder_ids, mask)
    t_loss = TF.cross_entropy(t_logits.reshape(-1, 23), torch.as_tensor(labels).reshape(-1))
    t_loss.backward()
    np.testing.assert_allclose(model(ids, decoder_ids, mask).data, t_logits.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(loss.item(), t_loss.item(), atol=1e-10)
    assert_grads_equal(model, params, 1e-10)


def test_t5_cached_decoding_equals_full_decode(rng):
    model = T5(T5Config(vocab_size=23, block_size=16, n_layer=2, n_head=4, n_embd=16, n_kv_head=2, dtype="float64"))
    ids = rng.integers(1, 23, size=(2, 7))
    mask = np.ones((2, 7), dtype=np.int64)
    mask[1, 5:] = 0
    decoder_ids = rng.integers(1, 23, size=(2, 6))
    with mf.no_grad():
        encoder = model.encode(ids, mask)
        full = model.decode(decoder_ids, encoder, mask).data
        cache = model.make_cache(2, 6)
        steps = [model.decode(decoder_ids[:, t:t + 1], encoder, mask, cache=cache).data for t in range(6)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-10)


def test_tiny_bert_learns_a_masked_lm_toy():
    """Each sequence is a run of one token; the masked positions must be filled in from context."""
    rng = np.random.default_rng(0)
    vocab, mask_id = 12, 11
    model = BERT(BERTConfig(vocab_size=vocab, block_size=8, n_layer=2, n_head=2, n_embd=32, seed=0))
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)

    def batch(n):
        ids = np.repeat(rng.integers(0, 10, size=(n, 1)), 8, axis=1)
        masked = rng.random((n, 8)) < 0.3
        masked[:, 0] = True
        inputs = np.where(masked, mask_id, ids)
        return inputs, np.where(masked, ids, -100)

    for _ in range(120):
        inputs, labels = batch(32)
        loss = model.mlm_loss(inputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    inputs, labels = batch(64)
    model.eval()
    with mf.no_grad():
        predicted = np.argmax(model.mlm_logits(model(inputs)).data, axis=-1)
    chosen = labels != -100
    assert np.mean(predicted[chosen] == labels[chosen]) > 0.95


def test_tiny_t5_learns_to_reverse():
    from minifm.optim import clip_grad_norm, schedules

    rng = np.random.default_rng(0)
    model = T5(T5Config(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=32, seed=0, pos="learned"))
    optimizer = AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    schedule = schedules.warmup_cosine(5e-3, 20, 150)
    for step in range(150):
        source = rng.integers(1, 10, size=(32, 5))
        loss = model.loss(source, source[:, ::-1].copy())
        schedules.set_lr(optimizer, schedule(step))
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
    source = rng.integers(1, 10, size=(64, 5))
    model.eval()
    decoded = model.greedy_decode(source, 5)
    assert np.mean(decoded == source[:, ::-1]) > 0.85  # chance is 1/9 per token
    assert np.mean(np.all(decoded == source[:, ::-1], axis=1)) > 0.5


def test_config_unknown_keys_rejected():
    with pytest.raises(ValueError, match="unknown keys.*valid keys"):
        BERTConfig.from_dict({"vocab_size": 5, "block_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 4, "typo": 1})
    with pytest.raises(ValueError, match="unknown keys.*valid keys"):
        T5Config.from_dict({"vocab_size": 5, "block_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 4, "typo": 1})
