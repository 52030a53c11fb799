"""BPETokenizer: round trips, special tokens, id checks, training properties, file format."""
import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minifm.tokenizer import DEFAULT_SPECIAL_TOKENS, BPETokenizer, pretokenize
from strategies import tokenizer_text

shared_fixture = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------ round trips
@shared_fixture
@given(text=tokenizer_text)
def test_decode_encode_round_trip_on_any_text(kernel_path, tokenizer, gpt2_tokenizer, text):
    for tok in (tokenizer, gpt2_tokenizer):
        ids = tok.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
        assert tok.decode_bytes(ids) == text.encode("utf-8")
        assert tok.decode(tok.encode(text, allowed_special="all")) == text


@given(text=tokenizer_text)
def test_compiled_and_reference_paths_give_identical_ids(tokenizer, text):
    from minifm.kernels._backend import compiled, reference_forced, use_reference

    if compiled("bpe") is None:
        pytest.skip("compiled bpe kernel not built (or MINIFM_KERNELS=reference)")
    previous = reference_forced()
    try:
        fast = tokenizer.encode(text, allowed_special="all")
        use_reference(True)
        slow = tokenizer.encode(text, allowed_special="all")
    finally:
        use_reference(previous)
    assert fast == slow


@given(text=tokenizer_text)
def test_tokens_never_cross_pre_token_boundaries(tokenizer, text):
    pieces = pretokenize(text, tokenizer.pattern)
    assert tokenizer.encode(text) == [i for piece in pieces for i in tokenizer.encode(piece)]


@given(text=tokenizer_text)
def test_encode_batch_is_encode_per_text(tokenizer, text):
    texts = [text, "", text[::-1]]
    assert tokenizer.encode_batch(texts, allowed_special="all") == [tokenizer.encode(t, allowed_special="all") for t in texts]


def test_lone_surrogates_become_replacement_characters(tokenizer):
    ids = tokenizer.encode("a\ud800b\udfffc")
    assert tokenizer.decode(ids) == "a\ufffdb\ufffdc"


def test_trained_text_compresses(tokenizer, training_texts):
    text = training_texts[0]
    assert len(tokenizer.encode(text)) < len(text.encode("utf-8")) / 2


# ------------------------------------------------------------------ decoding partial sequences
def test_partial_utf8_decodes_with_replacement_characters(tokenizer):
    text = "héllo 你好 🙂"
    ids = tokenizer.encode(text)
    byte_ids = [b for b in text.encode("utf-8")]  # one id per byte: always a valid encoding
    assert tokenizer.decode(byte_ids) == text
    for cut in range(len(byte_ids) + 1):
        partial = byte_ids[:cut]
        raw = bytes(partial)
        assert tokenizer.decode_bytes(partial) == raw
        assert tokenizer.decode(partial) == raw.decode("utf-8", errors="replace")
    cut_emoji = list("🙂".encode("utf-8")[:3])
    assert tokenizer.decode(cut_emoji) == "\ufffd"
    assert tokenizer.decode(ids) == text


# ------------------------------------------------------------------ special tokens
@shared_fixture
@given(before=tokenizer_text, after=tokenizer_text, token=st.sampled_from(DEFAULT_SPECIAL_TOKENS))
def test_special_tokens_are_single_ids_only_when_allowed(kernel_path, tokenizer, before, after, token):
    special_ids = set(tokenizer.special_tokens.values())
    text = before + token + after
    ids_none = tokenizer.encode(text)  # default: nothing allowed
    assert not special_ids & set(ids_none)
    assert tokenizer.decode(ids_none) == text
    ids_all = tokenizer.encode(text, allowed_special="all")
    expected = (tokenizer.encode(before, allowed_special="all") + [tokenizer.special_tokens[token]]
                + tokenizer.encode(after, allowed_special="all"))
    assert ids_all == expected
    assert tokenizer.decode(ids_all) == text
    # allowing another token only: `token` stays ordinary text
    other = "<|pad|>" if token != "<|pad|>" else "<|endoftext|>"
    ids_other = tokenizer.encode(text, allowed_special={other})
    assert tokenizer.special_tokens[token] not in ids_other


def test_special_token_ids_follow_the_merges(tokenizer):
    first = tokenizer.vocab_size - len(DEFAULT_SPECIAL_TOKENS)
    assert first == 256 + len(tokenizer.merges)
    assert tokenizer.special_tokens == {t: first + i for i, t in enumerate(DEFAULT_SPECIAL_TOKENS)}
    for token, token_id in tokenizer.special_tokens.items():
        assert tokenizer.token_to_id(token) == token_id
        assert tokenizer.id_to_bytes(token_id) == token.encode("utf-8")


def test_training_never_merges_special_token_text():
    specials = ("<|endoftext|>",)
    texts = ["alpha<|endoftext|>beta<|endoftext|>" * 50]
    tok = BPETokenizer.train(texts, vocab_size=260, special_tokens=specials)  # 3 merges
    learned = [tok.id_to_bytes(256 + k) for k in range(len(tok.merges))]
    assert not any(b"<|" in token or b"|>" in token for token in learned)


def test_bad_allowed_special_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="not special tokens"):
        tokenizer.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tokenizer.encode("x", allowed_special="some")


