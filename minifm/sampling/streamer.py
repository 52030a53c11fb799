"""Streaming generated text as it is produced: transformers' streamer protocol and a TextStreamer.

generate(..., streamer=s) calls s.put(prompt_ids) once with the prompt (1-D int array), then
s.put(token) with each new token as it is chosen, and s.end() when generation stops, as transformers
does. Streaming needs one sequence (batch 1, num_return_sequences 1, no beam search).

TextStreamer turns the tokens into text on a stream (stdout by default). A token need not end on a
character boundary (byte-level BPE splits a multi-byte character across tokens), so it decodes all
the new tokens so far and prints only the part of the text that cannot change any more: everything
up to a trailing U+FFFD (an incomplete UTF-8 sequence) is final.
"""
from __future__ import annotations

import sys

import numpy as np

REPLACEMENT = "\ufffd"


class TextStreamer:
    """Print decoded text as tokens arrive (see the module docstring); skip_prompt leaves the prompt out."""

    def __init__(self, tokenizer, skip_prompt: bool = True, stream=None, skip_special_tokens: bool = True,
                 stop_token_ids=()):
        self.tokenizer, self.skip_prompt = tokenizer, skip_prompt
        self.stream = stream if stream is not None else sys.stdout
        self.skip_special_tokens = skip_special_tokens
        self.stop_token_ids = {int(token) for token in stop_token_ids}  # not printed (say, <|im_end|>)
        self.tokens: list[int] = []
        self.printed = 0  # characters of the decoded text already written
        self.prompt_seen = False

    def _decode(self, ids: list[int]) -> str:
        try:
            return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)
        except TypeError:  # a tokenizer whose decode has no skip_special_tokens (minifm's own BPE)
            return self.tokenizer.decode(ids)

    def put(self, ids) -> None:
        ids = [int(token) for token in np.ravel(ids)]
        if not self.prompt_seen:
            self.prompt_seen = True
            if self.skip_prompt:
                return
        self.tokens.extend(token for token in ids if token not in self.stop_token_ids)
        text = self._decode(self.tokens)
        final = len(text) - 1 if text.endswith(REPLACEMENT) else len(text)
        if final > self.printed:
            self.stream.write(text[self.printed:final])
            self.stream.flush()
            self.printed = final

    def end(self) -> None:
        text = self._decode(self.tokens)
        self.stream.write(text[self.printed:] + "\n")
        self.stream.flush()
        self.tokens, self.printed, self.prompt_seen = [], 0, False

    @property
    def text(self) -> str:
        """The text of the tokens since the last end() (for callers that also want it whole)."""
        return self._decode(self.tokens)
