"""The sections of a Hugging Face tokenizer.json, read into small Python objects that run them.

A tokenizer.json describes a pipeline that Hugging Face `tokenizers` runs on every text:

    added tokens  cut the text around the added-token strings (these become their own ids)
    normalizer    rewrite each remaining piece of text (lowercase, strip accents, ...)
    pre_tokenizer cut it into words that the model never merges across
    model         turn each word into ids (BPE, WordPiece: built in pretrained.py / wordpiece.py)
    post_processor add the template's special tokens ([CLS] A [SEP], <|begin_of_text|> A, ...)
    decoder       turn the tokens of some ids back into text

This module builds the added-token splitter and the four sections around the model, checking each
field it reads: a type or option minifm does not implement raises ValueError naming the file, the
field and the value seen, rather than giving other ids than `tokenizers` would.

Implemented:
    normalizers      BertNormalizer, Lowercase, StripAccents, NFC, NFD, NFKC, NFKD, Sequence, null
    pre-tokenizers   ByteLevel (add_prefix_space, use_regex), Split (Regex or String pattern,
                     behavior Isolated or Removed, invert false), Digits, BertPreTokenizer, Sequence
    post-processors  TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence, null
    decoders         ByteLevel, WordPiece, null (tokens joined by spaces, as in `tokenizers`)

Regular expressions in Split are written for Oniguruma (the engine `tokenizers` uses), with Unicode
property classes such as \\p{L}. Python's `re` has none, so `translate_regex` rewrites every
character class and class escape into an explicit class built from `unicodedata`, with the
machinery of minifm/tokenizer/pretokenize.py (BMP bitmap + astral ranges). What it cannot translate
(nested classes, class intersection, escapes Python reads differently) raises ValueError.

Simplifications: Unicode properties come from Python's `unicodedata` (Unicode 14 on Python 3.11),
while `tokenizers` carries newer tables, so a code point assigned after Python's version is
"unassigned" here; offsets, type ids and overflowing
windows are not computed.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from minifm.tokenizer.byte_level import decode_byte_level
from minifm.tokenizer.pretokenize import (
    _CODE_POINTS, _WHITE_SPACE_RANGES, _category_masks, _char_class, compiled_pattern,
)
from minifm.tokenizer.wordpiece import (
    bert_normalize, bert_pre_tokenize, category_mask, decode_wordpiece, strip_accent_marks,
    to_lowercase,
)

WHITE_SPACE: frozenset[str] = frozenset(
    chr(cp) for first, last in _WHITE_SPACE_RANGES for cp in range(first, last + 1)
)


def unsupported(source: str, field: str, value, supported: Sequence[str] | str) -> ValueError:
    """The one error shape for a tokenizer.json value minifm does not implement."""
    if not isinstance(supported, str):
        supported = ", ".join(map(str, supported))
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return ValueError(f"{source}: {field} = {shown} is not supported (minifm supports: {supported})")


def _field(spec: dict, key: str, source: str, where: str, types, default=...):
    """spec[key] checked against `types`; `default` when the key is absent (required when not given)."""
    if key not in spec:
        if default is ...:
            raise ValueError(f"{source}: {where} has no {key!r} field (fields: {sorted(spec)})")
        return default
    value = spec[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = "/".join(t.__name__ if t is not type(None) else "null" for t in _as_tuple(types))
        raise ValueError(f"{source}: {where}.{key} must be {names}, got {value!r:.80}")
    return value


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _typed(spec, source: str, where: str) -> str:
    """The "type" of a section object (ValueError when the section is not an object with one)."""
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: {where} must be an object or null, got {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str):
        raise ValueError(f"{source}: {where} has no string 'type' field (got {kind!r})")
    return kind


# ------------------------------------------------------------------ Oniguruma regex -> Python re
def _property_mask(name: str, pattern: str) -> np.ndarray:
    """Code points in the Unicode property `name` (a general category such as L, Lu, N, Nd, P, Zs)."""
    if name in ("L", "Letter"):
        return _category_masks()["letter"]
    if name in ("N", "Number"):
        return _category_masks()["number"]
    if (len(name) == 1 and name in "LMNPSZC") or (len(name) == 2 and name[0] in "LMNPSZC"):
        return category_mask(name)
    raise ValueError(f"regex {pattern!r}: the property \\p{{{name}}} is not supported (general categories only)")


@lru_cache(maxsize=1)
def _word_mask() -> np.ndarray:
    """Oniguruma's Unicode \\w: letters, marks, decimal digits and connector punctuation."""
    return category_mask("L", "M", "Nd", "Pc")


