"""Texts on which minifm's pretrained tokenizers are compared with Hugging Face `tokenizers`.

Python stdlib source (code, docstrings, odd whitespace), tinyworld's web-like corpus in its three
languages (English, Spanish, German, with its noise: markup, navigation, gibberish), the
multilingual sentences of tokenizer_corpus.py, and hand-written edge cases: emoji and ZWJ
sequences, CJK, white-space runs, digits and number forms, control characters, special-token text
embedded in text, very long words.
"""
import unicodedata
from functools import lru_cache

from minifm.data import tinyworld
from tokenizer_corpus import MULTILINGUAL, stdlib_sample

EDGE_TEXTS = [
    "", " ", "  ", "\n", "\t\t \n \r\n", "a  b   c    d", "   leading", "trailing   ", "x\u00a0y\u3000z\u2028w",
    "12345678901234567890", "3.14159 1,000,000 ²³ ½ Ⅻ ٣٤٥ १२३", "🙂🙂🙂 👩\u200d👩\u200d👧 🇫🇷🇩🇪 🏳️\u200d🌈",
    "漢字とかなカナ 한국어 中文，标点。", "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ", "e\u0301 \u0301\u0308 ñ", "\x00\x01\x04\x1b\x7f bell\x07",
    "<|im_start|>user\nHi there<|im_end|>\n", "a<|endoftext|>b<|im_end|><|im_end|>", "<|im_start", "<repo_name>x<filename>y",
    "[CLS] hello [SEP] [MASK] [PAD][UNK]", "don't can't I'M we'LL they'Re", "x" * 500, "=" * 100, " " * 50 + "x",
    "def f(x):\n    return x  # comment\n\n\n", "\ufeffBOM", "\ufffd", "Ünïcödé ÀÉÎÕÜ ß ẞ İ ı ΣΑΣ σς",
    "supercalifragilisticexpialidocious" * 5, "https://example.com/a?b=c&d=e#f", "tab\tseparated\tvalues\n1\t2\t3",
]


def assigned_in_python_unicode(text: str) -> bool:
    """True when every character of `text` is assigned in Python's Unicode database.

    minifm's character classes come from `unicodedata` (Unicode 14 on Python 3.11); `tokenizers`
    carries its own, newer tables. A character assigned since (U+13441, a Unicode 15 hieroglyph,
    say) is a letter to one and unassigned to the other -- the documented simplification of
    minifm/tokenizer/pretokenize.py, not a disagreement about the rules -- so drawn texts avoid them.
    """
    return all(unicodedata.category(ch) != "Cn" for ch in text)


@lru_cache(maxsize=1)
def comparison_corpora() -> dict[str, list[str]]:
    """{name: texts}: about 300 KB of stdlib source, 60 KB of tinyworld, multilingual and edge cases."""
    return {
        "stdlib": stdlib_sample(300_000),
        "tinyworld": tinyworld.generate_corpus(60_000, seed=3, languages={"en": 1.0, "es": 1.0, "de": 1.0}),
        "multilingual": list(MULTILINGUAL),
        "edge": list(EDGE_TEXTS),
    }


def all_texts() -> list[str]:
    return [text for texts in comparison_corpora().values() for text in texts]
