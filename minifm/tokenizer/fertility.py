"""Fertility: how many tokens a tokenizer spends per word, per language.

For each language the texts are encoded (special-token text as ordinary text) and counted:

    tokens_per_word  = tokens / words        ("fertility"; words = whitespace-separated runs)
    bytes_per_token  = UTF-8 bytes / tokens  (compression)
    chars_per_token  = characters / tokens
    ratio_to_best    = tokens_per_word / the smallest tokens_per_word over the languages

A tokenizer trained mostly on one language learns long merges for it and short ones for the rest,
so the under-represented languages get a higher fertility: the same content costs them more
tokens, hence more compute and less context. `fertility` measures that with one call and
`format_table` prints it.

Simplification: words are whitespace-separated, so for scripts written without spaces (Chinese,
Japanese, Thai) tokens_per_word counts tokens per space-separated run; compare bytes_per_token or
chars_per_token there, or feed parallel texts and compare the token totals.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

def fertility(tokenizer, texts_by_language: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """{language: {texts, words, chars, bytes, tokens, tokens_per_word, bytes_per_token,
    chars_per_token, ratio_to_best}} for every language in `texts_by_language`."""
    if not isinstance(texts_by_language, Mapping) or not texts_by_language:
        raise ValueError("texts_by_language must be a non-empty dict {language: list of str}")
    stats: dict[str, dict] = {}
    for language, texts in texts_by_language.items():
        if isinstance(texts, str):
            raise TypeError(f"texts_by_language[{language!r}] must be a list of str, got a single str")
        words = chars = num_bytes = tokens = count = 0
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts_by_language[{language!r}][{index}] must be str, got {type(text).__name__}")
            count += 1
            words += len(text.split())
            chars += len(text)
            num_bytes += len(text.encode("utf-8", "surrogatepass"))
            tokens += len(tokenizer.encode(text))
        if words == 0 or tokens == 0:
            raise ValueError(f"texts_by_language[{language!r}] holds no words (got {count} texts)")
        stats[language] = {
            "texts": count, "words": words, "chars": chars, "bytes": num_bytes, "tokens": tokens,
            "tokens_per_word": tokens / words,
            "bytes_per_token": num_bytes / tokens,
            "chars_per_token": chars / tokens,
        }
    best = min(entry["tokens_per_word"] for entry in stats.values())
    for entry in stats.values():
        entry["ratio_to_best"] = entry["tokens_per_word"] / best
    return stats


def format_table(stats: Mapping[str, Mapping]) -> str:
    """A plain-text table of `fertility`'s result, one row per language, best first."""
    rows = sorted(stats.items(), key=lambda item: item[1]["tokens_per_word"])
    header = f"{'language':<12}{'texts':>7}{'words':>10}{'tokens':>10}{'tok/word':>10}{'bytes/tok':>11}{'chars/tok':>11}{'x best':>8}"
    lines = [header, "-" * len(header)]
    for language, entry in rows:
        lines.append(
            f"{str(language):<12}{entry['texts']:>7}{entry['words']:>10}{entry['tokens']:>10}"
            f"{entry['tokens_per_word']:>10.3f}{entry['bytes_per_token']:>11.3f}"
            f"{entry['chars_per_token']:>11.3f}{entry['ratio_to_best']:>8.2f}"
        )
    return "\n".join(lines)
