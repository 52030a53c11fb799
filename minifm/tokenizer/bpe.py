"""Byte-level BPE: train merges on text, encode text to ids, decode ids to text, save and load.

Vocabulary layout (ids):
    0 .. 255                 the 256 single bytes, so every string is encodable and nothing is <unk>
    256 .. 256 + M - 1       the M learned merges, in the order they were learned; merge k joins the
                             pair (left, right) of existing ids into id 256 + k
    256 + M .. vocab - 1     the special tokens, in the order given (never produced by merges)

Training (`BPETokenizer.train`):
    1. cut every text around the special-token strings (their text never feeds a merge), cut each
       remaining chunk into pre-tokens with the split rule (minifm.tokenizer.pretokenize), and
       count the unique pre-tokens;
    2. learn merges on the unique pre-tokens weighted by their counts, with incremental pair
       counts and a lazy max-heap (minifm.kernels.bpe.train_merges, compiled in csrc/bpe.pyx).
       Ties in count go to the smallest (left id, right id). Merges never cross pre-tokens.

Encoding (`encode`): cut around the allowed special tokens, pre-tokenize, then merge each piece's
bytes by rank (lowest rank first, leftmost on a tie), with a cache per piece
(minifm.kernels.bpe.make_encoder). Special-token text that is not allowed is ordinary text.

Decoding (`decode`): concatenate the tokens' bytes and decode UTF-8 with errors="replace": a
sequence cut in the middle of a multi-byte character shows U+FFFD, as tiktoken and transformers do.
`decode_bytes` gives the raw bytes.

Hugging Face format (`save_pretrained`): tokenizer.json + tokenizer_config.json, loadable by
`tokenizers` and transformers with the same ids: the vocabulary spelled with GPT-2's byte table
(minifm/tokenizer/byte_level.py), the merges as token pairs in rank order, the split rule as a
Split pre-tokenizer (its `regex`-module form) followed by ByteLevel(use_regex=false), the special
tokens as special added tokens, and minifm's chat format as a Jinja chat template. Hugging Face
always recognises special-token text, so its ids equal `encode(text, allowed_special="all")`.

Simplifications: no byte-to-unicode remapping in minifm's own file (tokens are stored as bytes, the
file format stores merges as id pairs); no dropout, no min-frequency, no added (non-special) tokens; a lone surrogate
code point in input text is replaced by U+FFFD before encoding (it has no UTF-8 form).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_bytes, read_json_file
from minifm.kernels import bpe as bpe_kernels
from minifm.kernels._backend import compiled
from minifm.tokenizer.byte_level import bytes_to_token_text
from minifm.tokenizer.pretokenize import PATTERN_NAMES, REGEX_MODULE_PATTERNS, compiled_pattern
from minifm.tokenizer.pretrained import PretrainedTokenizer
from minifm.tokenizer.special import ASSISTANT, END_OF_TURN, ENDOFTEXT, PAD, SYSTEM, USER, check_special_tokens, special_splitter

NUM_BYTE_TOKENS = 256
FILE_FORMAT = "minifm-bpe"
FILE_VERSION = 1
_FILE_KEYS = {"format", "version", "pattern", "vocab_size", "merges", "special_tokens", "checksum"}


def _replace_surrogates(text: str) -> str:
    """`text` with every lone surrogate code point replaced by U+FFFD (pairs are joined)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _replace_surrogates(text).encode("utf-8")


def _check_merges(merges) -> np.ndarray:
    """Validate merges as (M, 2) ids where merge k only uses ids < 256 + k; no pair twice."""
    array = np.asarray(merges)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.int32)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"merges must have shape (M, 2), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"merges must hold integer ids, got dtype {array.dtype}")
    limit = NUM_BYTE_TOKENS + np.arange(array.shape[0])
    bad = np.flatnonzero((array.min(axis=1) < 0) | (array.max(axis=1) >= limit))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"merges[{k}] = {array[k].tolist()} uses an id outside [0, {int(limit[k])}) "
            f"(merge {k} may only join ids that exist before it)"
        )
    seen: set[tuple[int, int]] = set()
    for k, (left, right) in enumerate(array.tolist()):
        if (left, right) in seen:
            raise ValueError(f"merges[{k}] = {[left, right]} repeats an earlier merge")
        seen.add((left, right))
    return np.ascontiguousarray(array, dtype=np.int32)


