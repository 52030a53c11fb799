"""Fertility: the statistics are the right ratios, and an under-represented language costs more."""
import random

import pytest

from minifm.tokenizer import BPETokenizer, fertility, format_table


def pseudo_language(seed, syllables, n_words=1000):
    """A made-up language: words of 1-4 syllables from its own inventory, Zipf-like word use."""
    rng = random.Random(seed)
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n_words)]
    weights = [1.0 / (rank + 1) for rank in range(n_words)]

    def sentences(n, sentence_rng):
        return [" ".join(sentence_rng.choices(lexicon, weights, k=12)) + "." for _ in range(n)]
    return sentences


def test_under_represented_language_costs_more_tokens():
    common = pseudo_language(1, ["ka", "to", "ri", "na", "mo", "se", "lu"])
    rare = pseudo_language(2, ["be", "qu", "vo", "gi", "dr", "fe", "xo"])  # same shape, other letters
    train_rng = random.Random(0)
    tok = BPETokenizer.train(common(950, train_rng) + rare(50, train_rng), vocab_size=600)
    held_out = random.Random(99)
    stats = fertility(tok, {"common": common(100, held_out), "rare": rare(100, held_out)})
    assert stats["rare"]["tokens_per_word"] > 1.2 * stats["common"]["tokens_per_word"]
    assert stats["rare"]["bytes_per_token"] < stats["common"]["bytes_per_token"]
    assert stats["common"]["ratio_to_best"] == 1.0
    assert stats["rare"]["ratio_to_best"] == pytest.approx(
        stats["rare"]["tokens_per_word"] / stats["common"]["tokens_per_word"])
    table = format_table(stats)
    assert table.splitlines()[2].startswith("common") and table.splitlines()[3].startswith("rare")


def test_statistics_are_the_defined_ratios(tokenizer):
    texts = {"en": ["Hello world, hello tokens.", "A second line"], "zh": ["你好 世界", "今天 天气 很好"]}
    stats = fertility(tokenizer, texts)
    for language, items in texts.items():
        tokens = sum(len(tokenizer.encode(t)) for t in items)
        words = sum(len(t.split()) for t in items)
        n_bytes = sum(len(t.encode()) for t in items)
        chars = sum(len(t) for t in items)
        entry = stats[language]
        assert (entry["tokens"], entry["words"], entry["bytes"], entry["chars"]) == (tokens, words, n_bytes, chars)
        assert entry["tokens_per_word"] == pytest.approx(tokens / words)
        assert entry["bytes_per_token"] == pytest.approx(n_bytes / tokens)
        assert entry["chars_per_token"] == pytest.approx(chars / tokens)
    assert min(e["ratio_to_best"] for e in stats.values()) == 1.0


def test_bad_inputs(tokenizer):
    with pytest.raises(ValueError, match="non-empty"):
        fertility(tokenizer, {})
    with pytest.raises(ValueError, match="'xx'"):
        fertility(tokenizer, {"xx": ["   "]})
    with pytest.raises(TypeError, match=r"\['en'\]\[1\]"):
        fertility(tokenizer, {"en": ["fine", 3]})
