"""Bad inputs to minifm.tokenizer.from_pretrained: missing files, malformed JSON, and every
tokenizer.json or GGUF setting minifm does not implement are refused with an error that names the
file, the field and the value seen -- never silently turned into other ids. Needs no oracle: the
files are small byte-level BPEs written by hand."""
import copy
import json

import pytest

from minifm.tokenizer import from_pretrained
from minifm.tokenizer.byte_level import BYTE_TO_UNICODE
from minifm.tokenizer.pretrained import PretrainedTokenizer, gguf_to_tokenizer_json

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def tiny_bpe() -> dict:
    """A byte-level BPE tokenizer.json: 256 byte tokens, three merges making "Ġthe", one special token."""
    vocab = {char: byte for byte, char in enumerate(BYTE_TO_UNICODE)}
    vocab.update({"Ġt": 256, "he": 257, "Ġthe": 258, "<eos>": 259})
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 259, "content": "<eos>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None, "pre_tokenizer": dict(BYTE_LEVEL), "post_processor": None, "decoder": dict(BYTE_LEVEL),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [["Ġ", "t"], ["h", "e"], ["Ġt", "he"]]},
    }


def write(tmp_path, data, name="tokenizer.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def changed(path: str, value) -> dict:
    """tiny_bpe() with the field at dotted `path` set to `value`."""
    data = tiny_bpe()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return data


def test_tiny_bpe_works(tmp_path):
    tok = from_pretrained(write(tmp_path, tiny_bpe()))
    assert tok.encode("in the<eos>") == [ord("i"), ord("n"), 258, 259]
    assert tok.decode([ord("i"), 258, 259]) == "i the<eos>"
    assert tok.decode([ord("i"), 258, 259], skip_special_tokens=True) == "i the"
    assert from_pretrained(tmp_path).encode(" the") == [258]          # the directory form
    with pytest.raises(ValueError, match=r"ids\[1\] = 260 is not in the vocabulary"):
        tok.decode([1, 260])
    with pytest.raises(TypeError, match=r"ids\[0\] must be an int"):
        tok.decode(["a"])
    with pytest.raises(TypeError, match="text must be str"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match="max_length=1 leaves no room"):
        PretrainedTokenizer(changed("post_processor", {"type": "BertProcessing", "sep": ["<eos>", 259], "cls": ["<eos>", 259]}))\
            .encode("x", max_length=1)
    with pytest.raises(ValueError, match="no pad_token"):
        tok.pad_batch([[1]])


def test_missing_files_and_malformed_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing path nor a known name"):
        from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"tokenizer.json: not valid JSON \(Expecting"):
        from_pretrained(write(tmp_path, '{"model": '))
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        from_pretrained(write(tmp_path, "[1, 2]"))
    with pytest.raises(ValueError, match="has no 'model' section"):
        from_pretrained(write(tmp_path, {"version": "1.0"}))
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        from_pretrained(tmp_path / "bad.gguf")
    with pytest.raises(TypeError, match="path must be a str"):
        from_pretrained(3)