def _escape_mask(letter: str, argument: str | None, pattern: str) -> np.ndarray | None:
    """The code points of a class escape (\\p{..}, \\P{..}, \\s, \\S, \\d, \\D, \\w, \\W); None if it is not one."""
    if letter in "pP":
        mask = _property_mask(argument, pattern)
        return ~mask if letter == "P" else mask
    if letter in "sS":
        space = _category_masks()["space"]
        return ~space if letter == "S" else space
    if letter in "dD":
        digit = category_mask("Nd")
        return ~digit if letter == "D" else digit
    if letter in "wW":
        return ~_word_mask() if letter == "W" else _word_mask()
    return None


_LITERAL_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "f": "\f", "v": "\v", "a": "\a", "e": "\x1b", "0": "\0"}
_ASSERTION_ESCAPES = {"b": r"\b", "B": r"\B", "A": r"\A", "z": r"\Z"}


def _read_escape(pattern: str, i: int) -> tuple[str, str | None, int]:
    """At pattern[i] == '\\': (letter, argument, index after the escape)."""
    if i + 1 >= len(pattern):
        raise ValueError(f"regex {pattern!r} ends with a lone backslash")
    letter = pattern[i + 1]
    if letter in "pP":
        if i + 2 < len(pattern) and pattern[i + 2] == "{":
            end = pattern.find("}", i + 3)
            if end < 0:
                raise ValueError(f"regex {pattern!r}: unterminated \\{letter}{{ at position {i}")
            return letter, pattern[i + 3:end], end + 1
        if i + 2 < len(pattern):
            return letter, pattern[i + 2], i + 3
        raise ValueError(f"regex {pattern!r}: \\{letter} without a property name")
    if letter == "x":
        if i + 2 < len(pattern) and pattern[i + 2] == "{":
            end = pattern.find("}", i + 3)
            return "literal", chr(int(pattern[i + 3:end], 16)), end + 1
        return "literal", chr(int(pattern[i + 2:i + 4], 16)), i + 4
    if letter == "u":
        return "literal", chr(int(pattern[i + 2:i + 6], 16)), i + 6
    if letter in _LITERAL_ESCAPES:
        return "literal", _LITERAL_ESCAPES[letter], i + 2
    if not letter.isalnum():
        return "literal", letter, i + 2
    return letter, None, i + 2


def _parse_class(pattern: str, i: int) -> tuple[np.ndarray, int]:
    """At pattern[i] == '[': the code points the bracket class matches, and the index after ']'."""
    start = i
    i += 1
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    mask = np.zeros(_CODE_POINTS, dtype=bool)
    first = True
    previous_literal: str | None = None  # a literal that may start a range a-b
    while True:
        if i >= len(pattern):
            raise ValueError(f"regex {pattern!r}: unterminated character class at position {start}")
        char = pattern[i]
        if char == "]" and not first:
            i += 1
            break
        first = False
        if char == "[" or pattern.startswith("&&", i):
            raise ValueError(f"regex {pattern!r}: nested classes and '&&' are not supported (position {i})")
        if char == "-" and previous_literal is not None and i + 1 < len(pattern) and pattern[i + 1] != "]":
            i += 1
            if pattern[i] == "\\":
                kind, value, i = _read_escape(pattern, i)
                if kind != "literal":
                    raise ValueError(f"regex {pattern!r}: a range may not end in a class escape (position {i})")
                last = value
            else:
                last = pattern[i]
                i += 1
            mask[ord(previous_literal):ord(last) + 1] = True
            previous_literal = None
            continue
        if char == "\\":
            kind, value, i = _read_escape(pattern, i)
            if kind == "literal":
                mask[ord(value)] = True
                previous_literal = value
                continue
            escaped = _escape_mask(kind, value, pattern)
            if escaped is None:
                raise ValueError(f"regex {pattern!r}: the escape \\{kind} is not supported inside a class")
            mask |= escaped
            previous_literal = None
            continue
        mask[ord(char)] = True
        previous_literal = char
        i += 1
    return (~mask if negated else mask), i


