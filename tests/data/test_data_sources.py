"""Sources: text folders (their splitting: test_text_splitting.py), TRL-style JSONL validation with line/field errors, python-stdlib corpus."""
import json
import sysconfig
from pathlib import Path

import pytest

from minifm.data import sources


def write_jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_load_texts_file_and_recursive_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep.md").write_text("# deep", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "skip.py").write_text("print(1)", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("hidden", encoding="utf-8")
    assert sources.load_texts(tmp_path) == ["first", "# deep"]          # sorted by path: a.txt < b/deep.md
    assert sources.load_texts(tmp_path / "a.txt") == ["first"]
    with pytest.raises(ValueError, match="skip.py"):
        sources.load_texts(tmp_path / "skip.py")
    with pytest.raises(FileNotFoundError, match="missing"):
        sources.load_texts(tmp_path / "missing")


@pytest.mark.parametrize("records, kind", [
    ([{"text": "hello"}, {"text": "world", "meta": 1}], "text"),
    ([{"prompt": "Q?", "completion": "A."}], "prompt_completion"),
    ([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}], "messages"),
    ([{"prompt": "Q?", "chosen": "good", "rejected": "bad"}], "preference"),
    ([{"prompt": [{"role": "user", "content": "Q?"}], "completion": [{"role": "assistant", "content": "A"}]}],
     "prompt_completion"),
])
def test_valid_jsonl_formats(tmp_path, records, kind):
    path = write_jsonl(tmp_path / "data.jsonl", records)
    assert sources.load_jsonl(path) == records
    assert sources.load_jsonl(path, expected_format=kind) == records


@pytest.mark.parametrize("bad_line, pattern", [
    ('{"text": 3}', r"data\.jsonl:3: field 'text' must be a string"),
    ('{"prompt": "Q"}', r"data\.jsonl:3: .*missing field 'completion'"),
    ('{"prompt": "Q", "chosen": "a"}', r"data\.jsonl:3: .*missing field 'rejected'"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', r"data\.jsonl:3: field messages\[0\]\.role"),
    ('{"messages": [{"role": "user", "content": 5}]}', r"data\.jsonl:3: field messages\[0\]\.content"),
    ('{"messages": []}', r"data\.jsonl:3: field 'messages'"),
    ('{"title": "x"}', r"data\.jsonl:3: record has none of the fields"),
    ('{"text": "unterminated', r"data\.jsonl:3: invalid JSON"),
    ('[1, 2]', r"data\.jsonl:3: a record must be a JSON object"),
])
def test_malformed_jsonl_names_file_line_and_field(tmp_path, bad_line, pattern):
    path = write_jsonl(tmp_path / "data.jsonl", ['{"text": "ok"}', "", bad_line])   # line 2 blank, skipped
    with pytest.raises(sources.DataFormatError, match=pattern):
        sources.load_jsonl(path, expected_format=None)


def test_mixed_formats_are_rejected(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "a"}, {"prompt": "q", "completion": "c"}])
    with pytest.raises(sources.DataFormatError, match=r"mixed\.jsonl:2: .*differs"):
        sources.load_jsonl(path)
    with pytest.raises(sources.DataFormatError, match=r"mixed\.jsonl:1: expected a 'messages' record"):
        sources.load_jsonl(path, expected_format="messages")


def test_python_stdlib_corpus_is_deterministic_and_excludes_tests():
    small = sources.python_stdlib_corpus(max_bytes=300_000)
    assert small == sources.python_stdlib_corpus(max_bytes=300_000)
    total = sum(len(t.encode("utf-8")) for t in small)
    assert total >= 300_000 and total - len(small[-1].encode("utf-8")) < 300_000
    everything = sources.python_stdlib_corpus()
    assert everything[: len(small)] == small
    root = Path(sysconfig.get_paths()["stdlib"])
    test_sources = {p.read_text(encoding="utf-8", errors="replace") for p in (root / "test").glob("test_a*.py")}
    assert not test_sources & set(everything)
    assert (root / "keyword.py").read_text(encoding="utf-8") in everything


def test_load_corpus_dispatch(tmp_path):
    assert sources.load_corpus("tinyworld", max_bytes=20_000, seed=1) == __import__(
        "minifm.data.tinyworld", fromlist=["x"]).generate_corpus(20_000, seed=1)
    assert sources.load_corpus("python-stdlib", max_bytes=50_000) == sources.python_stdlib_corpus(50_000)
    (tmp_path / "x.txt").write_text("words", encoding="utf-8")
    assert sources.load_corpus(tmp_path) == ["words"]
    long_text = "\n\n".join(["a paragraph of plain text."] * 400)        # a .txt file is split ...
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"text": "b"}, {"text": long_text}])
    said = []
    assert sources.load_corpus(path, log=said.append) == ["a", "b", long_text]   # ... a JSONL record never
    assert said == [f"{path}: 3 documents (one per JSONL record)"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sources.load_corpus("nowhere")