def _checksum(pattern: str, merges: list, special_tokens: dict) -> str:
    canonical = json.dumps(
        {"pattern": pattern, "merges": merges, "special_tokens": special_tokens},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    )
    return "sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


class BPETokenizer:
    """A byte-level BPE tokenizer (see the module docstring for the id layout and algorithms)."""

    def __init__(self, merges, pattern: str = "gpt4", special_tokens: Sequence[str] = ()):
        if pattern not in PATTERN_NAMES:
            raise ValueError(f"pattern must be one of {PATTERN_NAMES}, got {pattern!r}")
        self._merges = _check_merges(merges)
        self.pattern = pattern
        specials = check_special_tokens(special_tokens)
        first_special = NUM_BYTE_TOKENS + self._merges.shape[0]
        self._special = {token: first_special + i for i, token in enumerate(specials)}
        self._special_by_id = {i: token for token, i in self._special.items()}

        table = [bytes([b]) for b in range(NUM_BYTE_TOKENS)]
        for left, right in self._merges.tolist():
            table.append(table[left] + table[right])
        table.extend(token.encode("utf-8") for token in specials)
        self._token_bytes: list[bytes] = table
        self._id_by_bytes: dict[bytes, int] = {}
        for i, token_bytes in enumerate(table[:first_special]):
            self._id_by_bytes.setdefault(token_bytes, i)

        self._splitters: dict[frozenset, object] = {}
        self._encoders: dict[str, object] = {}

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        """Number of ids: 256 bytes + merges + special tokens."""
        return len(self._token_bytes)

    @property
    def special_tokens(self) -> dict[str, int]:
        """{special-token string: id} (a copy)."""
        return dict(self._special)

    @property
    def merges(self) -> list[tuple[int, int]]:
        """The learned merges in rank order; merge k makes id 256 + k."""
        return [tuple(pair) for pair in self._merges.tolist()]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={self._merges.shape[0]}, "
            f"pattern={self.pattern!r}, special_tokens={len(self._special)})"
        )

    def token_to_id(self, token: str | bytes) -> int | None:
        """The id of a special token, or of the token whose bytes are `token`; None when absent
        (as in Hugging Face `tokenizers`). A str names a special token or its UTF-8 bytes."""
        if isinstance(token, str):
            if token in self._special:
                return self._special[token]
            token = token.encode("utf-8", "surrogatepass")
        if not isinstance(token, (bytes, bytearray)):
            raise TypeError(f"token must be str or bytes, got {type(token).__name__}")
        return self._id_by_bytes.get(bytes(token))

    def id_to_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (a special token's UTF-8 text for special ids)."""
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"token id must be an int, got {type(token_id).__name__}")
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {int(token_id)} is outside the vocabulary [0, {self.vocab_size})")
        return self._token_bytes[int(token_id)]

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        pattern: str = "gpt4",
        special_tokens: Sequence[str] = (),
        verbose: bool = False,
    ) -> "BPETokenizer":
        """Learn a vocabulary of `vocab_size` ids (bytes + merges + special tokens) from `texts`.

        Stops early, with a warning, when the texts run out of pairs to merge before the vocabulary
        is full; the special tokens then follow the last merge.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of str, got a single str (wrap it in a list)")
        if pattern not in PATTERN_NAMES:
            raise ValueError(f"pattern must be one of {PATTERN_NAMES}, got {pattern!r}")
        specials = check_special_tokens(special_tokens)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        minimum = NUM_BYTE_TOKENS + len(specials)
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size must be >= 256 + {len(specials)} special tokens = {minimum}, got {vocab_size}"
            )
        num_merges = int(vocab_size) - minimum

        started = time.perf_counter()
        split_rule = compiled_pattern(pattern)
        splitter = special_splitter(specials)
        word_counts: Counter = Counter()
        num_texts = 0
        num_chars = 0
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] must be str, got {type(text).__name__}")
            num_texts += 1
            num_chars += len(text)
            chunks = splitter.split(text)[0::2] if splitter is not None else (text,)
            for chunk in chunks:
                word_counts.update(split_rule.findall(chunk))
        counted = time.perf_counter()

        encoded_words = [_utf8(word) for word in word_counts]
        lengths = np.fromiter(map(len, encoded_words), dtype=np.int64, count=len(encoded_words))
        offsets = np.zeros(len(encoded_words) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        symbols = np.frombuffer(b"".join(encoded_words), dtype=np.uint8).astype(np.int32)
        counts = np.fromiter(word_counts.values(), dtype=np.int64, count=len(word_counts))
        merges = bpe_kernels.train_merges(symbols, offsets, counts, num_merges, NUM_BYTE_TOKENS)
        finished = time.perf_counter()

        if merges.shape[0] < num_merges:
            warnings.warn(
                f"BPE training found only {merges.shape[0]} merges, fewer than the {num_merges} "
                f"needed for vocab_size={vocab_size}: the texts have no pair left to merge. "
                f"The vocabulary has {NUM_BYTE_TOKENS + merges.shape[0] + len(specials)} ids.",
                stacklevel=2,
            )
        tokenizer = cls(merges, pattern=pattern, special_tokens=specials)
        if verbose:
            print(
                f"BPE train: {num_texts} texts, {num_chars} chars, {len(word_counts)} unique "
                f"pre-tokens ({pattern}) in {counted - started:.2f} s; {merges.shape[0]} merges "
                f"in {finished - counted:.2f} s; vocab_size {tokenizer.vocab_size}"
            )
            for k in list(range(min(5, merges.shape[0]))) + list(range(max(5, merges.shape[0] - 3), merges.shape[0])):
                print(f"  merge {k:6d} -> id {NUM_BYTE_TOKENS + k:6d}: {tokenizer.id_to_bytes(NUM_BYTE_TOKENS + k)!r}")
        return tokenizer

    # ------------------------------------------------------------------ encoding
    def _allowed(self, allowed_special) -> frozenset:
        if isinstance(allowed_special, str):
            if allowed_special == "all":
                return frozenset(self._special)
            if allowed_special == "none":
                return frozenset()
            raise ValueError(
                f"allowed_special must be 'all', 'none' or a set of special-token strings, "
                f"got {allowed_special!r}"
            )
        try:
            allowed = frozenset(allowed_special)
        except TypeError:
            raise TypeError(
                f"allowed_special must be 'all', 'none' or a set of strings, got {type(allowed_special).__name__}"
            ) from None
        unknown = sorted(str(t) for t in allowed if t not in self._special)
        if unknown:
            raise ValueError(f"allowed_special names tokens that are not special tokens: {unknown}")
        return allowed

    def __getstate__(self) -> dict:
        """copy.deepcopy support: the compiled encoders are a cache (rebuilt on first use), not state.
        (Nothing in minifm pickles a tokenizer; save() writes JSON.)"""
        state = dict(self.__dict__)
        state["_encoders"] = {}
        return state

    def _encoder(self):
        path = "reference" if compiled("bpe") is None else "compiled"
        if path not in self._encoders:
            self._encoders[path] = bpe_kernels.make_encoder(self._merges, NUM_BYTE_TOKENS)
        return self._encoders[path]

    def _encode_ordinary(self, text: str, encoder) -> list[int]:
        pieces = compiled_pattern(self.pattern).findall(text)
        try:
            ids = encoder.encode_pieces(pieces)
        except UnicodeEncodeError:
            pieces = compiled_pattern(self.pattern).findall(_replace_surrogates(text))
            ids = encoder.encode_pieces(pieces)
        return ids.tolist() if isinstance(ids, np.ndarray) else ids

    def encode(self, text: str, allowed_special: str | Iterable[str] = "none") -> list[int]:
        """Ids of `text`. Special tokens in `allowed_special` ("all", "none" or a set of strings)
        become their ids; any other special-token text is encoded as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        allowed = self._allowed(allowed_special)
        encoder = self._encoder()
        if not allowed:
            return self._encode_ordinary(text, encoder)
        if allowed not in self._splitters:
            self._splitters[allowed] = special_splitter(allowed)
        parts = self._splitters[allowed].split(text)
        ids: list[int] = []
        for position, part in enumerate(parts):
            if position % 2 == 1:  # split() puts the captured special token at odd positions
                ids.append(self._special[part])
            elif part:
                ids.extend(self._encode_ordinary(part, encoder))
        return ids

    def encode_batch(self, texts: Iterable[str], allowed_special: str | Iterable[str] = "none") -> list[list[int]]:
        """[encode(t) for t in texts]."""
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of str, got a single str (use encode)")
        allowed = self._allowed(allowed_special)
        out = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] must be str, got {type(text).__name__}")
            out.append(self.encode(text, allowed))
        return out

    # ------------------------------------------------------------------ decoding
    def _check_ids(self, ids) -> list[int]:
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
        array = np.asarray(ids)
        if array.size == 0:
            return []
        if array.dtype == object:  # e.g. Python ints beyond int64: check one by one
            for position, token_id in enumerate(array.reshape(-1).tolist()):
                self.id_to_bytes(token_id)
            raise TypeError(f"ids must be a flat sequence of ints, got {ids!r:.80}")
        if array.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {array.shape}")
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {array.dtype}")
        outside = np.flatnonzero((array < 0) | (array >= self.vocab_size))
        if outside.size:
            raise ValueError(
                f"token id {int(array[outside[0]])} (at position {int(outside[0])}) is outside "
                f"the vocabulary [0, {self.vocab_size})"
            )
        return array.tolist()

    def decode_bytes(self, ids) -> bytes:
        """The concatenated bytes of `ids` (may end inside a multi-byte character)."""
        table = self._token_bytes
        return b"".join([table[i] for i in self._check_ids(ids)])

    def decode(self, ids) -> str:
        """Text of `ids`; bytes that are not valid UTF-8 (a character cut between tokens) become
        U+FFFD, as with bytes.decode("utf-8", errors="replace")."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """The JSON-ready content of the file format (see docs/tokenizer.md)."""
        merges = self._merges.tolist()
        specials = dict(self._special)
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "pattern": self.pattern,
            "vocab_size": self.vocab_size,
            "merges": merges,
            "special_tokens": specials,
            "checksum": _checksum(self.pattern, merges, specials),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: a temporary file renamed into place)."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))
        atomic_write_bytes(path, text.encode("utf-8"))

    @classmethod
    def from_dict(cls, data: dict, source: str = "tokenizer data") -> "BPETokenizer":
        """Build from the file content, checking every field (ValueError naming the problem)."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        missing = sorted(_FILE_KEYS - set(data))
        extra = sorted(set(data) - _FILE_KEYS)
        if missing or extra:
            raise ValueError(f"{source}: missing keys {missing}, unexpected keys {extra}")
        if data["format"] != FILE_FORMAT:
            raise ValueError(f"{source}: format must be {FILE_FORMAT!r}, got {data['format']!r}")
        if data["version"] != FILE_VERSION:
            raise ValueError(f"{source}: unsupported version {data['version']!r} (this code reads {FILE_VERSION})")
        if data["pattern"] not in PATTERN_NAMES:
            raise ValueError(f"{source}: pattern must be one of {PATTERN_NAMES}, got {data['pattern']!r}")
        merges = data["merges"]
        if not isinstance(merges, list):
            raise ValueError(f"{source}: merges must be a list, got {type(merges).__name__}")
        for k, pair in enumerate(merges):
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)):
                raise ValueError(f"{source}: merges[{k}] must be a pair of ints, got {pair!r}")
        try:
            merge_array = _check_merges(np.array(merges, dtype=np.int64).reshape(-1, 2))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        specials = data["special_tokens"]
        if not isinstance(specials, dict):
            raise ValueError(f"{source}: special_tokens must be an object, got {type(specials).__name__}")
        ordered = sorted(specials.items(), key=lambda item: item[1] if isinstance(item[1], int) else -1)
        first_special = NUM_BYTE_TOKENS + len(merges)
        for offset, (token, token_id) in enumerate(ordered):
            if not isinstance(token_id, int) or token_id != first_special + offset:
                raise ValueError(
                    f"{source}: special_tokens must have ids {first_special}..{first_special + len(ordered) - 1} "
                    f"(right after the merges), got {token!r}: {token_id!r}"
                )
        expected_size = first_special + len(ordered)
        if data["vocab_size"] != expected_size:
            raise ValueError(
                f"{source}: vocab_size {data['vocab_size']!r} != 256 + {len(merges)} merges + "
                f"{len(ordered)} special tokens = {expected_size}"
            )
        if data["checksum"] != _checksum(data["pattern"], merges, specials):
            raise ValueError(
                f"{source}: checksum mismatch: the merges, pattern or special tokens were changed "
                f"after saving (recompute it with BPETokenizer(...).save)"
            )
        try:
            return cls(merge_array, pattern=data["pattern"], special_tokens=[t for t, _ in ordered])
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a file written by `save`; raises ValueError on a malformed or altered file."""
        return cls.from_dict(read_json_file(path), source=str(path))

    # ------------------------------------------------------------------ Hugging Face format
    def to_hf_json(self) -> dict:
        """The tokenizer.json content of this tokenizer (see the module docstring)."""
        first_special = NUM_BYTE_TOKENS + self._merges.shape[0]
        spellings = [bytes_to_token_text(token_bytes) for token_bytes in self._token_bytes[:first_special]]
        vocab: dict[str, int] = {}
        for token_id, spelling in enumerate(spellings):
            if spelling in vocab:
                raise ValueError(
                    f"ids {vocab[spelling]} and {token_id} are both the bytes {self._token_bytes[token_id]!r}; a "
                    f"Hugging Face vocabulary cannot hold one spelling twice"
                )
            vocab[spelling] = token_id
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": token_id, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
                for token, token_id in sorted(self._special.items(), key=lambda item: item[1])
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": REGEX_MODULE_PATTERNS[self.pattern]},
                 "behavior": "Isolated", "invert": False},
                byte_level,
            ]},
            "post_processor": dict(byte_level, trim_offsets=False),
            "decoder": dict(byte_level),
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": vocab,
                "merges": [[spellings[left], spellings[right]] for left, right in self._merges.tolist()],
            },
        }

    def hf_tokenizer_config(self) -> dict:
        """The tokenizer_config settings: eos/pad tokens and minifm's chat format as a Jinja template."""
        config: dict = {}
        if ENDOFTEXT in self._special:
            config["eos_token"] = ENDOFTEXT
        if PAD in self._special:
            config["pad_token"] = PAD
        if all(token in self._special for token in (SYSTEM, USER, ASSISTANT, END_OF_TURN)):
            config["chat_template"] = MINIFM_CHAT_TEMPLATE
        return config

    def save_pretrained(self, directory: str | os.PathLike) -> list[Path]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (Hugging Face
        layout, loadable by `tokenizers` and transformers.AutoTokenizer); returns the paths."""
        converted = PretrainedTokenizer(self.to_hf_json(), self.hf_tokenizer_config(), source="BPETokenizer")
        return converted.save_pretrained(directory)


# minifm's chat format (minifm/tokenizer/chat.py) in Jinja: <|role|>content<|end|> per message.
MINIFM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('messages[' ~ loop.index0 ~ '] has role ' ~ message['role'] ~ '; expected system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
