"""GPT with quantized weights: SmolLM2-135M-Instruct kept in its own Q4_1 / Q8_0 blocks, requantized to Q8_0 and
Q4_0, and tiny models quantized on load from Hugging Face directories, saved and loaded as runs.

Measured on SmolLM2 (tests below, CPU float32; the numbers are in /work/notes and docs/real-models.md):
  * per-token logits of the file's own Q4_1 (Linear) / Q8_0 (embedding and tied head) model vs the same
    weights dequantized to float32, on a 40-token chat prompt: the same argmax at every position, max
    |difference| ~1e-4 for logits of magnitude ~30 (float32 summation order only). Asserted: 2e-3.
  * held-out perplexity on HELD_OUT_TEXTS (below: the opening three paragraphs of Lewis Carroll's "Alice's
    Adventures in Wonderland", chapter 1, public domain, and a paragraph written for this test that no
    model has seen; 307 + 85 tokens in SmolLM2's tokenizer, 390 predicted): float32 28.90; the file's own
    Q4_1 + Q8_0 28.90 (the same values); Q8_0 requantized from the dequantized float32 weights 28.94
    (+0.16%, asserted within 1%); Q4_0 34.60 (+19.7%, asserted within 25%: Q4_1 values rounded again to
    Q4_0's grid; the embedding and tied head stay Q8_0 in both, models/pretrained.py EMBEDDING_DTYPE).
"""
import numpy as np
import pytest

import minifm as mf
from minifm.checkpoint import has_checkpoint
from minifm.models import BERT, GPT, GPTConfig
from minifm.nn import Embedding, Linear
from minifm.nn.quantized import QuantizedEmbedding, QuantizedLinear, packed_nbytes
from minifm.pretrained.gguf import open_reader
from minifm.pretrained.quants import quantize
from minifm.runs import load_any, load_run, save_run
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained
from minifm.train.config import TrainConfig
from minifm.train.loop import make_optimizer

HELD_OUT_TEXTS = (
    # Lewis Carroll, Alice's Adventures in Wonderland (1865), chapter 1, first three paragraphs (public domain)
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: "
    "once or twice she had peeped into the book her sister was reading, but it had no pictures or conversations "
    "in it, 'and what is the use of a book,' thought Alice 'without pictures or conversations?'\n\n"
    "So she was considering in her own mind (as well as she could, for the hot day made her feel very sleepy "
    "and stupid), whether the pleasure of making a daisy-chain would be worth the trouble of getting up and "
    "picking the daisies, when suddenly a White Rabbit with pink eyes ran close by her.\n\n"
    "There was nothing so very remarkable in that; nor did Alice think it so very much out of the way to hear "
    "the Rabbit say to itself, 'Oh dear! Oh dear! I shall be late!' (when she thought it over afterwards, it "
    "occurred to her that she ought to have wondered at this, but at the time it all seemed quite natural); but "
    "when the Rabbit actually took a watch out of its waistcoat-pocket, and looked at it, and then hurried on, "
    "Alice started to her feet, for it flashed across her mind that she had never before seen a rabbit with "
    "either a waistcoat-pocket, or a watch to take out of it, and burning with curiosity, she ran across the "
    "field after it, and fortunately was just in time to see it pop down a large rabbit-hole under the hedge.",
    # written for this test (not in any training set)
    "The ferry to the island leaves twice a day, at seven in the morning and at four in the afternoon. In "
    "winter the second crossing is often cancelled, because the wind rises after lunch and the harbour master "
    "does not like to take risks with the old boat. Visitors who miss it sleep at the inn by the pier, where "
    "the owner serves fish soup and tells the same three stories about the lighthouse to anyone who will listen.",
)

CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name three rivers in Europe and say which sea each one flows into."}]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf):
    return tokenizer_from_pretrained(smollm2_gguf)


@pytest.fixture(scope="module")
def smollm2_float32(smollm2_gguf):
    return GPT.from_pretrained(smollm2_gguf, dtype="float32")


@pytest.fixture(scope="module")
def smollm2_own(smollm2_gguf):
    """SmolLM2 as the file stores it: Q4_1 Linear weights, a Q8_0 embedding (also the tied head)."""
    return GPT.from_pretrained(smollm2_gguf)


def perplexity(model, tokenizer) -> float:
    """exp(mean next-token negative log-likelihood) over HELD_OUT_TEXTS, each text scored on its own."""
    total, count = 0.0, 0
    with mf.no_grad():
        for text in HELD_OUT_TEXTS:
            ids = np.array(tokenizer.encode(text))
            logits = model(ids[None, :-1]).data[0].astype(np.float64)  # (T-1, V)
            top = logits.max(axis=-1, keepdims=True)
            log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]  # (T-1,)
            total += float((log_z - logits[np.arange(len(ids) - 1), ids[1:]]).sum())
            count += len(ids) - 1
    return float(np.exp(total / count))


