"""Against Hugging Face `tokenizers` (skipped unless installed): the GPT-2 split rule gives the same
pieces as its ByteLevel pre-tokenizer, and BPE trained the same way compresses as well (bytes per
token within 3%).

The piece comparison draws only code points that Python's Unicode database assigns: minifm's letter
and number classes come from `unicodedata` (Unicode 14 on Python 3.11), while `tokenizers` carries
its own, newer tables, so a code point assigned after Python's version (U+13441, a Unicode 15
hieroglyph, say) is a letter to one and "other" to the other. That is the documented simplification
of minifm/tokenizer/pretokenize.py, not a disagreement about the split rule.
"""
import unicodedata

import pytest
from hypothesis import given

from minifm.tokenizer import BPETokenizer, pretokenize
from strategies import tokenizer_text
from tokenizer_corpus import stdlib_sample

hf = pytest.importorskip("tokenizers", reason="Hugging Face tokenizers is an optional yardstick (pip install tokenizers)")


def hf_byte_level_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _assigned_in_python_unicode(text: str) -> bool:
    return all(unicodedata.category(ch) != "Cn" for ch in text)


@given(text=tokenizer_text.filter(_assigned_in_python_unicode))
def test_gpt2_pieces_match_hf_byte_level(text):
    pre = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    theirs = [text[start:end] for _, (start, end) in pre.pre_tokenize_str(text)]
    assert pretokenize(text, "gpt2") == theirs


def test_bytes_per_token_within_3_percent_of_hf():
    texts = stdlib_sample(700_000)
    train = [t for i, t in enumerate(texts) if i % 4 != 3]
    held_out = [t for i, t in enumerate(texts) if i % 4 == 3]
    vocab_size = 1500
    ours = BPETokenizer.train(train, vocab_size=vocab_size, pattern="gpt2")
    theirs = hf_byte_level_tokenizer()
    trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=0, show_progress=False,
                                     initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    theirs.train_from_iterator(train, trainer=trainer)
    assert theirs.get_vocab_size() == ours.vocab_size
    our_tokens = sum(len(ours.encode(t)) for t in held_out)
    their_tokens = sum(len(e.ids) for e in theirs.encode_batch(held_out))
    assert our_tokens == pytest.approx(their_tokens, rel=0.03)