@pytest.mark.parametrize("field, value, expected", [
    ("model.type", "Unigram", "model.type = 'Unigram' is not supported"),
    ("model.type", "WordLevel", "model.type = 'WordLevel' is not supported"),
    ("model.byte_fallback", True, "model.byte_fallback = True is not supported"),
    ("model.dropout", 0.1, "model.dropout = 0.1 is not supported"),
    ("model.continuing_subword_prefix", "##", "model.continuing_subword_prefix = '##' is not supported"),
    ("model.end_of_word_suffix", "</w>", "model.end_of_word_suffix = '</w>' is not supported"),
    ("model.merges.1", ["h", "zz"], r"model.merges\[1\] = 'h' 'zz': 'zz' is not in model.vocab"),
    ("model.merges.0", "Ġt", r"model.merges\[0\] must be 'a b' or \[a, b\]"),
    ("model.merges", {"a": 1}, "model.merges must be a list"),
    ("model.vocab.Ġt", 5, "model.vocab gives id 5 to both"),
    ("model.vocab.Ġt", -1, r"model.vocab\['Ġt'\] must be an int id >= 0"),
    ("model.ignore_merges", "yes", "model.ignore_merges must be true or false"),
    ("pre_tokenizer", {"type": "Metaspace", "replacement": "▁"}, "pre_tokenizer.type = 'Metaspace' is not supported"),
    ("pre_tokenizer", None, "needs a ByteLevel pre_tokenizer"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [BYTE_LEVEL, {"type": "Digits"}]},
     "ByteLevel as the last step"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "MergedWithPrevious", "invert": False}, BYTE_LEVEL]},
     r"pre_tokenizer.pretokenizers\[0\].behavior = 'MergedWithPrevious' is not supported"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Isolated", "invert": True}, BYTE_LEVEL]},
     r"pre_tokenizer.pretokenizers\[0\].invert = True is not supported"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{Greek}+"}, "behavior": "Isolated"}, BYTE_LEVEL]},
     r"the property \\p\{Greek\} is not supported"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "[a-z&&[^x]]"}, "behavior": "Isolated"}, BYTE_LEVEL]},
     "nested classes and '&&' are not supported"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Glob": "*"}, "behavior": "Isolated"}, BYTE_LEVEL]},
     r"pattern must be \{'Regex': str\} or \{'String': str\}"),
    ("normalizer", {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, "normalizer.type = 'Replace' is not supported"),
    ("normalizer", {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Prepend", "prepend": "▁"}]},
     r"normalizer.normalizers\[1\].type = 'Prepend' is not supported"),
    ("decoder", {"type": "Metaspace"}, "decoder.type = 'Metaspace' is not supported"),
    ("post_processor", {"type": "TemplateProcessing", "single": ["[CLS]", "$A"], "pair": "$A $B", "special_tokens": {}},
     r"post_processor.single\[0\] uses special token '\[CLS\]'"),
    ("post_processor", {"type": "BertProcessing", "sep": ["[SEP]"], "cls": ["[CLS]", 1]}, r"post_processor.sep must be \[token, id\]"),
    ("post_processor", {"type": "Unknown"}, "post_processor.type = 'Unknown' is not supported"),
    ("added_tokens.0.id", 300, r"added_tokens\[0\] '<eos>' has id 300, but `tokenizers` would give it id 259"),
    ("added_tokens.0.content", "", r"added_tokens\[0\] needs an id >= 0 and non-empty content"),
    ("added_tokens.0.special", "yes", r"added_tokens\[0\].special must be bool"),
    ("truncation", [128], "truncation must be an object or null"),
])
def test_unsupported_or_malformed_fields_are_named(tmp_path, field, value, expected):
    with pytest.raises(ValueError, match=expected) as caught:
        from_pretrained(write(tmp_path, changed(field, value)))
    assert "tokenizer.json" in str(caught.value)


def test_missing_byte_tokens(tmp_path):
    data = tiny_bpe()
    del data["model"]["vocab"][BYTE_TO_UNICODE[0x80]]      # a continuation byte: no text can avoid the Python path
    data["model"]["vocab"]["Ġt"], data["model"]["vocab"]["he"], data["model"]["vocab"]["Ġthe"] = 128, 256, 257
    data["model"]["vocab"]["<eos>"] = 258
    data["added_tokens"][0]["id"] = 258
    tok = from_pretrained(write(tmp_path, data))
    assert not tok.model.uses_minifm_encoder
    assert tok.encode("\u0100 the") == [0xC4, 257]       # U+0100 is C4 80: the 80 is dropped, as `tokenizers` does
    data["model"]["unk_token"] = "<eos>"
    with pytest.raises(ValueError, match="model.unk_token = '<eos>' with 1 byte tokens missing"):
        from_pretrained(write(tmp_path, data))