# ---------------------------------------------------------------------------- SmolLM2 as stored
def test_the_file_loads_in_its_own_formats_without_a_float_copy(smollm2_own, smollm2_gguf):
    model = smollm2_own
    assert (model.config.dtype, model.config.weight_dtype, model.config.embedding_dtype) == ("float32", "q4_1", "q8_0")
    linears = [m for m in model.modules() if isinstance(m, (Linear, QuantizedLinear))]
    assert len(linears) == 30 * 7 and all(type(m) is QuantizedLinear and m.weight_type == "Q4_1" for m in linears)
    assert type(model.wte) is QuantizedEmbedding and model.wte.weight_type == "Q8_0"
    assert not any(isinstance(m, Embedding) for m in model.modules())
    # memory: the packed blocks are exactly the file's bytes for those tensors; the float32 parameters
    # left are the 61 RMSNorm weights (0.14 MB), and nothing requires grad (a frozen base)
    reader = open_reader(smollm2_gguf)
    file_bytes = sum(int(t.n_bytes) for t in reader.tensors if t.tensor_type.name in ("Q4_1", "Q8_0"))
    assert packed_nbytes(model) == file_bytes == 96_436_224
    parameters = list(model.parameters())
    assert sum(p.data.nbytes for p in parameters) == 61 * 576 * 4
    assert not any(p.requires_grad for p in parameters)
    assert all(m.weight.dtype == np.uint8 for m in linears)


def test_per_token_logits_equal_the_float32_dequantization(smollm2_own, smollm2_float32, smollm2_tokenizer):
    ids = np.array([smollm2_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True)])  # (1, 40)
    with mf.no_grad():
        ours, dequantized = smollm2_own(ids).data, smollm2_float32(ids).data  # (1, T, V)
    np.testing.assert_array_equal(ours.argmax(-1), dequantized.argmax(-1))
    assert np.abs(ours - dequantized).max() < 2e-3  # float32 summation order only (module docstring)


def test_greedy_decoding_with_the_cache_matches_the_float32_model(smollm2_own, smollm2_float32, smollm2_tokenizer):
    prompt = smollm2_tokenizer.apply_chat_template(CHAT[1:], add_generation_prompt=True)
    quantized = smollm2_own.generate([prompt], 12, do_sample=False)
    reference = smollm2_float32.generate([prompt], 12, do_sample=False)
    np.testing.assert_array_equal(quantized, reference)


def test_held_out_perplexity_of_q8_0_and_q4_0_against_float32(smollm2_gguf, smollm2_float32, smollm2_tokenizer):
    base = perplexity(smollm2_float32, smollm2_tokenizer)
    q8_0 = GPT.from_pretrained(smollm2_gguf, dtype="q8_0")  # requantized from the dequantized float32 values
    assert (q8_0.config.weight_dtype, q8_0.config.embedding_dtype) == ("q8_0", "q8_0")
    with_q8_0 = perplexity(q8_0, smollm2_tokenizer)
    del q8_0
    q4_0 = GPT.from_pretrained(smollm2_gguf, dtype="q4_0")
    with_q4_0 = perplexity(q4_0, smollm2_tokenizer)
    assert 1.0 < base < 50.0
    assert abs(with_q8_0 / base - 1) < 0.01, (base, with_q8_0)
    assert abs(with_q4_0 / base - 1) < 0.25, (base, with_q4_0)


def test_int8_activations_keep_held_out_perplexity_within_one_percent(smollm2_own, smollm2_tokenizer):
    """llama.cpp's products (inputs rounded to int8 per block of 32) on the file's own Q4_1 / Q8_0 model.
    Measured: 28.896 -> 29.015 (+0.41%); on the Q8_0 model 28.942 -> 28.914; on Q4_0 34.599 -> 34.735."""
    exact = perplexity(smollm2_own, smollm2_tokenizer)
    try:
        smollm2_own.use_int8_activations(True)
        rounded = perplexity(smollm2_own, smollm2_tokenizer)
    finally:
        smollm2_own.use_int8_activations(False)
    assert rounded != exact  # the products did change
    assert abs(rounded / exact - 1) < 0.01, (exact, rounded)


def test_save_run_keeps_the_blocks_and_load_run_gives_them_back(smollm2_own, smollm2_tokenizer, tmp_path):
    save_run(smollm2_own, smollm2_tokenizer, tmp_path / "run")
    model, tokenizer = load_run(tmp_path / "run")
    assert (model.config.weight_dtype, model.config.embedding_dtype) == ("q4_1", "q8_0")
    saved, original = model.state_dict(), smollm2_own.state_dict()
    assert list(saved) == list(original)
    for name, array in original.items():
        assert saved[name].dtype == array.dtype
        np.testing.assert_array_equal(saved[name], array, err_msg=name)
    size = (tmp_path / "run" / "model.safetensors").stat().st_size
    assert size < 1.01 * (packed_nbytes(model) + 61 * 576 * 4)  # blocks as they are: ~96.5 MB, not 538 MB
    dequantized, _ = load_any(tmp_path / "run")  # load_any's default: float32 (what training needs)
    assert isinstance(dequantized.wte, Embedding) and dequantized.config.weight_dtype is None


