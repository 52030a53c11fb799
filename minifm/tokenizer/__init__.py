"""Tokenizer: byte-level BPE, special tokens, the chat template and fertility statistics.

    from minifm.tokenizer import BPETokenizer, DEFAULT_SPECIAL_TOKENS
    tok = BPETokenizer.train(texts, vocab_size=4096, pattern="gpt4", special_tokens=DEFAULT_SPECIAL_TOKENS)
    ids = tok.encode("Hello world<|endoftext|>", allowed_special="all")
    tok.decode(ids)  ->  "Hello world<|endoftext|>"

    bpe.py          BPETokenizer: train / encode / decode / save / load (hot loops: minifm.kernels.bpe)
    pretokenize.py  the GPT-2 and GPT-4-style split rules written for Python's `re`
    special.py      DEFAULT_SPECIAL_TOKENS and what each one is for
    chat.py         apply_chat_template / render_chat_text (ids + assistant mask for SFT)
    fertility.py    tokens per word and bytes per token per language
"""
from minifm.tokenizer.bpe import BPETokenizer
from minifm.tokenizer.chat import apply_chat_template, render_chat_text
from minifm.tokenizer.fertility import fertility, format_table
from minifm.tokenizer.pretokenize import pretokenize
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

__all__ = [
    "BPETokenizer", "DEFAULT_SPECIAL_TOKENS", "apply_chat_template", "fertility", "format_table",
    "pretokenize", "render_chat_text",
]