def test_tokenizer_config_errors(tmp_path):
    write(tmp_path, tiny_bpe())
    write(tmp_path, {"bos_token": 5}, "tokenizer_config.json")
    with pytest.raises(ValueError, match="bos_token must be a string or an object with 'content', got 5"):
        from_pretrained(tmp_path)
    write(tmp_path, {"chat_template": {"x": 1}}, "tokenizer_config.json")
    with pytest.raises(ValueError, match="chat_template must be a string"):
        from_pretrained(tmp_path)
    write(tmp_path, "{oops", "tokenizer_config.json")
    with pytest.raises(ValueError, match="tokenizer_config.json: not valid JSON"):
        from_pretrained(tmp_path)
    write(tmp_path, {"eos_token": {"content": "<eos>"}, "chat_template": [{"name": "default", "template": "{{ eos_token }}"}]},
          "tokenizer_config.json")
    tok = from_pretrained(tmp_path)
    assert (tok.eos_token, tok.eos_token_id) == ("<eos>", 259)
    assert tok.apply_chat_template([], tokenize=False) == "<eos>"
    (tmp_path / "chat_template.jinja").write_text("{{ 'file wins' }}", encoding="utf-8")
    assert from_pretrained(tmp_path).apply_chat_template([], tokenize=False) == "file wins"


def test_wordpiece_needs_its_unk_token(tmp_path):
    data = {"model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"a": 0, "##b": 1}},
            "pre_tokenizer": {"type": "BertPreTokenizer"}}
    with pytest.raises(ValueError, match="unk_token '\\[UNK\\]' is not in the vocabulary"):
        from_pretrained(write(tmp_path, data))
    data["model"]["vocab"]["[UNK]"] = 2
    tok = from_pretrained(write(tmp_path, data))
    assert tok.encode("ab a c") == [0, 1, 0, 2]
    data["pre_tokenizer"] = dict(BYTE_LEVEL)
    with pytest.raises(ValueError, match="WordPiece' with a ByteLevel pre_tokenizer is not supported"):
        from_pretrained(write(tmp_path, data))


GGUF_METADATA = {
    "general.architecture": "llama", "llama.context_length": 2048,
    "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2",
    "tokenizer.ggml.tokens": list(BYTE_TO_UNICODE) + ["Ġt", "he", "Ġthe", "<s>", "</s>"],
    "tokenizer.ggml.token_type": [1] * 259 + [3, 3],
    "tokenizer.ggml.merges": ["Ġ t", "h e", "Ġt he"],
    "tokenizer.ggml.bos_token_id": 259, "tokenizer.ggml.eos_token_id": 260, "tokenizer.ggml.add_bos_token": True,
    "tokenizer.chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
}


def test_gguf_metadata_conversion_and_errors():
    data, config = gguf_to_tokenizer_json(copy.deepcopy(GGUF_METADATA), source="t.gguf")
    tok = PretrainedTokenizer(data, config, source="t.gguf")
    assert (tok.bos_token, tok.eos_token, tok.model_max_length) == ("<s>", "</s>", 2048)
    assert tok.encode(" the</s>") == [259, 258, 260]              # add_bos_token puts <s> first
    assert tok.encode(" the", add_special_tokens=False) == [258]
    assert tok.apply_chat_template([{"role": "user", "content": " the"}]) == [259, 258]
    for key, value, expected in [
        ("tokenizer.ggml.model", "llama", "tokenizer.ggml.model = 'llama' is not supported"),
        ("tokenizer.ggml.pre", "qwen2", "tokenizer.ggml.pre = 'qwen2' is not supported"),
        ("tokenizer.ggml.add_space_prefix", True, "tokenizer.ggml.add_space_prefix = True is not supported"),
        ("tokenizer.ggml.token_type", [1, 1], "2 token types for 261 tokens"),
        ("tokenizer.ggml.tokens", "abc", "metadata 'tokenizer.ggml.tokens' must be"),
        ("tokenizer.ggml.merges", ["Ġ t", "h e", "Ġthe"], r"model.merges\[2\] must be 'a b'"),
    ]:
        metadata = copy.deepcopy(GGUF_METADATA)
        metadata[key] = value
        with pytest.raises(ValueError, match=expected):
            data, config = gguf_to_tokenizer_json(metadata, source="t.gguf")
            PretrainedTokenizer(data, config, source="t.gguf")
    metadata = copy.deepcopy(GGUF_METADATA)
    del metadata["tokenizer.ggml.tokens"]
    with pytest.raises(ValueError, match="t.gguf: metadata has no 'tokenizer.ggml.tokens'"):
        gguf_to_tokenizer_json(metadata, source="t.gguf")
