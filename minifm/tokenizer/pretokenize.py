"""Regex pre-tokenization: cut text into the pieces ("pre-tokens") that BPE merges never cross.

Two split rules are offered, selected by name:

  "gpt2"  the GPT-2 rule: English contractions ('s 't 're 've 'm 'll 'd), an optional space plus a
          run of letters, an optional space plus a run of digits, an optional space plus a run of
          other symbols, then whitespace (a run of whitespace gives its last space to the next
          word, so " world" stays one piece).
  "gpt4"  the cl100k-style rule: case-insensitive contractions, a run of letters optionally led by
          one non-letter/non-digit character that is not a line break, digits in groups of at most
          three, an optional space plus a run of symbols with any trailing line breaks, whitespace
          ending in a line break, and the same whitespace rules as GPT-2.

Both rules are usually written with the Unicode property classes \\p{L} (letters) and \\p{N}
(numbers) of the third-party `regex` module. Python's own `re` has no \\p{...}, and its shortcut
classes do not line up with the properties: `[^\\W\\d_]` also holds the letter-like numbers
(categories Nl and No such as 'Ⅻ' and '²'), and `\\s` also holds the separators U+001C..U+001F,
which are not Unicode White_Space. So this module builds each class it needs as an explicit list
of code-point ranges computed from `unicodedata` (Python's Unicode database), and `re` gets:

  * letters      = categories Lu Ll Lt Lm Lo           (\\p{L})
  * numbers      = categories Nd Nl No                 (\\p{N})
  * whitespace   = the Unicode White_Space property    (\\s in `regex`)

A class with hundreds of ranges is slow in `re` only for its part above U+FFFF (the part below is
compiled into a bitmap, the rest is searched range by range), so every class is written as
"BMP bitmap, or (a cheap one-range check that the character is above U+FFFF) then the astral
ranges". The result splits exactly as the `regex` patterns do (a test checks this when `regex` is
installed) at about the speed of `re`'s built-in classes, with no extra dependency.

Simplification: the Unicode version is Python's (`unicodedata.unidata_version`), so characters
assigned in a later Unicode version count as "other symbols".
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

PATTERN_NAMES: tuple[str, ...] = ("gpt2", "gpt4")

# The Unicode White_Space property (what `\s` means in the `regex` module and in tiktoken).
_WHITE_SPACE_RANGES = (
    (0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
    (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
)
_FIRST_ASTRAL = 0x10000
_CODE_POINTS = 0x110000


@lru_cache(maxsize=1)
def _category_masks() -> dict[str, np.ndarray]:
    """Boolean masks over all code points: letter, number and White_Space membership."""
    major = np.frombuffer(
        "".join(unicodedata.category(chr(cp))[0] for cp in range(_CODE_POINTS)).encode("ascii"),
        dtype=np.uint8,
    )
    white_space = np.zeros(_CODE_POINTS, dtype=bool)
    for first, last in _WHITE_SPACE_RANGES:
        white_space[first:last + 1] = True
    return {"letter": major == ord("L"), "number": major == ord("N"), "space": white_space}


def _runs(mask: np.ndarray, offset: int) -> list[tuple[int, int]]:
    """Inclusive (first, last) code-point runs where `mask` is True, shifted by `offset`."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, stops = edges[0::2], edges[1::2]
    return [(int(s) + offset, int(e) - 1 + offset) for s, e in zip(starts, stops)]


def _escape(cp: int) -> str:
    return f"\\U{cp:08x}" if cp >= _FIRST_ASTRAL else f"\\u{cp:04x}"


def _ranges_body(runs: list[tuple[int, int]]) -> str:
    return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in runs)


def _char_class(mask: np.ndarray) -> str:
    """A `re` fragment matching exactly one character whose code point is True in `mask`."""
    basic = _runs(mask[:_FIRST_ASTRAL], 0)
    astral = _runs(mask[_FIRST_ASTRAL:], _FIRST_ASTRAL)
    alternatives = []
    if basic:
        alternatives.append(f"[{_ranges_body(basic)}]")
    if astral:
        # The lookahead is one range test, so BMP characters never walk the astral range list.
        alternatives.append(f"(?=[\\U00010000-\\U0010ffff])[{_ranges_body(astral)}]")
    return "(?:" + "|".join(alternatives) + ")"


@lru_cache(maxsize=None)
def pattern_source(name: str) -> str:
    """The `re` source text of split rule `name` ("gpt2" or "gpt4")."""
    if name not in PATTERN_NAMES:
        raise ValueError(f"pattern must be one of {PATTERN_NAMES}, got {name!r}")
    masks = _category_masks()
    letter, number, space = masks["letter"], masks["number"], masks["space"]
    line_break = np.zeros(_CODE_POINTS, dtype=bool)
    line_break[[0x0A, 0x0D]] = True
    letters = _char_class(letter)
    digits = _char_class(number)
    spaces = _char_class(space)
    not_space = _char_class(~space)
    symbols = _char_class(~(space | letter | number))                 # [^\s\p{L}\p{N}]
    if name == "gpt2":
        return (
            "'s|'t|'re|'ve|'m|'ll|'d"
            f"| ?{letters}+"
            f"| ?{digits}+"
            f"| ?{symbols}+"
            f"|{spaces}+(?!{not_space})"
            f"|{spaces}+"
        )
    word_lead = _char_class(~(line_break | letter | number))           # [^\r\n\p{L}\p{N}]
    return (
        "'(?i:[sdmt]|ll|ve|re)"
        f"|{word_lead}?{letters}+"
        f"|{digits}{{1,3}}"
        f"| ?{symbols}+[\\r\\n]*"
        f"|{spaces}*[\\r\\n]"
        f"|{spaces}+(?!{not_space})"
        f"|{spaces}+"
    )


@lru_cache(maxsize=None)
def compiled_pattern(name: str) -> re.Pattern:
    """The compiled split rule `name` (built once per process; the first call takes ~0.2 s)."""
    return re.compile(pattern_source(name))


# The same two rules in the `regex` module's notation, for readers and for the equivalence test.
REGEX_MODULE_PATTERNS: dict[str, str] = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "gpt4": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
    ),
}


def pretokenize(text: str, pattern: str = "gpt4") -> list[str]:
    """Split `text` into pre-tokens with rule `pattern`; "".join(result) == text always."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return compiled_pattern(pattern).findall(text)


PIECE_CACHE_LIMIT = 1 << 18  # pieces remembered before the cache starts over


def encode_pieces_cached(pieces: Iterable[str], cache: dict[str, list[int]], encode_piece) -> list[int]:
    """Concatenated ids of pre-tokenized pieces: each distinct piece is encoded once by `encode_piece`
    and remembered in `cache` (emptied when it reaches PIECE_CACHE_LIMIT pieces); text repeats its
    words, so most pieces are looked up, not encoded."""
    ids: list[int] = []
    for piece in pieces:
        piece_ids = cache.get(piece)
        if piece_ids is None:
            piece_ids = encode_piece(piece)
            if len(cache) >= PIECE_CACHE_LIMIT:
                cache.clear()
            cache[piece] = piece_ids
        ids.extend(piece_ids)
    return ids