@lru_cache(maxsize=64)
def translate_regex(pattern: str) -> str:
    """An Oniguruma pattern from a tokenizer.json rewritten for Python's `re` (same matches).

    Every character class and class escape becomes an explicit class over Python's Unicode
    database; groups, alternation, quantifiers and look-arounds are copied unchanged (Python's
    `re` reads them the same way). Raises ValueError for what it cannot translate.
    """
    pieces: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            mask, i = _parse_class(pattern, i)
            pieces.append(_char_class(mask))
        elif char == "\\":
            kind, value, after = _read_escape(pattern, i)
            if kind == "literal":
                pieces.append(re.escape(value))
            elif kind in _ASSERTION_ESCAPES:
                pieces.append(_ASSERTION_ESCAPES[kind])
            else:
                mask = _escape_mask(kind, value, pattern)
                if mask is None:
                    raise ValueError(f"regex {pattern!r}: the escape \\{kind} is not supported")
                pieces.append(_char_class(mask))
            i = after
        else:
            pieces.append(char)
            i += 1
    return "".join(pieces)


@lru_cache(maxsize=64)
def compile_regex(pattern: str) -> re.Pattern:
    """translate_regex(pattern), compiled (ValueError when Python's `re` rejects the translation)."""
    try:
        return re.compile(translate_regex(pattern))
    except re.error as error:
        raise ValueError(f"regex {pattern!r} cannot be compiled by Python's re: {error}") from None


# ------------------------------------------------------------------ added tokens
@dataclass(frozen=True)
class AddedToken:
    """One entry of tokenizer.json's "added_tokens" (the defaults are those of `tokenizers`)."""
    id: int
    content: str
    special: bool = False
    normalized: bool = True
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False

    def to_json(self) -> dict:
        return {
            "id": self.id, "content": self.content, "single_word": self.single_word, "lstrip": self.lstrip,
            "rstrip": self.rstrip, "normalized": self.normalized, "special": self.special,
        }