# ------------------------------------------------------------------ ids
@pytest.mark.parametrize("bad", [-1, "vocab", 10**30])
def test_ids_outside_the_vocabulary_raise(tokenizer, bad):
    bad_id = tokenizer.vocab_size if bad == "vocab" else bad
    with pytest.raises(ValueError, match=rf"{bad_id}.*\[0, {tokenizer.vocab_size}\)"):
        tokenizer.decode([65, bad_id])
    with pytest.raises(ValueError, match=str(tokenizer.vocab_size)):
        tokenizer.id_to_bytes(bad_id)


def test_non_integer_ids_raise(tokenizer):
    with pytest.raises(TypeError):
        tokenizer.decode([1.5])
    with pytest.raises(TypeError):
        tokenizer.decode("abc")
    with pytest.raises(TypeError):
        tokenizer.decode([True])


def test_token_to_id_and_id_to_bytes_are_inverse(tokenizer):
    for token_id in range(tokenizer.vocab_size - len(DEFAULT_SPECIAL_TOKENS)):
        token_bytes = tokenizer.id_to_bytes(token_id)
        found = tokenizer.token_to_id(token_bytes)
        assert tokenizer.id_to_bytes(found) == token_bytes
    assert tokenizer.token_to_id("definitely not a token at all") is None


# ------------------------------------------------------------------ training properties
def test_vocab_size_is_honoured(training_texts):
    for vocab_size in (256 + 3, 300, 777):
        tok = BPETokenizer.train(training_texts[:5], vocab_size=vocab_size, special_tokens=("<|a|>", "<|b|>", "<|c|>"))
        assert tok.vocab_size == vocab_size
        assert len(tok.merges) == vocab_size - 259


def test_first_merge_is_the_most_frequent_pair(training_texts):
    texts = training_texts[:10]
    tok = BPETokenizer.train(texts, vocab_size=257, pattern="gpt2")
    pairs = Counter()
    for text in texts:
        for piece in pretokenize(text, "gpt2"):
            data = piece.encode("utf-8")
            pairs.update(zip(data, data[1:]))
    best = min(pairs, key=lambda pair: (-pairs[pair], pair))
    assert tok.merges == [best]


def test_training_that_runs_out_of_pairs_warns():
    with pytest.warns(UserWarning, match="fewer than"):
        tok = BPETokenizer.train(["ab ab ab"], vocab_size=400, special_tokens=("<|x|>",))
    assert tok.special_tokens["<|x|>"] == 256 + len(tok.merges)


def test_training_input_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train(["abc"], vocab_size=200)
    with pytest.raises(ValueError, match="pattern"):
        BPETokenizer.train(["abc"], vocab_size=300, pattern="gpt3")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        BPETokenizer.train(["abc", 5], vocab_size=300)
    with pytest.raises(TypeError, match="single str"):
        BPETokenizer.train("abc", vocab_size=300)
    with pytest.raises(ValueError, match="repeated"):
        BPETokenizer.train(["abc"], vocab_size=300, special_tokens=("<|a|>", "<|a|>"))


def test_invalid_merges_are_rejected():
    with pytest.raises(ValueError, match=r"merges\[1\]"):
        BPETokenizer([[97, 98], [300, 1]])
    with pytest.raises(ValueError, match="repeats"):
        BPETokenizer([[97, 98], [97, 98]])


# ------------------------------------------------------------------ files
@given(text=tokenizer_text)
def test_save_load_round_trip(tmp_path_factory, tokenizer, text):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tokenizer.merges
    assert loaded.special_tokens == tokenizer.special_tokens
    assert loaded.pattern == tokenizer.pattern
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode(text, allowed_special="all") == tokenizer.encode(text, allowed_special="all")


def test_deepcopy_after_encoding_gives_an_equal_independent_tokenizer(kernel_path, tokenizer):
    # the compiled encoder cached by the first encode() cannot be copied; a deep copy rebuilds it
    import copy

    text = "Mara lives in the red house. 你好 🙂"
    ids = tokenizer.encode(text)
    clone = copy.deepcopy(tokenizer)
    assert clone is not tokenizer and clone.merges == tokenizer.merges
    assert clone.encode(text) == ids


def _tamper(data, how):
    if how == "merge id":
        data["merges"][3][0] = data["merges"][3][1] + 1 if data["merges"][3][1] + 1 != data["merges"][3][0] else 0
    elif how == "future id":
        data["merges"][0] = [256 + len(data["merges"]), 97]
    elif how == "special id":
        data["special_tokens"]["<|pad|>"] += 100
    elif how == "version":
        data["version"] = 99
    elif how == "pattern":
        data["pattern"] = "gpt3"
    elif how == "missing key":
        del data["merges"]
    elif how == "extra key":
        data["vocab"] = {}
    elif how == "vocab size":
        data["vocab_size"] += 1
    elif how == "pair shape":
        data["merges"][5] = [1, 2, 3]
    elif how == "format":
        data["format"] = "tiktoken"
    return data


@pytest.mark.parametrize("how", ["merge id", "future id", "special id", "version", "pattern", "missing key",
                                 "extra key", "vocab size", "pair shape", "format"])
def test_loading_a_tampered_file_raises(tmp_path, tokenizer, how):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    data = _tamper(json.loads(path.read_text(encoding="utf-8")), how)
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")):
        BPETokenizer.load(path)


def test_loading_broken_json_raises(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    path.write_text(path.read_text(encoding="utf-8")[:-10], encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        BPETokenizer.load(path)


def test_save_leaves_no_temporary_file(tmp_path, tokenizer):
    tokenizer.save(tmp_path / "tokenizer.json")
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]
