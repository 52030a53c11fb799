"""WordPiece, BERT's tokenizer: the normalizer, the pre-tokenizer, the model and the decoder.

    text  --BertNormalizer-->  "hello, 世界!"  --BertPreTokenizer-->  ["hello", ",", "世", "界", "!"]
          --WordPiece-->  ids of "hello" "," "世" "界" "!"   (a long word: "token" "##izer" ...)

BertNormalizer (as configured in tokenizer.json, applied in this order):
    clean_text            drop NUL, U+FFFD and control characters (general category C*, except
                          tab, newline and carriage return); every white space becomes " "
    handle_chinese_chars  put spaces around each CJK Unified Ideograph, so each is a word
    strip_accents         NFD, then drop the non-spacing marks (category Mn); when the file says
                          null it follows `lowercase`
    lowercase             each character lowercased on its own (Python's str.lower would turn a
                          final 'Σ' into 'ς'; Rust's char::to_lowercase, used by `tokenizers`,
                          never does, so 'Σ' becomes 'σ' first)

BertPreTokenizer: split on white space (dropped), then every punctuation character (ASCII
punctuation or Unicode category P*) is a word of its own.

WordPiece: each word is cut greedily, longest match first: the longest prefix in the vocabulary,
then the longest "##"-prefixed continuation of the rest, and so on. A word with a part that
matches nothing, or longer than max_input_chars_per_word characters, becomes the single unknown
token ("[UNK]").

Decoder: tokens are joined, a "##" continuation glued to the previous token, every other token
after a space; with cleanup, " ." -> ".", " n't" -> "n't" and the other replacements of
`tokenizers` are applied to each token.

White space is the Unicode White_Space property, as Rust's char::is_whitespace.
Simplification: categories come from Python's `unicodedata` (Unicode 14 on Python 3.11);
`tokenizers` has newer tables, so a character assigned since then is a control character here
(general category Cn) and is dropped by clean_text.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from minifm.tokenizer.pretokenize import _CODE_POINTS, _category_masks, _char_class, encode_pieces_cached

# CJK Unified Ideographs blocks, as BERT defines "Chinese characters" (not Hangul, Hiragana, Katakana).
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
CLEANUP_REPLACEMENTS = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
    (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)


# ------------------------------------------------------------------ Unicode classes
@lru_cache(maxsize=1)
def general_categories() -> np.ndarray:
    """The general category of every code point: an (0x110000,) array of two-byte codes b'Lu', b'Nd', ..."""
    joined = "".join(unicodedata.category(chr(cp)) for cp in range(_CODE_POINTS))
    return np.frombuffer(joined.encode("ascii"), dtype="S2")


def category_mask(*names: str) -> np.ndarray:
    """Code points whose general category is one of `names` ("P" = all of Pc Pd Ps Pe Pi Pf Po)."""
    codes = general_categories()
    major = np.frombuffer(codes.tobytes(), dtype="S1")[0::2]
    mask = np.zeros(_CODE_POINTS, dtype=bool)
    for name in names:
        mask |= (major == name.encode("ascii")) if len(name) == 1 else (codes == name.encode("ascii"))
    return mask


@lru_cache(maxsize=1)
def _patterns() -> dict[str, re.Pattern]:
    """The compiled character classes BERT's rules need (built once, ~0.5 s)."""
    space = _category_masks()["space"]
    control = category_mask("C")
    control[[0x09, 0x0A, 0x0D]] = False       # tab, newline, return count as white space
    control[[0x00, 0xFFFD]] = True
    punctuation = category_mask("P")
    punctuation[[ord(c) for c in ASCII_PUNCTUATION]] = True
    cjk = np.zeros(_CODE_POINTS, dtype=bool)
    for first, last in CJK_RANGES:
        cjk[first:last + 1] = True
    return {
        "control": re.compile(_char_class(control) + "+"),
        "space": re.compile(_char_class(space)),
        "cjk": re.compile(_char_class(cjk)),
        "nonspacing_mark": re.compile(_char_class(category_mask("Mn")) + "+"),
        "word": re.compile(f"{_char_class(punctuation)}|{_char_class(~(punctuation | space))}+"),
    }


