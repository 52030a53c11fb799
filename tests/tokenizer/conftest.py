"""Shared tokenizers for the tokenizer tests: trained once per session on a small mixed corpus."""
import pytest

from minifm.tokenizer import DEFAULT_SPECIAL_TOKENS, BPETokenizer
from oracles import require
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


# ---------------------------------------------------------------------------- real tokenizers and their oracles
@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf):
    """minifm's tokenizer read from the SmolLM2 GGUF file (~6 s: the gguf package reads the metadata)."""
    from minifm.tokenizer import from_pretrained

    return from_pretrained(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_transformers(smollm2_gguf):
    """transformers' own conversion of the GGUF tokenizer (slow: done once per session)."""
    transformers = require("transformers")
    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def smollm2_transformers_dir(smollm2_transformers, tmp_path_factory):
    """transformers' conversion saved as a Hugging Face directory (tokenizer.json, tokenizer_config.json)."""
    directory = tmp_path_factory.mktemp("smollm2_transformers")
    smollm2_transformers.save_pretrained(directory)
    return directory
