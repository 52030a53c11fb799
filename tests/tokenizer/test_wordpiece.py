"""WordPiece (all-MiniLM-L6-v2's BERT tokenizer) read by minifm gives the ids and the decoded text of
Hugging Face `tokenizers`, with and without the [CLS] ... [SEP] template, on the comparison corpora
(stdlib, tinyworld en/es/de, multilingual, edge cases), on BERT's hard cases (accents, CJK,
punctuation, control characters, over-long words) and on drawn text; each pipeline piece (normalizer,
pre-tokenizer, decoder) is also checked on its own against the `tokenizers` class of the same name.

The MiniLM tokenizer.json pads and truncates every text to 128 ids; minifm keeps those settings for
save_pretrained but, like transformers, does not apply them in encode, so the oracle has them
switched off (truncation is compared separately, with max_length).
Drawn texts hold only code points Python's unicodedata assigns (see pretrained_corpora.py).
"""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import require
from minifm.tokenizer import from_pretrained
from minifm.tokenizer.wordpiece import bert_normalize, bert_pre_tokenize, decode_wordpiece
from pretrained_corpora import all_texts, assigned_in_python_unicode
from strategies import tokenizer_text

tokenizers = require("tokenizers")

drawn_text = tokenizer_text.filter(assigned_in_python_unicode)
BERT_CASES = [
    "Héllo Wörld ÀÉÎÕÜ Ångström naïve façade Crème Brûlée", "北京欢迎你 東京 한국어 にほんご 㐀 𠀀", "hello,world!(x)[y]{z}",
    "...---!!!??? «quotes» „low“ — – ¿¡ ・", "a\x00b\x01c\x7fd\u200be\ufffdf\u00adg\u2028h", "tab\tnew\nline\r\nreturn\x0bvt",
    "x" * 101, "y" * 100, "Supercalifragilisticexpialidocious" * 4, "don't won't I'm you're it's",
    "ΣΑΣ Σ σς ΌΣΟΣ", "İstanbul ǅ ß ẞ", "ﬁne ﬂow ℌ ①", "²³ ½ Ⅻ ٣٤", "emoji 🙂 👩\u200d👩\u200d👧 🇫🇷", "[CLS] [SEP] [MASK] [PAD] [UNK]",
    "[cls] hello [MASK]x [SEP][SEP]", "  ", "", "\u3000full\u3000width\uff01", "e\u0301\u0302 \u0301 ñ", "U.S.A. e.g. 3.14",
]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def oracle(minilm_dir):
    tok = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def test_vocabulary_and_special_tokens(minilm, oracle):
    assert minilm.vocab_size == oracle.get_vocab_size() == 30522
    assert minilm.get_vocab() == oracle.get_vocab()
    assert minilm.special_tokens == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    assert (minilm.pad_token, minilm.pad_token_id, minilm.unk_token_id) == ("[PAD]", 0, 100)
    assert minilm.model_max_length == 512 and minilm.num_special_tokens_to_add() == 2
    for token in ("hello", "##ing", "[CLS]", "not-a-token"):
        assert minilm.token_to_id(token) == oracle.token_to_id(token)


def test_ids_and_decode_equal_hf_on_corpora_and_bert_cases(minilm, oracle):
    texts = all_texts() + BERT_CASES
    for add_special_tokens in (True, False):
        theirs = [e.ids for e in oracle.encode_batch(texts, add_special_tokens=add_special_tokens)]
        ours = minilm.encode_batch(texts, add_special_tokens=add_special_tokens)
        for text, a, b in zip(texts, ours, theirs):
            assert a == b, text[:80]
    assert len(texts) > 180
    for ids in ours:
        for skip in (True, False):
            assert minilm.decode(ids, skip_special_tokens=skip) == oracle.decode(ids, skip_special_tokens=skip)
    assert minilm.encode("x" * 101) == [101, 100, 102]          # longer than max_input_chars_per_word
    assert minilm.decode(minilm.encode("Héllo, WORLD!")) == "[CLS] hello, world! [SEP]"


@given(text=drawn_text)
def test_drawn_text_equals_hf(minilm, oracle, text):
    ids = minilm.encode(text)
    assert ids == oracle.encode(text).ids
    assert minilm.encode(text, add_special_tokens=False) == oracle.encode(text, add_special_tokens=False).ids
    assert minilm.decode(ids) == oracle.decode(ids, skip_special_tokens=False)
    assert minilm.decode(ids, skip_special_tokens=True) == oracle.decode(ids, skip_special_tokens=True)


@given(ids=st.lists(st.integers(0, 30521), max_size=20))
def test_decode_of_any_ids_equals_hf(minilm, oracle, ids):
    assert minilm.decode(ids) == oracle.decode(ids, skip_special_tokens=False)
    assert minilm.decode(ids, skip_special_tokens=True) == oracle.decode(ids, skip_special_tokens=True)