# ------------------------------------------------------------------ normalizer
def to_lowercase(text: str) -> str:
    """Each character lowercased on its own (no final-sigma rule, as Rust's char::to_lowercase)."""
    return text.replace("\u03a3", "\u03c3").lower()


def strip_accent_marks(text: str) -> str:
    """NFD, then drop the non-spacing marks: "café" -> "cafe"."""
    return _patterns()["nonspacing_mark"].sub("", unicodedata.normalize("NFD", text))


def bert_normalize(text: str, clean_text: bool = True, handle_chinese_chars: bool = True,
                   strip_accents: bool | None = None, lowercase: bool = True) -> str:
    """BertNormalizer (see the module docstring); strip_accents=None follows `lowercase`."""
    patterns = _patterns()
    if clean_text:
        text = patterns["control"].sub("", text)
        text = patterns["space"].sub(" ", text)
    if handle_chinese_chars:
        text = patterns["cjk"].sub(lambda match: f" {match.group()} ", text)
    if strip_accents is None:
        strip_accents = lowercase
    if strip_accents:
        text = strip_accent_marks(text)
    if lowercase:
        text = to_lowercase(text)
    return text


# ------------------------------------------------------------------ pre-tokenizer
def bert_pre_tokenize(text: str) -> list[str]:
    """Words of `text`: runs between white space, with each punctuation character on its own."""
    return _patterns()["word"].findall(text)


# ------------------------------------------------------------------ model
class WordPieceModel:
    """Greedy longest-match-first WordPiece over a {token: id} vocabulary, with a cache per word."""

    def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]", continuing_subword_prefix: str = "##",
                 max_input_chars_per_word: int = 100, source: str = "WordPiece"):
        if unk_token not in vocab:
            raise ValueError(f"{source}: unk_token {unk_token!r} is not in the vocabulary")
        if max_input_chars_per_word < 0:
            raise ValueError(f"{source}: max_input_chars_per_word must be >= 0, got {max_input_chars_per_word}")
        self.vocab = dict(vocab)
        self.unk_token = unk_token
        self.unk_id = vocab[unk_token]
        self.prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self._tokens: dict[int, str] = {token_id: token for token, token_id in self.vocab.items()}
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokens.get(token_id)

    def tokenize_word(self, word: str) -> list[int]:
        """Ids of one word: greedy longest match, "##" on every piece after the first, or [unk]."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_id]
        ids: list[int] = []
        start = 0
        while start < len(word):
            match_id = None
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                match_id = self.vocab.get(piece)
                if match_id is not None:
                    break
                end -= 1
            if match_id is None:
                return [self.unk_id]
            ids.append(match_id)
            start = end
        return ids

    def encode_words(self, words: Iterable[str]) -> list[int]:
        """Concatenated ids of `words` (cached per word)."""
        return encode_pieces_cached(words, self._cache, self.tokenize_word)

    def to_json(self) -> dict:
        """The tokenizer.json "model" section."""
        return {
            "type": "WordPiece",
            "unk_token": self.unk_token,
            "continuing_subword_prefix": self.prefix,
            "max_input_chars_per_word": self.max_input_chars_per_word,
            "vocab": dict(sorted(self.vocab.items(), key=lambda item: item[1])),
        }


# ------------------------------------------------------------------ decoder
def decode_wordpiece(tokens: Sequence[str], prefix: str = "##", cleanup: bool = True) -> str:
    """The WordPiece decoder of `tokenizers` (see the module docstring)."""
    parts: list[str] = []
    for position, token in enumerate(tokens):
        if position > 0:
            token = token[len(prefix):] if token.startswith(prefix) else " " + token
        if cleanup:
            for old, new in CLEANUP_REPLACEMENTS:
                token = token.replace(old, new)
        parts.append(token)
    return "".join(parts)
