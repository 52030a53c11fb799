"""Tokenizer: byte-level BPE, special tokens, the chat template and fertility statistics, and the
real tokenizers of pretrained models (Hugging Face tokenizer.json or GGUF) with the same ids as `tokenizers`.

    from minifm.tokenizer import BPETokenizer, DEFAULT_SPECIAL_TOKENS
    tok = BPETokenizer.train(texts, vocab_size=4096, pattern="gpt4", special_tokens=DEFAULT_SPECIAL_TOKENS)
    ids = tok.encode("Hello world<|endoftext|>", allowed_special="all")
    tok.decode(ids)  ->  "Hello world<|endoftext|>"

    bpe.py          BPETokenizer: train / encode / decode / save / load (hot loops: minifm.kernels.bpe)
    pretokenize.py  the GPT-2 and GPT-4-style split rules written for Python's `re`
    special.py      DEFAULT_SPECIAL_TOKENS and what each one is for
    chat.py         apply_chat_template / render_chat_text (ids + assistant mask for SFT)
    fertility.py    tokens per word and bytes per token per language

    tok = from_pretrained("all-minilm-l6-v2")            # or a tokenizer.json directory / a .gguf file
    tok.encode("Hello world")  ->  [101, 7592, 2088, 102]

    pretrained.py     from_pretrained, PretrainedTokenizer (byte-level BPE on a HF vocabulary), GGUF, save_pretrained
    tokenizer_json.py the tokenizer.json sections: added tokens, normalizers, pre-tokenizers, post-processors, decoders
    wordpiece.py      WordPiece and BERT's normalizer, pre-tokenizer and decoder
    byte_level.py     GPT-2's byte <-> unicode table
    chat_template.py  Jinja chat templates rendered as transformers does
"""
from minifm.tokenizer.bpe import BPETokenizer
from minifm.tokenizer.chat import apply_chat_template, render_chat_text
from minifm.tokenizer.fertility import fertility, format_table
from minifm.tokenizer.pretokenize import pretokenize
from minifm.tokenizer.pretrained import PretrainedTokenizer, from_pretrained
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

__all__ = [
    "BPETokenizer", "DEFAULT_SPECIAL_TOKENS", "PretrainedTokenizer", "apply_chat_template", "fertility",
    "format_table", "from_pretrained", "pretokenize", "render_chat_text",
]
