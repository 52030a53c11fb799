"""Special tokens: the reserved strings every stage of the lifecycle agrees on, and how text is cut
around them.

A special token is a string that maps to one id of its own, after the byte tokens and the merges.
It is never split and never produced by merges; `BPETokenizer.encode` emits its id only where the
caller allows it (`allowed_special`). In text that is not allowed, the same characters are encoded
as ordinary text, so user input can never forge a control token.

DEFAULT_SPECIAL_TOKENS, in id order after the merges:

    <|endoftext|>                 document separator in pre-training; end of sequence in generation
    <|pad|>                       padding in batches (its positions are masked out of the loss)
    <|system|> <|user|> <|assistant|>
                                  role headers of the chat template (minifm.tokenizer.chat)
    <|end|>                       end of one chat turn; generation stops on it
    <|mask|>                      the [MASK] of BERT masked-LM pre-training
    <|cls|> <|sep|>               BERT's sequence-start and segment-separator tokens
    <|extra_0|> .. <|extra_31|>   T5 span-corruption sentinels
"""
from __future__ import annotations

import re
from collections.abc import Iterable

ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END_OF_TURN = "<|end|>"
MASK = "<|mask|>"
CLS = "<|cls|>"
SEP = "<|sep|>"
NUM_SENTINELS = 32
SENTINELS: tuple[str, ...] = tuple(f"<|extra_{i}|>" for i in range(NUM_SENTINELS))

DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT, PAD, SYSTEM, USER, ASSISTANT, END_OF_TURN, MASK, CLS, SEP, *SENTINELS,
)


def sentinel(i: int) -> str:
    """The T5 sentinel string number i (0 <= i < 32)."""
    if not isinstance(i, int) or not 0 <= i < NUM_SENTINELS:
        raise ValueError(f"sentinel index must be an int in [0, {NUM_SENTINELS}), got {i!r}")
    return SENTINELS[i]


def check_special_tokens(special_tokens: Iterable[str]) -> tuple[str, ...]:
    """Validate a sequence of special-token strings (non-empty str, no duplicates) and return it."""
    if isinstance(special_tokens, str):
        raise TypeError(
            f"special_tokens must be a sequence of strings, got the single string {special_tokens!r}"
        )
    tokens = tuple(special_tokens)
    seen: set[str] = set()
    for i, token in enumerate(tokens):
        if not isinstance(token, str) or not token:
            raise ValueError(f"special_tokens[{i}] must be a non-empty str, got {token!r}")
        if token in seen:
            raise ValueError(f"special_tokens[{i}] = {token!r} is repeated")
        seen.add(token)
    return tokens


def special_splitter(tokens: Iterable[str]) -> re.Pattern | None:
    """A pattern whose `split` cuts text around the given tokens (kept, longest match first).

    Returns None when there is no token to cut on.
    """
    ordered = sorted(set(tokens), key=lambda t: (-len(t), t))
    if not ordered:
        return None
    return re.compile("(" + "|".join(re.escape(t) for t in ordered) + ")")