def parse_added_tokens(items, source: str) -> list[AddedToken]:
    """The "added_tokens" list, checked (ids are ints >= 0, contents non-empty strings)."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"{source}: added_tokens must be a list, got {type(items).__name__}")
    tokens = []
    for index, item in enumerate(items):
        where = f"added_tokens[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{source}: {where} must be an object, got {type(item).__name__}")
        token_id = _field(item, "id", source, where, int)
        content = _field(item, "content", source, where, str)
        if token_id < 0 or not content:
            raise ValueError(f"{source}: {where} needs an id >= 0 and non-empty content, got {item!r:.120}")
        special = _field(item, "special", source, where, bool, False)
        tokens.append(AddedToken(
            id=token_id, content=content, special=special,
            normalized=_field(item, "normalized", source, where, bool, not special),
            lstrip=_field(item, "lstrip", source, where, bool, False),
            rstrip=_field(item, "rstrip", source, where, bool, False),
            single_word=_field(item, "single_word", source, where, bool, False),
        ))
    return tokens


@lru_cache(maxsize=1)
def _rust_word_character() -> re.Pattern:
    """One character of Rust's Unicode \\w (what `single_word` tests): Alphabetic (letters, letter
    numbers, and the Other_Alphabetic marks and enclosed letters), marks, decimal digits, connector
    punctuation and the two joiners."""
    mask = category_mask("L", "Nl", "M", "Nd", "Pc")
    for first, last in ((0x200C, 0x200D), (0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169), (0x1F170, 0x1F189)):
        mask[first:last + 1] = True
    return re.compile(_char_class(mask))


def _alternation(contents: Sequence[str]) -> re.Pattern | None:
    """A pattern finding the leftmost, then longest, of `contents` (longer alternatives first)."""
    ordered = sorted(set(contents), key=lambda text: (-len(text), text))
    if not ordered:
        return None
    return re.compile("|".join(re.escape(text) for text in ordered))


class AddedVocabulary:
    """Cuts text around added tokens exactly as `tokenizers` does.

    Two passes: tokens with normalized=false are found in the raw text; the text between them is
    normalized, and tokens with normalized=true are found, by their normalized spelling, in that.
    At each position the longest token wins. `lstrip`/`rstrip` let a token swallow the white space
    on its left/right; `single_word` skips a match that touches a word character.
    """

    def __init__(self, tokens: Sequence[AddedToken], normalizer: Callable[[str], str] | None):
        self.tokens = list(tokens)
        self.normalizer = normalizer
        self._by_raw: dict[str, AddedToken] = {}
        self._by_normalized: dict[str, AddedToken] = {}
        for token in self.tokens:
            if token.normalized:
                spelling = normalizer(token.content) if normalizer is not None else token.content
                self._by_normalized[spelling] = token
            else:
                self._by_raw[token.content] = token
        self._raw_pattern = _alternation(list(self._by_raw))
        self._normalized_pattern = _alternation(list(self._by_normalized))

    def _cut(self, text: str, pattern: re.Pattern | None, by_text: dict[str, AddedToken]) -> list[tuple[str, int | None]]:
        """[(piece, id or None), ...]: `text` cut at the tokens `pattern` finds (in order; no empty pieces)."""
        if pattern is None or not text:
            return [(text, None)] if text else []
        pieces: list[tuple[str, int | None]] = []
        done = 0  # text[:done] has been handed out
        for match in pattern.finditer(text):
            token = by_text[match.group()]
            start, stop = match.span()
            if token.single_word:
                word_char = _rust_word_character()
                touches_left = start > 0 and word_char.match(text[start - 1]) is not None
                touches_right = stop < len(text) and word_char.match(text[stop]) is not None
                if touches_left or touches_right:
                    continue
            if token.lstrip:
                while start > done and text[start - 1] in WHITE_SPACE:
                    start -= 1
            if token.rstrip:
                while stop < len(text) and text[stop] in WHITE_SPACE:
                    stop += 1
            if start > done:
                pieces.append((text[done:start], None))
            pieces.append((text[start:stop], token.id))
            done = stop
        if done < len(text):
            pieces.append((text[done:], None))
        return pieces

    def split(self, text: str) -> list[tuple[str, int | None]]:
        """[(text, None) for normalized text between tokens | (token text, token id)], in order."""
        out: list[tuple[str, int | None]] = []
        for piece, token_id in self._cut(text, self._raw_pattern, self._by_raw):
            if token_id is not None:
                out.append((piece, token_id))
                continue
            normalized = self.normalizer(piece) if self.normalizer is not None else piece
            out.extend(self._cut(normalized, self._normalized_pattern, self._by_normalized))
        return out


# ------------------------------------------------------------------ normalizers
def _unicode_form(form: str) -> Callable[[str], str]:
    def normalize(text: str) -> str:
        return unicodedata.normalize(form, text)
    return normalize


def build_normalizer(spec, source: str, where: str = "normalizer") -> Callable[[str], str] | None:
    """A function text -> normalized text for the "normalizer" section (None for null)."""
    if spec is None:
        return None
    kind = _typed(spec, source, where)
    if kind == "BertNormalizer":
        clean_text = _field(spec, "clean_text", source, where, bool, True)
        chinese = _field(spec, "handle_chinese_chars", source, where, bool, True)
        accents = _field(spec, "strip_accents", source, where, (bool, type(None)), None)
        lower = _field(spec, "lowercase", source, where, bool, True)

        def normalize(text: str) -> str:
            return bert_normalize(text, clean_text=clean_text, handle_chinese_chars=chinese,
                                  strip_accents=accents, lowercase=lower)
        return normalize
    if kind == "Lowercase":
        return to_lowercase
    if kind == "StripAccents":
        return strip_accent_marks
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return _unicode_form(kind)
    if kind == "Sequence":
        steps = [build_normalizer(step, source, f"{where}.normalizers[{i}]")
                 for i, step in enumerate(_field(spec, "normalizers", source, where, list))]
        steps = [step for step in steps if step is not None]

        def normalize_all(text: str) -> str:
            for step in steps:
                text = step(text)
            return text
        return normalize_all
    raise unsupported(source, f"{where}.type", kind,
                      "BertNormalizer, Lowercase, StripAccents, NFC, NFD, NFKC, NFKD, Sequence, null")


# ------------------------------------------------------------------ pre-tokenizers
def _split_isolated(pieces: list[str], pattern: re.Pattern, keep_matches: bool = True) -> list[str]:
    """Each piece cut at the matches of `pattern`: text between matches and (if kept) each match
    become pieces of their own; empty matches only mark a cut."""
    out: list[str] = []
    for piece in pieces:
        done = 0
        for match in pattern.finditer(piece):
            start, stop = match.span()
            if start > done:
                out.append(piece[done:start])
            if stop > start:
                if keep_matches:
                    out.append(piece[start:stop])
                done = stop
            else:
                done = max(done, start)
        if done < len(piece):
            out.append(piece[done:])
    return out


class PreTokenizer:
    """The "pre_tokenizer" section as a function text -> words (list of str).

    `byte_level` tells whether the section ends with ByteLevel (the words are then encoded as
    UTF-8 bytes by a byte-level model); ByteLevel anywhere but last is rejected when built.
    """

    def __init__(self, steps: list[Callable[[list[str]], list[str]]], byte_level: bool):
        self.steps = steps
        self.byte_level = byte_level

    def __call__(self, text: str) -> list[str]:
        pieces = [text] if text else []
        for step in self.steps:
            pieces = step(pieces)
        return pieces


def _byte_level_step(add_prefix_space: bool, use_regex: bool) -> Callable[[list[str]], list[str]]:
    gpt2 = compiled_pattern("gpt2")

    def step(pieces: list[str]) -> list[str]:
        if add_prefix_space:
            pieces = [piece if piece.startswith(" ") else " " + piece for piece in pieces]
        if not use_regex:
            return pieces
        out: list[str] = []
        for piece in pieces:
            out.extend(gpt2.findall(piece))
        return out
    return step


def _digits_step(individual: bool) -> Callable[[list[str]], list[str]]:
    digit = _char_class(_category_masks()["number"])
    pattern = re.compile(digit if individual else digit + "+")

    def step(pieces: list[str]) -> list[str]:
        return _split_isolated(pieces, pattern)
    return step


def _split_step(spec: dict, source: str, where: str) -> Callable[[list[str]], list[str]]:
    pattern_spec = _field(spec, "pattern", source, where, dict)
    if set(pattern_spec) == {"Regex"} and isinstance(pattern_spec["Regex"], str):
        try:
            pattern = compile_regex(pattern_spec["Regex"])
        except ValueError as error:
            raise ValueError(f"{source}: {where}.pattern: {error}") from None
    elif set(pattern_spec) == {"String"} and isinstance(pattern_spec["String"], str):
        pattern = re.compile(re.escape(pattern_spec["String"]))
    else:
        raise ValueError(f"{source}: {where}.pattern must be {{'Regex': str}} or {{'String': str}}, got {pattern_spec!r}")
    if _field(spec, "invert", source, where, bool, False):
        raise unsupported(source, f"{where}.invert", True, "false")
    behavior = _field(spec, "behavior", source, where, str)
    if behavior not in ("Isolated", "Removed"):
        raise unsupported(source, f"{where}.behavior", behavior, "Isolated, Removed")
    keep = behavior == "Isolated"

    def step(pieces: list[str]) -> list[str]:
        return _split_isolated(pieces, pattern, keep_matches=keep)
    return step


def _bert_step(pieces: list[str]) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        out.extend(bert_pre_tokenize(piece))
    return out


def _pre_tokenizer_steps(spec, source: str, where: str) -> list[tuple[str, Callable]]:
    """[(type name, step)] for one pre-tokenizer object (a Sequence gives several)."""
    kind = _typed(spec, source, where)
    if kind == "Sequence":
        steps = []
        for i, item in enumerate(_field(spec, "pretokenizers", source, where, list)):
            steps.extend(_pre_tokenizer_steps(item, source, f"{where}.pretokenizers[{i}]"))
        return steps
    if kind == "ByteLevel":
        add_prefix_space = _field(spec, "add_prefix_space", source, where, bool, True)
        use_regex = _field(spec, "use_regex", source, where, bool, True)
        _field(spec, "trim_offsets", source, where, bool, True)  # offsets only: checked, not used
        return [(kind, _byte_level_step(add_prefix_space, use_regex))]
    if kind == "Split":
        return [(kind, _split_step(spec, source, where))]
    if kind == "Digits":
        return [(kind, _digits_step(_field(spec, "individual_digits", source, where, bool, False)))]
    if kind == "BertPreTokenizer":
        return [(kind, _bert_step)]
    raise unsupported(source, f"{where}.type", kind, "ByteLevel, Split, Digits, BertPreTokenizer, Sequence, null")


def build_pre_tokenizer(spec, source: str) -> PreTokenizer:
    """The "pre_tokenizer" section (null keeps each text whole)."""
    if spec is None:
        return PreTokenizer([], byte_level=False)
    named = _pre_tokenizer_steps(spec, source, "pre_tokenizer")
    names = [name for name, _ in named]
    if "ByteLevel" in names[:-1]:
        raise ValueError(
            f"{source}: pre_tokenizer has ByteLevel before {names[names.index('ByteLevel') + 1]} "
            f"(minifm needs ByteLevel as the last step; got the steps {names})"
        )
    return PreTokenizer([step for _, step in named], byte_level=bool(names) and names[-1] == "ByteLevel")


# ------------------------------------------------------------------ post-processors
# A template is a list of items: ("A",) / ("B",) for the sequences, ("special", [ids]) for tokens.
Template = list[tuple]


class PostProcessor:
    """Adds the template's special tokens around one sequence (single) or two (pair)."""

    def __init__(self, single: Template, pair: Template):
        self.single = single
        self.pair = pair

    def num_special_tokens(self, pair: bool) -> int:
        template = self.pair if pair else self.single
        return sum(len(item[1]) for item in template if item[0] == "special")

    def process(self, ids: list[int], pair_ids: list[int] | None, add_special_tokens: bool) -> list[int]:
        if not add_special_tokens:
            return ids + (pair_ids or [])
        template = self.single if pair_ids is None else self.pair
        out: list[int] = []
        for item in template:
            if item[0] == "special":
                out.extend(item[1])
            elif item[0] == "A":
                out.extend(ids)
            else:
                out.extend(pair_ids)
        return out


