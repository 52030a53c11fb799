"""GPT/BERT.from_pretrained and save_pretrained against transformers, on small random models of each family.

transformers builds a small random model of every architecture minifm reads, saves it as a Hugging Face
directory, and minifm loads it: the logits (and greedy continuations) must agree. The other direction:
minifm models saved with save_pretrained load in transformers with the same logits. Float32 throughout;
the tolerance 2e-5 covers the different summation orders of two BLAS libraries on these small widths.
"""
import json

import numpy as np
import pytest

from oracles import require
from minifm.models import BERT, GPT, BERTConfig, GPTConfig

torch = require("torch")
transformers = require("transformers")

TOLERANCE = 2e-5


def _save_hf(model, directory, **kwargs):
    model.save_pretrained(directory, **kwargs)
    return directory


def _random_hf(config, model_class=None, seed=0):
    torch.manual_seed(seed)
    if model_class is None:
        model = transformers.AutoModelForCausalLM.from_config(config)
    else:
        model = model_class(config)
    with torch.no_grad():  # non-trivial norm weights and biases, so a swapped table row shows
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.add_(0.1 * torch.randn_like(param))
    return model.float().eval()


def _hf_logits(model, ids, attention_mask=None):
    with torch.no_grad():
        mask = None if attention_mask is None else torch.tensor(attention_mask)
        return model(torch.tensor(ids), attention_mask=mask).logits.numpy()


def _ids(vocab, shape, seed=1):
    return np.random.default_rng(seed).integers(0, vocab, size=shape)


LLAMA_LIKE = {
    "llama": lambda tie: transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5,
        tie_word_embeddings=tie),
    "qwen2": lambda tie: transformers.Qwen2Config(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=tie),
    "mistral": lambda tie: transformers.MistralConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=64, tie_word_embeddings=tie),
}


@pytest.mark.parametrize("family", sorted(LLAMA_LIKE))
@pytest.mark.parametrize("tie", [False, True])
def test_llama_family_logits_match_transformers(tmp_path, family, tie):
    hf_model = _random_hf(LLAMA_LIKE[family](tie))
    model = GPT.from_pretrained(_save_hf(hf_model, tmp_path))
    assert model.config.tie_weights == tie and model.config.pos == "rope"
    ids = _ids(97, (2, 11))
    np.testing.assert_allclose(model(ids).data, _hf_logits(hf_model, ids), atol=TOLERANCE, rtol=TOLERANCE)
    mask = np.ones((2, 11), dtype=np.int64)
    mask[0, :4] = 0  # left padding
    np.testing.assert_allclose(model(ids, attention_mask=mask).data[0, 4:], _hf_logits(hf_model, ids, mask)[0, 4:],
                               atol=TOLERANCE, rtol=TOLERANCE)


def test_gpt2_logits_and_greedy_tokens_match_transformers(tmp_path):
    config = transformers.GPT2Config(vocab_size=101, n_positions=40, n_embd=32, n_layer=2, n_head=4,
                                     activation_function="gelu_new")
    hf_model = _random_hf(config)
    model = GPT.from_pretrained(_save_hf(hf_model, tmp_path))
    assert model.config.mlp == "gelu_tanh"
    ids = _ids(101, (3, 9))
    np.testing.assert_allclose(model(ids).data, _hf_logits(hf_model, ids), atol=TOLERANCE, rtol=TOLERANCE)
    with torch.no_grad():
        expected = hf_model.generate(torch.tensor(ids[:1]), max_new_tokens=12, do_sample=False,
                                     pad_token_id=0).numpy()
    np.testing.assert_array_equal(np.asarray(model.generate(ids[:1], 12)), expected)


def test_gpt2_checkpoint_without_the_transformer_prefix_loads(tmp_path):
    """The original OpenAI conversion names the body `h.0...`, not `transformer.h.0...`."""
    from safetensors.numpy import load_file, save_file

    hf_model = _random_hf(transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    _save_hf(hf_model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    renamed = {name.removeprefix("transformer."): array for name, array in tensors.items()}
    renamed["h.0.attn.bias"] = np.tril(np.ones((16, 16), dtype=np.float32))  # an old causal-mask buffer
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ids = _ids(50, (1, 7))
    np.testing.assert_allclose(GPT.from_pretrained(tmp_path)(ids).data, _hf_logits(hf_model, ids),
                               atol=TOLERANCE, rtol=TOLERANCE)


def test_sharded_checkpoint_loads(tmp_path):
    hf_model = _random_hf(LLAMA_LIKE["llama"](False))
    _save_hf(hf_model, tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ids = _ids(97, (1, 8))
    np.testing.assert_allclose(GPT.from_pretrained(tmp_path)(ids).data, _hf_logits(hf_model, ids),
                               atol=TOLERANCE, rtol=TOLERANCE)


def _bert_config():
    return transformers.BertConfig(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=40, max_position_embeddings=24, type_vocab_size=2)


def test_bert_model_hidden_states_match_transformers(tmp_path):
    hf_model = _random_hf(_bert_config(), transformers.BertModel)
    model = BERT.from_pretrained(_save_hf(hf_model, tmp_path))
    assert model.config.norm_position == "post" and model.config.type_vocab_size == 2
    assert any(name.startswith("mlm_") for name in model.newly_initialized)  # BertModel has no MLM head
    ids = _ids(80, (2, 10))
    mask = np.ones((2, 10), dtype=np.int64)
    mask[1, 7:] = 0
    types = np.zeros((2, 10), dtype=np.int64)
    types[:, 5:] = 1
    with torch.no_grad():
        expected = hf_model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                            token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
    hidden = model(ids, attention_mask=mask, token_type_ids=types).data
    np.testing.assert_allclose(hidden[0], expected[0], atol=TOLERANCE, rtol=TOLERANCE)
    np.testing.assert_allclose(hidden[1, :7], expected[1, :7], atol=TOLERANCE, rtol=TOLERANCE)


def test_bert_masked_lm_logits_match_transformers(tmp_path):
    hf_model = _random_hf(_bert_config(), transformers.BertForMaskedLM)
    model = BERT.from_pretrained(_save_hf(hf_model, tmp_path))
    assert not any(name.startswith("mlm_") for name in model.newly_initialized)
    ids = _ids(80, (2, 6))
    with torch.no_grad():
        expected = hf_model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model.mlm_logits(model(ids)).data, expected, atol=TOLERANCE, rtol=TOLERANCE)


# ---------------------------------------------------------------------------- export: minifm -> transformers
MINIFM_LAYOUTS = {
    "llama": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2, rope_base=1000.0),
    "llama-untied-bias": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=True, tie_weights=False),
    "qwen2": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=True, n_kv_head=1),
    "gpt2": dict(pos="learned", norm="layernorm", mlp="gelu_tanh", bias=True),
    "gpt2-exact-gelu-untied": dict(pos="learned", norm="layernorm", mlp="gelu", bias=True, tie_weights=False),
}


