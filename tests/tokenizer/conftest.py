"""Shared tokenizers for the tokenizer tests: trained once per session on a small mixed corpus."""
import pytest

from minifm.tokenizer import DEFAULT_SPECIAL_TOKENS, BPETokenizer
from tokenizer_corpus import MULTILINGUAL, stdlib_sample


@pytest.fixture(scope="session")
def training_texts():
    return stdlib_sample(150_000) + MULTILINGUAL * 20


@pytest.fixture(scope="session")
def tokenizer(training_texts):
    return BPETokenizer.train(training_texts, vocab_size=1024, pattern="gpt4", special_tokens=DEFAULT_SPECIAL_TOKENS)


@pytest.fixture(scope="session")
def gpt2_tokenizer(training_texts):
    return BPETokenizer.train(training_texts, vocab_size=700, pattern="gpt2", special_tokens=("<|endoftext|>",))
