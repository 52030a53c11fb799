"""Every method on BERT (encoder) and T5 (encoder-decoder): zero-init, gradients, frozen base, caching."""
import numpy as np
import pytest

import minifm.functional as F
from minifm.models import BERT, BERTConfig, T5, T5Config
from minifm.peft import AdapterConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from peft_testing import check_parameter_gradients, perturb_trainable, random_ids

METHODS = {
    "lora": lambda: LoraConfig(r=2, target_modules="all-linear"),
    "adapter": lambda: AdapterConfig(reduction_factor=4),
    "prompt": lambda: PromptTuningConfig(num_virtual_tokens=2),
    "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=2),
    "ia3": lambda: IA3Config(),
}
ZERO_INIT = ("lora", "adapter", "ia3")


def tiny_bert():
    return BERT(BERTConfig(vocab_size=23, block_size=16, n_layer=1, n_head=2, n_embd=8, dtype="float64", seed=1))


def tiny_t5(pos="rope"):
    return T5(T5Config(vocab_size=23, block_size=16, n_layer=1, n_head=2, n_embd=8, dtype="float64", seed=2, pos=pos))


def bert_loss(model, ids, mask, labels):
    return model.classification_loss(ids, labels, attention_mask=mask)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bert(rng, method):
    model = tiny_bert()
    ids = random_ids(rng, 2, 5, vocab=23)
    mask = np.ones((2, 5), dtype=np.int64)
    mask[1, 3:] = 0
    before = model(ids, attention_mask=mask).data.copy()
    frozen = [p.data.copy() for p in model.parameters()]
    peft_model = get_peft_model(model, METHODS[method]())
    hidden = peft_model(ids, attention_mask=mask)
    assert hidden.shape == (2, 5, 8)
    if method in ZERO_INIT:
        np.testing.assert_array_equal(hidden.data, before)
    perturb_trainable(peft_model, rng, scale=0.2)
    labels = np.array([0, 1])
    params = [p for p in peft_model.parameters() if p.requires_grad]

    def loss():
        return F.cross_entropy(peft_model.classify(peft_model(ids, attention_mask=mask)), labels)

    check_parameter_gradients(loss, params, max_entries=3)
    base_params = [p for n, p in model.named_parameters() if not p.requires_grad]
    assert all(p.grad is None for p in base_params)
    for name, param in model.named_parameters():
        assert param.requires_grad or any(np.array_equal(param.data, f) for f in frozen), name


@pytest.mark.parametrize("method", sorted(METHODS))
def test_t5(rng, method):
    model = tiny_t5()
    ids = random_ids(rng, 2, 6, vocab=23)
    labels = random_ids(rng, 2, 4, vocab=23)
    before = model.loss(ids, labels).data.copy()
    peft_model = get_peft_model(model, METHODS[method]())
    loss_value = peft_model.loss(ids, labels)
    if method in ZERO_INIT:
        np.testing.assert_array_equal(loss_value.data, before)
    perturb_trainable(peft_model, rng, scale=0.2)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    check_parameter_gradients(lambda: peft_model.loss(ids, labels), params, max_entries=3)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)

    # cached decoding through the wrapper equals one full decoder pass
    decoder_ids = model.shift_right(labels)
    encoder_hidden = peft_model.encode(ids)
    full = peft_model.decode(decoder_ids, encoder_hidden, encoder_mask=np.ones((2, 6), dtype=np.int64)).data
    cache = peft_model.make_cache(2, 8)
    steps = [peft_model.decode(decoder_ids[:, t:t + 1], encoder_hidden, encoder_mask=np.ones((2, 6), dtype=np.int64),
                               cache=cache).data for t in range(4)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-9, atol=1e-10)


def test_bert_prompt_tuning_counts_and_strips_virtual_positions(rng):
    model = tiny_bert()
    peft_model = get_peft_model(model, PromptTuningConfig(num_virtual_tokens=3))
    assert peft_model.get_nb_trainable_parameters()[0] == 3 * 8
    ids = random_ids(rng, 1, 4, vocab=23)
    prompt = peft_model.prompt_encoder["default"].weight.data
    table = model.wte.weight.data
    # by hand: run the encoder on [prompt ; embeddings] and drop the first three outputs
    from minifm.nn import Module

    class Fixed(Module):
        def forward(self, placeholder_ids):
            import minifm as mf
            return mf.tensor(np.concatenate([prompt[None], table[ids]], axis=1))

    original = model.wte
    model.wte = Fixed()
    try:
        expected = model(np.zeros((1, 7), dtype=np.int64)).data[:, 3:]
    finally:
        model.wte = original
    np.testing.assert_allclose(peft_model(ids).data, expected, rtol=1e-12)
    assert model.wte is original
