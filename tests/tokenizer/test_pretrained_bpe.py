"""Byte-level BPE tokenizers read by minifm -- SmolLM2 from its GGUF file, a Llama-3-style
tokenizer.json, a GPT-2-style one with every added-token option, minifm's own BPETokenizer written
with save_pretrained -- give the ids of Hugging Face `tokenizers` (the oracle) and decode as it does.

The SmolLM2 oracle is transformers' own GGUF conversion (AutoTokenizer.from_pretrained(folder,
gguf_file=...), run once per session and saved), loaded with tokenizers.Tokenizer.from_file. That
conversion keeps GPT-2's ByteLevel pre-tokenizer for `tokenizer.ggml.pre = "smollm"`, while SmolLM2's
own tokenizer.json (and llama.cpp) first split every digit on its own; minifm follows the model.
The two differ only where white space runs into a number: "x  1" is x|ĠĠ|1 for the model (the
digit is cut off first, so the spaces stay one piece) but x|Ġ|Ġ|1 for the conversion. So the oracle gets SmolLM2's pre-tokenizer back, and a separate test shows the
conversion agrees on every text without such a run and differs on "x  1".

Drawn texts hold only code points Python's unicodedata assigns (see pretrained_corpora.py: Python
3.11 has Unicode 14, `tokenizers` newer tables).
"""
import json
import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import require
from minifm.tokenizer import from_pretrained
from pretrained_corpora import all_texts, assigned_in_python_unicode, comparison_corpora
from strategies import tokenizer_text

tokenizers = require("tokenizers")

drawn_text = tokenizer_text.filter(assigned_in_python_unicode)
SMOLLM2_PRE_TOKENIZER = tokenizers.pre_tokenizers.Sequence([
    tokenizers.pre_tokenizers.Digits(individual_digits=True),
    tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
])
# SmolLM2 has no token for these six control characters: both tokenizers drop them.
SMOLLM2_DROPPED = {0x04: None, 0x06: None, 0x13: None, 0x14: None, 0x16: None, 0x1D: None}


def assert_same_ids(ours, oracle, texts, name, **encode_options):
    """ids of every text equal; returns how many texts were compared."""
    add_special_tokens = encode_options.get("add_special_tokens", True)
    theirs = [encoding.ids for encoding in oracle.encode_batch(texts, add_special_tokens=add_special_tokens)]
    mine = ours.encode_batch(texts, **encode_options)
    for index, (a, b) in enumerate(zip(mine, theirs)):
        assert a == b, f"{name}[{index}] {texts[index][:60]!r}: first difference at {next(i for i, (x, y) in enumerate(zip(a + [None], b + [None])) if x != y)}"
    return len(texts)


@pytest.fixture(scope="module")
def smollm2_oracle(smollm2_transformers_dir):
    """transformers' GGUF conversion with SmolLM2's own pre-tokenizer (Digits + ByteLevel) put back."""
    oracle = tokenizers.Tokenizer.from_file(str(smollm2_transformers_dir / "tokenizer.json"))
    oracle.pre_tokenizer = SMOLLM2_PRE_TOKENIZER
    return oracle