@given(text=drawn_text, clean_text=st.booleans(), chinese=st.booleans(),
       strip_accents=st.sampled_from([None, True, False]), lowercase=st.booleans())
def test_bert_normalizer_equals_hf(text, clean_text, chinese, strip_accents, lowercase):
    theirs = tokenizers.normalizers.BertNormalizer(
        clean_text=clean_text, handle_chinese_chars=chinese, strip_accents=strip_accents, lowercase=lowercase)
    assert bert_normalize(text, clean_text, chinese, strip_accents, lowercase) == theirs.normalize_str(text)


@given(text=drawn_text)
def test_bert_pre_tokenizer_equals_hf(text):
    theirs = [piece for piece, _ in tokenizers.pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)]
    assert bert_pre_tokenize(text) == theirs


@given(tokens=st.lists(st.one_of(st.sampled_from(["##ing", "##s", ".", ",", "'", "n't", "do", "not", "'m", "'s", "?", "!",
                                                  "'ve", "'re", "hello", "##", "#", " ", "[CLS]"]), st.text(max_size=4)),
                       max_size=12),
       cleanup=st.booleans(), prefix=st.sampled_from(["##", "@@", ""]))
def test_wordpiece_decoder_equals_hf(tokens, cleanup, prefix):
    assert decode_wordpiece(tokens, prefix=prefix, cleanup=cleanup) == \
        tokenizers.decoders.WordPiece(prefix=prefix, cleanup=cleanup).decode(tokens)


@pytest.mark.parametrize("max_length", [2, 3, 5, 8, 17])
def test_max_length_truncates_as_hf(minilm, minilm_dir, max_length):
    oracle = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    oracle.no_padding()
    oracle.enable_truncation(max_length)
    first, second = "The quick brown fox jumps over the lazy dog again and again.", "Hello there, general Kenobi!"
    assert minilm.encode(first, max_length=max_length) == oracle.encode(first).ids
    pair_oracle = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    pair_oracle.no_padding()
    pair_oracle.enable_truncation(max_length + 3)
    for a, b in ((first, second), (second, first), ("short", first), (first, first)):
        assert minilm.encode(a, b, max_length=max_length + 3) == pair_oracle.encode(a, b).ids
    assert minilm.encode(first, add_special_tokens=False, max_length=max_length) == \
        oracle.encode(first, add_special_tokens=False).ids


def test_pairs_equal_hf(minilm, oracle):
    for a, b in (("What is BERT?", "A transformer encoder."), ("", "x"), ("Ünï", "北京")):
        assert minilm.encode(a, b) == oracle.encode(a, b).ids
        assert minilm.encode(a, b, add_special_tokens=False) == oracle.encode(a, b, add_special_tokens=False).ids


def test_encode_batch_and_pad_batch(minilm):
    sentences = ["A man is eating food.", "Hi", "A much longer sentence, with punctuation; and more words!"]
    batch = minilm.encode_batch(sentences)
    assert batch == [minilm.encode(s) for s in sentences]
    input_ids, attention_mask = minilm.pad_batch(batch)
    longest = max(map(len, batch))
    assert input_ids.shape == attention_mask.shape == (3, longest) and input_ids.dtype == np.int64
    for row, ids in enumerate(batch):
        assert input_ids[row, :len(ids)].tolist() == ids
        assert (input_ids[row, len(ids):] == minilm.pad_token_id).all()
        assert attention_mask[row].tolist() == [1] * len(ids) + [0] * (longest - len(ids))
    left_ids, left_mask = minilm.pad_batch(batch, padding_side="left")
    assert left_ids[1, -len(batch[1]):].tolist() == batch[1] and left_mask[1, 0] == 0
    with pytest.raises(ValueError, match="padding_side"):
        minilm.pad_batch(batch, padding_side="middle")


def test_save_pretrained_round_trip(minilm, minilm_dir, tmp_path):
    transformers = require("transformers")
    minilm.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    original = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding", "added_tokens"):
        assert saved[key] == original[key], key
    assert saved["model"]["vocab"] == original["model"]["vocab"]
    texts = all_texts()[:60] + BERT_CASES
    # with the file's own padding/truncation (128) both files give the same ids
    reloaded = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    as_shipped = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    assert [e.ids for e in reloaded.encode_batch(texts)] == [e.ids for e in as_shipped.encode_batch(texts)]
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert [auto(t)["input_ids"] for t in texts] == minilm.encode_batch(texts)
    ids = minilm.encode(BERT_CASES[0])
    assert auto.decode(ids) == minilm.decode(ids)
    assert (auto.pad_token, auto.unk_token, auto.cls_token, auto.sep_token, auto.mask_token) == \
        ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert from_pretrained(tmp_path).encode_batch(texts) == minilm.encode_batch(texts)