# ---------------------------------------------------------------------------- tiny models
def tiny_llama(seed: int = 0) -> GPT:
    return GPT(GPTConfig(vocab_size=48, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, mlp="swiglu",
                         pos="rope", norm="rmsnorm", bias=False, mlp_hidden=96, seed=seed))


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0", "q4_1"])
def test_a_hugging_face_directory_is_quantized_on_load(dtype, tmp_path):
    float_model = tiny_llama()
    float_model.save_pretrained(tmp_path / "hf")
    model = GPT.from_pretrained(tmp_path / "hf", dtype=dtype)
    assert (model.config.weight_dtype, model.config.embedding_dtype) == (dtype, "q8_0")
    expected = float_model.state_dict()
    for name, array in model.state_dict().items():
        if array.dtype == np.uint8:  # a packed weight: the float weight quantized, bit for bit
            type_name = "q8_0" if name == "wte.weight" else dtype
            np.testing.assert_array_equal(array, quantize(expected[name], type_name).data, err_msg=name)
        else:
            np.testing.assert_array_equal(array, expected[name], err_msg=name)
    converted = tiny_llama().convert_weights(dtype)  # the same through the in-memory conversion
    for name, array in converted.state_dict().items():
        np.testing.assert_array_equal(array, model.state_dict()[name], err_msg=name)


def test_gpt2_layout_fused_qkv_and_untied_head_quantize(tmp_path):
    """GPT-2's c_attn (transposed, split in three) goes through the float path before quantizing; an untied
    lm_head is a Linear like the others."""
    float_model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=64, tie_weights=False))
    float_model.save_pretrained(tmp_path / "hf")
    model = GPT.from_pretrained(tmp_path / "hf", dtype="q8_0")
    assert type(model.lm_head) is QuantizedLinear and type(model.wpe) is Embedding
    ids = np.array([[1, 5, 7, 2]])
    with mf.no_grad():
        np.testing.assert_allclose(model(ids).data, float_model(ids).data, atol=0.05)


def test_save_pretrained_writes_the_dequantized_values(tmp_path):
    model = tiny_llama().convert_weights("q4_1")
    model.save_pretrained(tmp_path / "hf")
    back = GPT.from_pretrained(tmp_path / "hf")  # a Hugging Face directory: float32
    assert back.config.weight_dtype is None
    ids = np.array([[3, 1, 4, 1, 5]])
    with mf.no_grad():
        np.testing.assert_allclose(back(ids).data, model(ids).data, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(back.blocks[0].attn.q_proj.weight.data,
                                  model.blocks[0].attn.q_proj.dequantized_weight())


def test_convert_weights_back_to_float32_is_trainable_again():
    model = tiny_llama().convert_weights("q8_0")
    assert not any(p.requires_grad for p in model.parameters())
    model.convert_weights("float32")
    assert model.config.weight_dtype is None and type(model.blocks[0].mlp.up_proj) is Linear
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="dtype must be one of"):
        model.convert_weights("q5_k")


def test_a_quantized_run_round_trips_and_full_fine_tuning_is_refused(tmp_path):
    model = tiny_llama().convert_weights("q4_0")
    save_run(model, _tiny_tokenizer(), tmp_path / "run")
    assert has_checkpoint(tmp_path / "run")
    loaded, _ = load_any(tmp_path / "run", dtype=None)
    ids = np.array([[1, 2, 3]])
    with mf.no_grad():
        np.testing.assert_array_equal(loaded(ids).data, model(ids).data)
    with pytest.raises(ValueError, match="no trainable parameters"):  # the training loop's own check
        make_optimizer(loaded, TrainConfig())


def _tiny_tokenizer():
    return BPETokenizer.train(["a small text for a small tokenizer"] * 4, vocab_size=260)


def test_bad_dtypes_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPT.from_pretrained(tmp_path, dtype="int8")
    with pytest.raises(ValueError, match="quantized weights are for GPT models"):
        BERT.from_pretrained(tmp_path, dtype="q8_0")
    with pytest.raises(ValueError, match="needs dtype 'float32'"):
        GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=32, weight_dtype="q8_0", dtype="float64")
    with pytest.raises(ValueError, match="multiple of 32"):
        GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=48, weight_dtype="q8_0")
    with pytest.raises(ValueError, match="lower case"):
        GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=32, weight_dtype="Q8_0")