def _perturbed(model, seed=3):
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        if param.data.ndim == 1:
            param.data = (param.data + 0.1 * rng.standard_normal(param.shape)).astype(param.dtype)
    return model


@pytest.mark.parametrize("layout", sorted(MINIFM_LAYOUTS))
def test_minifm_gpt_exports_to_transformers(tmp_path, layout):
    config = GPTConfig(vocab_size=61, block_size=32, n_layer=2, n_head=4, n_embd=32, **MINIFM_LAYOUTS[layout])
    model = _perturbed(GPT(config))
    model.save_pretrained(tmp_path)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).float().eval()
    ids = _ids(61, (2, 12))
    np.testing.assert_allclose(_hf_logits(hf_model, ids), model(ids).data, atol=TOLERANCE, rtol=TOLERANCE)
    reloaded = GPT.from_pretrained(tmp_path)
    np.testing.assert_array_equal(reloaded(ids).data, model(ids).data)  # the round trip is exact


def test_minifm_bert_in_bert_layout_exports_to_transformers(tmp_path):
    config = BERTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, norm_position="post",
                        type_vocab_size=2, embedding_norm=True, norm_eps=1e-12)
    model = _perturbed(BERT(config))
    model.save_pretrained(tmp_path)
    hf_model = transformers.BertForMaskedLM.from_pretrained(tmp_path).float().eval()
    ids = _ids(40, (2, 9))
    with torch.no_grad():
        expected = hf_model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model.mlm_logits(model(ids)).data, expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_layouts_without_a_hugging_face_class_are_refused(tmp_path):
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, pos="rope"))
    with pytest.raises(ValueError, match="no Hugging Face architecture"):
        model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no Hugging Face architecture"):
        BERT(BERTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path)


# ---------------------------------------------------------------------------- errors
def _llama_dir(tmp_path):
    return _save_hf(_random_hf(LLAMA_LIKE["llama"](False)), tmp_path)


def _rewrite_tensors(directory, change):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    change(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_a_missing_tensor_is_named(tmp_path):
    directory = _llama_dir(tmp_path)
    _rewrite_tensors(directory, lambda tensors: tensors.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(KeyError, match="model.layers.1.mlp.up_proj.weight"):
        GPT.from_pretrained(directory)


def test_a_shape_mismatch_is_named(tmp_path):
    directory = _llama_dir(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 50
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"gate_proj.weight.*shape \(48, 32\)"):
        GPT.from_pretrained(directory)


def test_an_unread_tensor_is_an_error(tmp_path):
    directory = _llama_dir(tmp_path)
    _rewrite_tensors(directory, lambda tensors: tensors.update({"model.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="model.extra.weight"):
        GPT.from_pretrained(directory)


def test_unknown_architectures_and_unsupported_options_are_named(tmp_path):
    directory = _llama_dir(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(dict(config, architectures=["FalconForCausalLM"])))
    with pytest.raises(ValueError, match="FalconForCausalLM.*LlamaForCausalLM"):
        GPT.from_pretrained(directory)
    (directory / "config.json").write_text(json.dumps(dict(config, rope_parameters={"rope_type": "llama3",
                                                                                      "rope_theta": 5e5})))
    with pytest.raises(ValueError, match="rope_type='llama3'"):
        GPT.from_pretrained(directory)
    (directory / "config.json").write_text(json.dumps(dict(config, hidden_act="gelu")))
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        GPT.from_pretrained(directory)
    with pytest.raises(ValueError, match="BERT"):
        BERT.from_pretrained(_llama_dir(tmp_path / "again"))


def test_dtype_is_checked(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPT.from_pretrained(_llama_dir(tmp_path), dtype="int8")