# ------------------------------------------------------------------ SmolLM2 from GGUF
def test_smollm2_tables_equal_transformers_conversion(smollm2_tokenizer, smollm2_transformers_dir):
    theirs = json.loads((smollm2_transformers_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ours = smollm2_tokenizer.to_json()
    assert ours["model"]["vocab"] == theirs["model"]["vocab"]
    assert [tuple(m) for m in ours["model"]["merges"]] == [tuple(m) for m in theirs["model"]["merges"]]
    keys = ("id", "content", "special", "normalized", "lstrip", "rstrip", "single_word")
    assert [[t[k] for k in keys] for t in ours["added_tokens"]] == [[t[k] for k in keys] for t in theirs["added_tokens"]]
    config = json.loads((smollm2_transformers_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(smollm2_tokenizer, name) == config[name], name
    assert (smollm2_tokenizer.bos_token_id, smollm2_tokenizer.eos_token_id) == (1, 2)
    template_file = smollm2_transformers_dir / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.exists() else config["chat_template"]
    assert smollm2_tokenizer.chat_template == template
    assert smollm2_tokenizer.vocab_size == 49152 == len(smollm2_tokenizer.get_vocab())
    assert smollm2_tokenizer.model.uses_minifm_encoder     # minifm's compiled encoder does the merging


def test_smollm2_ids_and_decode_equal_hf_on_corpora(smollm2_tokenizer, smollm2_oracle):
    compared = 0
    for name, texts in comparison_corpora().items():
        compared += assert_same_ids(smollm2_tokenizer, smollm2_oracle, texts, name)
        assert_same_ids(smollm2_tokenizer, smollm2_oracle, texts, name, add_special_tokens=False)
    assert compared > 150
    for text in all_texts():
        ids = smollm2_tokenizer.encode(text)
        for skip in (False, True):
            assert smollm2_tokenizer.decode(ids, skip_special_tokens=skip) == smollm2_oracle.decode(ids, skip_special_tokens=skip)
        if not any(special in text for special in smollm2_tokenizer.special_tokens):
            assert smollm2_tokenizer.decode(ids) == text.translate(SMOLLM2_DROPPED)


def test_smollm2_compiled_and_reference_encoders_agree(smollm2_tokenizer, smollm2_oracle, kernel_path):
    """The merging runs on minifm's compiled encoder, or on its Python reference (MINIFM_KERNELS=reference)."""
    texts = comparison_corpora()["tinyworld"][:20] + comparison_corpora()["edge"]
    assert_same_ids(smollm2_tokenizer, smollm2_oracle, texts, kernel_path)


@given(text=drawn_text)
def test_smollm2_drawn_text_ids_decode_round_trip(smollm2_tokenizer, smollm2_oracle, text):
    ids = smollm2_tokenizer.encode(text)
    assert ids == smollm2_oracle.encode(text).ids
    assert smollm2_tokenizer.decode(ids) == smollm2_oracle.decode(ids, skip_special_tokens=False)
    assert smollm2_tokenizer.decode(ids) == text.translate(SMOLLM2_DROPPED)


@given(ids=st.lists(st.integers(0, 49151), max_size=24))
def test_smollm2_decode_of_any_ids_equals_hf(smollm2_tokenizer, smollm2_oracle, ids):
    """Ids that cut UTF-8 characters decode with U+FFFD exactly where `tokenizers` puts them."""
    assert smollm2_tokenizer.decode(ids) == smollm2_oracle.decode(ids, skip_special_tokens=False)


def test_smollm2_splits_digits_as_the_model_does_not_as_transformers_gguf(smollm2_tokenizer, smollm2_transformers_dir):
    assert smollm2_tokenizer.to_json()["pre_tokenizer"]["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}
    as_converted = tokenizers.Tokenizer.from_file(str(smollm2_transformers_dir / "tokenizer.json"))
    space_before = re.compile(r"\s(?=\S)")

    def has_space_before_number(text):
        return any(unicodedata.category(text[m.end()]).startswith("N") for m in space_before.finditer(text))

    numbers = ["x1 y22 z333", "3.14159e-10", "(2) [10] {100}", "a1b2c3", "v1.2.3 #42 x²³ Ⅻ½", "1+1=2",
               "2024-01-01T12:00:00", "[1,2,3]", "١٢٣/१२३"]
    elsewhere = [t for t in all_texts() + numbers if not has_space_before_number(t)]
    assert len(elsewhere) > 40 and sum(any(c.isdigit() for c in t) for t in elsewhere) >= len(numbers)
    assert_same_ids(smollm2_tokenizer, as_converted, elsewhere, "no white space before a digit")
    ours = [smollm2_tokenizer.id_to_token(i) for i in smollm2_tokenizer.encode("x  1")]
    theirs = as_converted.encode("x  1").tokens
    assert (ours, theirs) == (["x", "ĠĠ", "1"], ["x", "Ġ", "Ġ", "1"])


def test_smollm2_save_pretrained_loads_in_tokenizers_and_transformers(smollm2_tokenizer, smollm2_oracle, tmp_path):
    transformers = require("transformers")
    written = smollm2_tokenizer.save_pretrained(tmp_path)
    assert sorted(p.name for p in written) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    texts = comparison_corpora()["tinyworld"] + comparison_corpora()["edge"] + comparison_corpora()["stdlib"][:20]
    reloaded = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert_same_ids(smollm2_tokenizer, reloaded, texts, "saved")
    assert_same_ids(smollm2_tokenizer, smollm2_oracle, texts, "oracle")
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert [auto(t)["input_ids"] for t in texts] == smollm2_tokenizer.encode_batch(texts)
    assert (auto.bos_token, auto.eos_token, auto.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert auto.model_max_length == smollm2_tokenizer.model_max_length == 8192
    again = from_pretrained(tmp_path)
    assert again.to_json() == smollm2_tokenizer.to_json()
    assert again.chat_template == smollm2_tokenizer.chat_template


# ------------------------------------------------------------------ a Llama-3-style tokenizer.json
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def tiktoken_style_merges(vocab: dict[str, int]) -> list[list[str]]:
    """Every split of every token into two vocabulary tokens, ordered by the token's rank: how
    vocabularies converted from tiktoken (Llama-3) list their merges -- many tokens made by several."""
    merges = []
    for token, rank in vocab.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                merges.append((rank, vocab[left], vocab[right], left, right))
    merges.sort()
    return [[left, right] for *_, left, right in merges]


@pytest.fixture(scope="module", params=[True, False], ids=["ignore_merges", "merges_only"])
def llama3_style(request, smollm2_tokenizer, tmp_path_factory):
    """(minifm, oracle) for SmolLM2's vocabulary dressed as Llama-3: the Llama-3 Split regex,
    tiktoken-style merges, ignore_merges, and a post-processor that puts <|im_start|> first."""
    data = smollm2_tokenizer.to_json()
    data["model"]["merges"] = tiktoken_style_merges(data["model"]["vocab"])
    data["model"]["ignore_merges"] = request.param
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ]}
    data["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|im_start|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}},
    ]}
    path = tmp_path_factory.mktemp("llama3_style") / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return from_pretrained(path), tokenizers.Tokenizer.from_file(str(path))


def test_llama3_style_ids_equal_hf_on_corpora(llama3_style):
    ours, oracle = llama3_style
    assert not ours.model.uses_minifm_encoder   # several merges make one token: the Python path
    compared = 0
    for name, texts in comparison_corpora().items():
        compared += assert_same_ids(ours, oracle, texts, name)
        assert_same_ids(ours, oracle, texts, name, add_special_tokens=False)
    assert compared > 150
    assert ours.encode("Hi")[0] == 1 and ours.encode("Hi", "you") == oracle.encode("Hi", "you").ids


@given(text=drawn_text)
def test_llama3_style_drawn_text(llama3_style, text):
    ours, oracle = llama3_style
    ids = ours.encode(text)
    assert ids == oracle.encode(text).ids
    assert ours.decode(ids) == oracle.decode(ids, skip_special_tokens=False)
    assert ours.decode(ids, skip_special_tokens=True) == oracle.decode(ids, skip_special_tokens=True)


# ------------------------------------------------------------------ GPT-2 style with every added-token option
EXTRA_ADDED = [
    {"content": "<tool>", "special": False, "normalized": True, "lstrip": False, "rstrip": False, "single_word": False},
    {"content": "[end]", "special": False, "normalized": False, "lstrip": True, "rstrip": True, "single_word": False},
    {"content": "word", "special": False, "normalized": False, "lstrip": False, "rstrip": False, "single_word": True},
    {"content": "ＦＵＬＬ", "special": True, "normalized": True, "lstrip": False, "rstrip": False, "single_word": False},
    {"content": "<|im_start|>x", "special": True, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False},
]


@pytest.fixture(scope="module")
def gpt2_style(smollm2_tokenizer, tmp_path_factory):
    """(minifm, oracle): merges as "a b" strings, ByteLevel(add_prefix_space=True), an NFKC
    normalizer, and added tokens with lstrip/rstrip/single_word/normalized set."""
    data = smollm2_tokenizer.to_json()
    data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]
    data["normalizer"] = {"type": "NFKC"}
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    next_id = 49152
    for token in EXTRA_ADDED:   # a content the vocabulary has ("word") keeps its vocabulary id
        token_id = data["model"]["vocab"].get(token["content"])
        if token_id is None:
            token_id, next_id = next_id, next_id + 1
        data["added_tokens"].append(dict(token, id=token_id))
    path = tmp_path_factory.mktemp("gpt2_style") / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return from_pretrained(path), tokenizers.Tokenizer.from_file(str(path))


added_token_text = st.lists(
    st.one_of(drawn_text, st.sampled_from([t["content"] for t in EXTRA_ADDED] + ["FULL", " ", "  ", "words", "<|im_start|>"])),
    max_size=8,
).map("".join)


@given(text=added_token_text)
def test_gpt2_style_added_tokens_equal_hf(gpt2_style, text):
    ours, oracle = gpt2_style
    ids = ours.encode(text)
    assert ids == oracle.encode(text).ids
    assert ours.decode(ids) == oracle.decode(ids, skip_special_tokens=False)
    assert ours.decode(ids, skip_special_tokens=True) == oracle.decode(ids, skip_special_tokens=True)


def test_gpt2_style_corpora_and_vocabulary(gpt2_style):
    ours, oracle = gpt2_style
    for name, texts in comparison_corpora().items():
        assert_same_ids(ours, oracle, texts, name)
    assert ours.vocab_size == oracle.get_vocab_size() == 49152 + len(EXTRA_ADDED) - 1   # "word" overlaps
    assert ours.get_vocab() == oracle.get_vocab()
    for token in ("<tool>", "[end]", "word", "ＦＵＬＬ", "Ġthe", "<|im_end|>", "not-a-token"):
        assert ours.token_to_id(token) == oracle.token_to_id(token)
    for token_id in (0, 1, 300, 3002, 49151, 49152, 49154, 49155):
        assert ours.id_to_token(token_id) == oracle.id_to_token(token_id)
    assert ours.special_tokens["ＦＵＬＬ"] == 49154 and "<tool>" not in ours.special_tokens


# ------------------------------------------------------------------ minifm's own BPETokenizer, saved for Hugging Face
@pytest.fixture(scope="module", params=["gpt4", "gpt2"])
def minifm_saved(request, tokenizer, gpt2_tokenizer, tmp_path_factory):
    """(BPETokenizer, its save_pretrained directory)."""
    ours = tokenizer if request.param == "gpt4" else gpt2_tokenizer
    directory = tmp_path_factory.mktemp(f"minifm_{request.param}")
    ours.save_pretrained(directory)
    return ours, directory


def test_bpe_tokenizer_save_pretrained_ids_equal_hf(minifm_saved):
    ours, directory = minifm_saved
    oracle = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    assert oracle.get_vocab_size() == ours.vocab_size
    compared = 0
    for name, texts in comparison_corpora().items():
        theirs = [e.ids for e in oracle.encode_batch(texts)]
        assert ours.encode_batch(texts, allowed_special="all") == theirs, name
        compared += len(texts)
    assert compared > 150
    reread = from_pretrained(directory)
    assert reread.model.uses_minifm_encoder
    assert reread.encode_batch(all_texts()) == ours.encode_batch(all_texts(), allowed_special="all")
    assert reread.eos_token == "<|endoftext|>"


@given(text=drawn_text)
def test_bpe_tokenizer_save_pretrained_drawn_text(minifm_saved, text):
    ours, directory = minifm_saved
    oracle = _saved_oracle(directory)
    ids = ours.encode(text, allowed_special="all")
    assert ids == oracle.encode(text).ids
    assert oracle.decode(ids, skip_special_tokens=False) == ours.decode(ids)


_ORACLES = {}


def _saved_oracle(directory):
    if directory not in _ORACLES:
        _ORACLES[directory] = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    return _ORACLES[directory]


def test_bpe_tokenizer_save_pretrained_loads_in_transformers(minifm_saved):
    transformers = require("transformers")
    ours, directory = minifm_saved
    auto = transformers.AutoTokenizer.from_pretrained(directory)
    texts = comparison_corpora()["multilingual"] + comparison_corpora()["edge"]
    assert [auto(t)["input_ids"] for t in texts] == ours.encode_batch(texts, allowed_special="all")
    ids = ours.encode(texts[0])
    assert auto.decode(ids) == ours.decode(ids)
    assert auto.eos_token == "<|endoftext|>"
    assert auto.pad_token == ("<|pad|>" if "<|pad|>" in ours.special_tokens else None)