NO_POST_PROCESSOR = PostProcessor([("A",)], [("A",), ("B",)])


def _template(items, special_ids: dict[str, list[int]], source: str, where: str) -> Template:
    """A TemplateProcessing "single"/"pair" list -> Template (strings like "$A" or "[CLS]" allowed)."""
    if isinstance(items, str):
        items = items.split()
    if not isinstance(items, list):
        raise ValueError(f"{source}: {where} must be a list, got {type(items).__name__}")
    template: Template = []
    for i, item in enumerate(items):
        if isinstance(item, str):  # the short form "$A", "$B:1", "[CLS]", "[SEP]:1"
            name = item.split(":")[0]
            if name in ("$A", "$B", "$"):
                template.append(("B",) if name == "$B" else ("A",))
                continue
            item = {"SpecialToken": {"id": name}}
        if isinstance(item, dict) and set(item) == {"Sequence"}:
            sequence = item["Sequence"].get("id") if isinstance(item["Sequence"], dict) else None
            if sequence not in ("A", "B"):
                raise ValueError(f"{source}: {where}[{i}] names sequence {sequence!r}, expected 'A' or 'B'")
            template.append((sequence,))
        elif isinstance(item, dict) and set(item) == {"SpecialToken"}:
            name = item["SpecialToken"].get("id") if isinstance(item["SpecialToken"], dict) else None
            if name not in special_ids:
                raise ValueError(
                    f"{source}: {where}[{i}] uses special token {name!r}, which is not in the "
                    f"post_processor's special_tokens ({sorted(special_ids)})"
                )
            template.append(("special", special_ids[name]))
        else:
            raise ValueError(f"{source}: {where}[{i}] must be a Sequence or SpecialToken item, got {item!r:.80}")
    return template


