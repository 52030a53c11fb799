"""The real SmolLM2-135M-Instruct (a 4-bit GGUF) in minifm against transformers loading the same file.

transformers' own GGUF loader (the session fixture hf_smollm2) dequantizes the file to float32 with
its own code; minifm reads it with its own (minifm/pretrained/gguf.py, quants.py). Measured on three
chat prompts: every position's argmax equal, max |logit difference| 9e-5 on logits up to 43 in
magnitude (float32 sums in different orders); the asserted tolerance is 1e-3. 64 greedy tokens are
identical. The GGUF and its Hugging Face export are the same model, bit for bit.
"""
import numpy as np
import pytest

from oracles import require
from minifm.models import GPT
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained

torch = require("torch")
transformers = require("transformers")

LOGIT_TOLERANCE = 1e-3
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Count to five, then explain why the sky is blue in two sentences."}],
]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    # float32, as transformers' GGUF loader gives it (the file's own Q4_1 is tests/models/test_quantized_gpt.py's)
    return GPT.from_pretrained(smollm2_gguf, dtype="float32"), tokenizer_from_pretrained(smollm2_gguf)


def _hf_logits(model, ids, mask=None):
    with torch.no_grad():
        mask = None if mask is None else torch.tensor(mask)
        return model(torch.tensor(ids), attention_mask=mask).logits.numpy()


def test_the_config_is_smollm2s(smollm2):
    config = smollm2[0].config
    assert (config.n_layer, config.n_embd, config.n_head, config.n_kv_head, config.mlp_hidden) == (30, 576, 9, 3, 1536)
    assert (config.vocab_size, config.rope_base, config.tie_weights, config.norm_eps) == (49152, 1e5, True, 1e-5)
    assert smollm2[0].num_parameters() == 134_515_008


@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_logits_match_transformers_on_chat_prompts(smollm2, hf_smollm2, conversation):
    model, tokenizer = smollm2
    ids = np.array([tokenizer.apply_chat_template(CONVERSATIONS[conversation], add_generation_prompt=True)])
    ours, theirs = model(ids).data, _hf_logits(hf_smollm2, ids)
    np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))
    assert np.abs(ours - theirs).max() < LOGIT_TOLERANCE


def test_a_long_left_padded_batch_matches_transformers(smollm2, hf_smollm2):
    model, tokenizer = smollm2
    long_text = " ".join(["The history of the Roman Empire spans many centuries and continents."] * 30)
    rows = [tokenizer.encode(long_text), tokenizer.encode("Paris is the capital of")]
    width = max(len(row) for row in rows)
    ids = np.zeros((2, width), dtype=np.int64)
    mask = np.zeros((2, width), dtype=np.int64)
    for index, row in enumerate(rows):
        ids[index, width - len(row):], mask[index, width - len(row):] = row, 1
    ours, theirs = model(ids, attention_mask=mask).data, _hf_logits(hf_smollm2, ids, mask)
    for index, row in enumerate(rows):
        real = slice(width - len(row), width)
        np.testing.assert_array_equal(ours[index, real].argmax(-1), theirs[index, real].argmax(-1))
        assert np.abs(ours[index, real] - theirs[index, real]).max() < LOGIT_TOLERANCE
    assert width > 300


def test_64_greedy_tokens_are_identical(smollm2, hf_smollm2):
    model, tokenizer = smollm2
    ids = np.array([tokenizer.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True)])
    ours = np.asarray(model.generate(ids, 64))
    with torch.no_grad():
        theirs = hf_smollm2.generate(torch.tensor(ids), max_new_tokens=64, min_new_tokens=64, do_sample=False,
                                     eos_token_id=None, pad_token_id=tokenizer.pad_token_id).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert "Paris" in tokenizer.decode(ours[0, ids.shape[1]:].tolist())


def test_the_gguf_and_its_hugging_face_export_are_the_same_model(smollm2, hf_smollm2, tmp_path):
    model, tokenizer = smollm2
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = GPT.from_pretrained(tmp_path)
    for (name, ours), (_, again) in zip(model.named_parameters(), reloaded.named_parameters()):
        np.testing.assert_array_equal(ours.data, again.data, err_msg=name)
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    for (name, theirs), (_, from_gguf) in zip(exported.state_dict().items(), hf_smollm2.state_dict().items()):
        np.testing.assert_array_equal(theirs.numpy(), from_gguf.numpy(), err_msg=name)  # transformers' own decode
    ids = np.array([tokenizer.apply_chat_template(CONVERSATIONS[1], add_generation_prompt=True)])
    np.testing.assert_array_equal(_hf_logits(exported, ids), _hf_logits(hf_smollm2, ids))
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    expected = hf_tokenizer.apply_chat_template(CONVERSATIONS[2], add_generation_prompt=True, return_dict=False)
    assert list(expected) == tokenizer.apply_chat_template(CONVERSATIONS[2], add_generation_prompt=True)
