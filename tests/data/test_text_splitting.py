"""Plain text -> documents (minifm.data.sources.split_text / load_texts): no text is lost or reordered,
blank lines only are normalised, and the size bounds hold, on hypothesis-drawn texts and sizes."""
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifm.data import sources

# Words of every length (long ones force cuts inside a line), spaces, tabs, CR/LF line ends and
# whitespace-only lines (blank), so paragraphs, blank runs and overlong lines all occur.
words = st.text(alphabet="abcdeé.,", min_size=1, max_size=30)
lines = st.lists(st.one_of(words, st.sampled_from([" ", "\t", "  "])), max_size=8).map("".join)
texts = st.lists(st.tuples(lines, st.sampled_from(["\n", "\r\n", "\r", "\n\n", "\n \n", "\n\t\n\n"])),
                 max_size=25).map(lambda parts: "".join(line + end for line, end in parts))
sizes = st.integers(1, 60).flatmap(lambda target: st.tuples(st.just(target), st.integers(target, 120)))


def oracle_normalised(text: str) -> str:
    """Blank-line normalisation written independently: runs of blank lines -> one empty line, none at the ends."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks = ["\n".join(group) for non_blank, group in itertools.groupby(lines, key=lambda line: bool(line.strip()))
              if non_blank]
    return "\n\n".join(blocks)


def separators(normalised: str, documents: list[str]) -> list[str]:
    """The text between consecutive documents when they are read off `normalised` in order (asserting that
    they are consecutive slices of it and cover it)."""
    position, between = 0, []
    for i, document in enumerate(documents):
        start = position
        while normalised.startswith("\n", position):
            position += 1
        if i:
            between.append(normalised[start:position])
        assert normalised.startswith(document, position), (i, document, normalised[position:position + 40])
        position += len(document)
    assert position == len(normalised)
    return between


@settings(max_examples=300, deadline=None)
@given(text=texts, size=sizes)
def test_no_text_is_lost_and_sizes_hold(text, size):
    target, largest = size
    documents = sources.split_text(text, target_chars=target, max_chars=largest)
    normalised = oracle_normalised(text)
    assert sources.normalise_blank_lines(text) == normalised
    # nothing lost, nothing reordered: the documents are consecutive slices, cut only at line ends
    # or inside overlong lines, and hold every visible character in order
    between = separators(normalised, documents)
    assert set(between) <= {"\n\n", "\n", ""}
    assert "".join("".join(documents).split()) == "".join(text.split())
    if all(len(paragraph) <= largest for paragraph in normalised.split("\n\n")):
        assert "\n\n".join(documents) == normalised      # paragraphs that fit are never cut
    # neither huge nor needlessly tiny: a document below the target could not take the next one in
    assert all(0 < len(document) <= largest for document in documents)
    for shorter, following in zip(documents, documents[1:]):
        assert len(shorter) >= target or len(shorter) + 2 + len(following) > largest


@settings(max_examples=200, deadline=None)
@given(line=st.text(alphabet="ab ", max_size=200), largest=st.integers(1, 40))
def test_cut_line_cuts_before_the_last_word_in_reach(line, largest):
    pieces = sources.cut_line(line, largest)
    assert "".join(pieces) == line
    assert all(len(piece) <= largest for piece in pieces)
    start = 0
    for piece in pieces[:-1]:
        word_starts = [i for i in range(start + 1, start + largest + 1) if line[i - 1] == " " and line[i] != " "]
        assert start + len(piece) == (word_starts[-1] if word_starts else start + largest)
        start += len(piece)


def test_paragraphs_merge_to_the_target_and_long_ones_are_cut_at_line_ends():
    paragraph = "Mara lives in Tollby by the sea."          # 32 characters
    text = "\n\n\n".join([paragraph] * 10)
    assert sources.split_text(text, target_chars=60, max_chars=100) == ["\n\n".join([paragraph] * 2)] * 5
    long_paragraph = "\n".join([paragraph] * 5)                # 164 characters in one paragraph
    assert sources.split_text(long_paragraph, target_chars=60, max_chars=100) == [
        "\n".join([paragraph] * 2), "\n".join([paragraph] * 2), paragraph]
    assert sources.split_text("aaaa bbbb cccc", target_chars=5, max_chars=10) == ["aaaa bbbb ", "cccc"]
    assert sources.split_text(" \n\t\n") == []
    with pytest.raises(ValueError, match="target_chars <= max_chars"):
        sources.split_text("x", target_chars=10, max_chars=5)


def test_a_large_file_and_a_folder_become_documents_and_the_log_says_how(tmp_path):
    paragraph = ("Mara lives in the small town of Tollby, where the river bends twice before it reaches the sea. "
                 "She keeps three cats and a dog.")
    big = tmp_path / "book.txt"
    big.write_text("\n\n".join(f"{i}. {paragraph}" for i in range(2000)) + "\n", encoding="utf-8")
    said = []
    documents = sources.load_texts(big, log=said.append)
    assert 100 < len(documents) < 200
    assert all(len(d) <= sources.MAX_DOCUMENT_CHARS for d in documents)
    assert all(len(d) >= sources.TARGET_DOCUMENT_CHARS for d in documents[:-1])
    assert "\n\n".join(documents) == sources.normalise_blank_lines(big.read_text(encoding="utf-8"))
    assert said == [f"{big}: 267 KB -> {len(documents)} documents (split on blank lines into 2,000 paragraphs, "
                    "merged to ~2,000 characters per document, at most 4,000)"]

    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    (folder / "b.md").write_text("# Second\n\nshort note\n", encoding="utf-8")
    (folder / "sub" / "a.txt").write_text("x" * 9000, encoding="utf-8")     # one line over the limit
    (folder / "empty.txt").write_text("\n \n", encoding="utf-8")
    (folder / ".hidden" / "skip.txt").write_text("never read", encoding="utf-8")
    (folder / ".skip.md").write_text("never read", encoding="utf-8")
    (folder / "skip.py").write_text("print('never read')", encoding="utf-8")
    said.clear()
    # sorted by path: b.md < empty.txt < sub/a.txt; each file split on its own (never merged across files)
    assert sources.load_texts(folder, log=said.append) == ["# Second\n\nshort note", "x" * 4000, "x" * 4000,
                                                          "x" * 1000]
    assert said == [f"{folder} (3 files, 1 empty): 9,024 bytes -> 4 documents (split on blank lines into 3 "
                    "paragraphs, merged to ~2,000 characters per document, at most 4,000; 1 paragraph over "
                    "4,000 characters cut at line ends)"]


def test_empty_inputs_name_the_path(tmp_path):
    (tmp_path / "blank.txt").write_text("\n  \n\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"blank\.txt holds no text"):
        sources.load_texts(tmp_path / "blank.txt")
    with pytest.raises(ValueError, match=r"the 1 \.txt/\.md files under .* hold no text"):
        sources.load_texts(tmp_path)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "x.py").write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"folder .*code holds no \.txt/\.md file"):
        sources.load_corpus(tmp_path / "code")
    (tmp_path / "none.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"none\.jsonl holds no records"):
        sources.load_corpus(tmp_path / "none.jsonl")