def _token_and_id(spec: dict, key: str, source: str, where: str) -> int:
    value = _field(spec, key, source, where, list)
    if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
        raise ValueError(f"{source}: {where}.{key} must be [token, id], got {value!r}")
    return value[1]


def _post_processor_parts(spec, source: str, where: str) -> list[PostProcessor]:
    kind = _typed(spec, source, where)
    if kind == "Sequence":
        parts = []
        for i, item in enumerate(_field(spec, "processors", source, where, list)):
            parts.extend(_post_processor_parts(item, source, f"{where}.processors[{i}]"))
        return parts
    if kind == "ByteLevel":
        return []  # changes offsets only
    if kind == "TemplateProcessing":
        specials = _field(spec, "special_tokens", source, where, dict, {})
        special_ids: dict[str, list[int]] = {}
        for name, value in specials.items():
            ids = value.get("ids") if isinstance(value, dict) else None
            if not isinstance(ids, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
                raise ValueError(f"{source}: {where}.special_tokens[{name!r}] must have a list of int 'ids', got {value!r:.80}")
            special_ids[name] = list(ids)
        single = _template(_field(spec, "single", source, where, (list, str)), special_ids, source, f"{where}.single")
        pair = _template(_field(spec, "pair", source, where, (list, str)), special_ids, source, f"{where}.pair")
        return [PostProcessor(single, pair)]
    if kind == "BertProcessing":
        cls, sep = _token_and_id(spec, "cls", source, where), _token_and_id(spec, "sep", source, where)
        return [PostProcessor([("special", [cls]), ("A",), ("special", [sep])],
                              [("special", [cls]), ("A",), ("special", [sep]), ("B",), ("special", [sep])])]
    if kind == "RobertaProcessing":
        cls, sep = _token_and_id(spec, "cls", source, where), _token_and_id(spec, "sep", source, where)
        return [PostProcessor([("special", [cls]), ("A",), ("special", [sep])],
                              [("special", [cls]), ("A",), ("special", [sep, sep]), ("B",), ("special", [sep])])]
    raise unsupported(source, f"{where}.type", kind,
                      "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence, null")


def build_post_processor(spec, source: str) -> PostProcessor:
    """The "post_processor" section (null, ByteLevel: the sequences unchanged)."""
    if spec is None:
        return NO_POST_PROCESSOR
    parts = _post_processor_parts(spec, source, "post_processor")
    if len(parts) > 1:
        raise ValueError(f"{source}: post_processor adds special tokens in {len(parts)} places; minifm supports one")
    return parts[0] if parts else NO_POST_PROCESSOR


# ------------------------------------------------------------------ decoders
def _join_with_spaces(tokens: list[str]) -> str:
    return " ".join(tokens)


def build_decoder(spec, source: str) -> Callable[[list[str]], str]:
    """The "decoder" section as a function token strings -> text."""
    if spec is None:
        return _join_with_spaces
    kind = _typed(spec, source, "decoder")
    if kind == "ByteLevel":
        return decode_byte_level
    if kind == "WordPiece":
        prefix = _field(spec, "prefix", source, "decoder", str, "##")
        cleanup = _field(spec, "cleanup", source, "decoder", bool, True)

        def decode(tokens: list[str]) -> str:
            return decode_wordpiece(tokens, prefix=prefix, cleanup=cleanup)
        return decode
    raise unsupported(source, "decoder.type", kind, "ByteLevel, WordPiece, null")
