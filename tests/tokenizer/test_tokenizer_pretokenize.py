"""The split rules written for Python's `re`: lossless, and the same pieces as the `regex` module's
\\p{L}/\\p{N} patterns (when `regex` is installed)."""
import re
import unicodedata

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from minifm.tokenizer import pretokenize
from minifm.tokenizer.pretokenize import (
    PATTERN_NAMES, REGEX_MODULE_PATTERNS, _category_masks, _char_class, compiled_pattern,
)
from strategies import tokenizer_nasty_pieces, tokenizer_text

WHITE_SPACE = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
               0x202F, 0x205F, 0x3000}


@pytest.mark.parametrize("name", PATTERN_NAMES)
@given(text=tokenizer_text)
def test_pieces_concatenate_to_the_text(name, text):
    pieces = pretokenize(text, name)
    assert "".join(pieces) == text
    assert all(pieces)


def test_character_classes_match_unicode_categories(rng):
    masks = _category_masks()
    code_points = np.concatenate([np.arange(0, 0x3000), rng.integers(0, 0x110000, size=30_000)])
    code_points = code_points[(code_points < 0xD800) | (code_points > 0xDFFF)]  # no lone surrogates
    classes = {name: re.compile(_char_class(mask)) for name, mask in masks.items()}
    for cp in code_points.tolist():
        char = chr(cp)
        category = unicodedata.category(char)
        assert bool(classes["letter"].fullmatch(char)) == category.startswith("L"), hex(cp)
        assert bool(classes["number"].fullmatch(char)) == category.startswith("N"), hex(cp)
        assert bool(classes["space"].fullmatch(char)) == (cp in WHITE_SPACE), hex(cp)


# Characters assigned in Python's Unicode database: the `regex` module may use a newer Unicode
# version, in which characters unassigned here have a category.
assigned_text = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=16),
        tokenizer_nasty_pieces,
        st.sampled_from(["'S", "'Ll", "x'd", "  a", " \n b", "1234567", " 12", "a  \r\n\r\n  b", "..\n\n"]),
    ),
    max_size=10,
).map("".join)


@pytest.mark.parametrize("name", PATTERN_NAMES)
@given(text=assigned_text)
def test_same_pieces_as_the_regex_module_patterns(name, text):
    regex = pytest.importorskip("regex", reason="the `regex` module is the oracle for the \\p{L} patterns")
    # a character whose letter/number status changed between the two Unicode versions is no test
    assume(not any(
        (unicodedata.category(c)[0] == "L") != bool(regex.match(r"\p{L}", c))
        or (unicodedata.category(c)[0] == "N") != bool(regex.match(r"\p{N}", c))
        for c in text
    ))
    assert pretokenize(text, name) == regex.findall(REGEX_MODULE_PATTERNS[name], text)


def test_unknown_pattern_name_is_rejected():
    with pytest.raises(ValueError, match="gpt4"):
        compiled_pattern("gpt5")
    with pytest.raises(TypeError, match="str"):
        pretokenize(b"bytes")
