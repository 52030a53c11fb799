"""Real tokenizers: read a Hugging Face tokenizer.json (or a GGUF file) and give the ids `tokenizers` gives.

    tok = minifm.tokenizer.from_pretrained(path)   # a directory with tokenizer.json, the file
                                                   # itself, a .gguf file, or a short model name
    tok.encode("Hello world")          -> ids, special tokens added as the file's post-processor says
    tok.decode(ids)                    -> text
    tok.apply_chat_template(messages, add_generation_prompt=True)  -> ids of the model's chat format
    tok.save_pretrained(directory)     -> tokenizer.json + tokenizer_config.json + special_tokens_map.json

The pipeline is that of Hugging Face `tokenizers` (minifm/tokenizer/tokenizer_json.py builds each
section): cut the text around added tokens, normalize, pre-tokenize into words, turn each word
into ids with the model, add the post-processor's special tokens. Two models are implemented:

* Byte-level BPE (GPT-2, SmolLM2, Llama-3 style): the words are encoded as UTF-8 bytes and merged
  by rank. The merges are mapped onto minifm's own byte+merge id space -- byte b is id b, the k-th
  merge makes id 256 + k -- so minifm's compiled encoder (minifm.kernels.bpe.make_encoder, the
  one BPETokenizer uses) does the merging; a permutation table then turns minifm ids into the
  file's ids. This works when each merged token has exactly one merge that makes it (true of
  vocabularies trained by `tokenizers`, such as GPT-2 and SmolLM2). Vocabularies converted from
  tiktoken (Llama-3) make some tokens by several merges; for them the merging runs in plain
  Python (`_merge_word`), the same algorithm on the file's ids, with a cache per word.
  `ignore_merges` (a word that is itself in the vocabulary is one token) is honoured.
* WordPiece (BERT): minifm/tokenizer/wordpiece.py.

Defaults follow Hugging Face: `encode(text)` adds the post-processor's special tokens
(add_special_tokens=True, as `tokenizers` and transformers do); added and special tokens written in
the text are always recognised as their ids (as in both); `apply_chat_template` encodes the
rendered text without adding special tokens (as transformers does).

GGUF files: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) is read with
minifm.pretrained.gguf.read_metadata and turned into a tokenizer.json: tokens and merges as the
model, CONTROL tokens as special added tokens and USER_DEFINED ones as plain added tokens (as
transformers' GGUF conversion does), the pre-tokenizer chosen by `tokenizer.ggml.pre`:
"gpt2" -> ByteLevel; "smollm" -> Digits(individual_digits) + ByteLevel, which is what SmolLM2's own
tokenizer.json and llama.cpp do (transformers' GGUF conversion leaves the Digits step out, so where
white space runs into a number it differs: "x  1" is x|ĠĠ|1 for the model, x|Ġ|Ġ|1 for it); "llama3"/"llama-bpe"/"llama-v3" -> Split(the Llama-3 regex) +
ByteLevel(use_regex=false). `save_pretrained` writes the result as a Hugging Face directory.

Deviations, all refused loudly rather than approximated: BPE with byte_fallback, dropout, a
continuing-subword prefix or end-of-word suffix, a vocabulary missing one of the 256 byte tokens,
Unigram/WordLevel models and the section types tokenizer_json.py does not list raise ValueError
naming the field and value. Decoding an id outside the vocabulary raises (`tokenizers` silently
skips it). The truncation and padding stored in a tokenizer.json are kept and written back by
save_pretrained but not applied by encode (transformers does the same); pass max_length= to
truncate and use pad_batch to pad. Lone surrogates in text become U+FFFD before encoding.
"""
from __future__ import annotations

import copy
import heapq
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_bytes, read_json_file
from minifm.kernels import bpe as bpe_kernels
from minifm.kernels._backend import compiled
from minifm.pretrained.gguf import read_metadata
from minifm.pretrained.registry import resolve_model_path
from minifm.tokenizer.byte_level import BYTE_TO_UNICODE, decode_byte_level, is_byte_level_text, token_text_to_bytes
from minifm.tokenizer.chat_template import render_chat_template
from minifm.tokenizer.pretokenize import encode_pieces_cached
from minifm.tokenizer.tokenizer_json import (
    AddedToken, AddedVocabulary, build_decoder, build_normalizer, build_post_processor, build_pre_tokenizer,
    parse_added_tokens, unsupported,
)
from minifm.tokenizer.wordpiece import WordPieceModel

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# The named special tokens transformers knows, in the order its special_tokens_map lists them.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BYTE_LEVEL_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_BYTE_LEVEL_PLAIN = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
# GGUF `tokenizer.ggml.pre` -> the tokenizer.json pre_tokenizer that splits text the same way.
GGUF_PRE_TOKENIZERS = {
    "gpt2": _BYTE_LEVEL_REGEX,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL_REGEX]},
    "llama3": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT_REGEX}, "behavior": "Isolated", "invert": False},
        _BYTE_LEVEL_PLAIN,
    ]},
}
GGUF_PRE_TOKENIZERS["llama-bpe"] = GGUF_PRE_TOKENIZERS["llama3"]
GGUF_PRE_TOKENIZERS["llama-v3"] = GGUF_PRE_TOKENIZERS["llama3"]
GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4   # llama.cpp token types


def _replace_surrogates(text: str) -> str:
    """`text` with each lone surrogate code point replaced by U+FFFD (it has no UTF-8 form)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# ------------------------------------------------------------------ byte-level BPE on a HF vocabulary
def _parse_merges(merges, source: str) -> list[tuple[str, str]]:
    """model.merges in either form ("a b" strings or [a, b] lists) -> [(a, b), ...]."""
    if not isinstance(merges, list):
        raise ValueError(f"{source}: model.merges must be a list, got {type(merges).__name__}")
    pairs = []
    for rank, merge in enumerate(merges):
        if isinstance(merge, str):
            parts = merge.split(" ")
        elif isinstance(merge, list):
            parts = merge
        else:
            parts = None
        if parts is None or len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
            raise ValueError(f"{source}: model.merges[{rank}] must be 'a b' or [a, b] with two non-empty tokens, got {merge!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def _merge_word(ids: list[int], merges: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
    """BPE on one word of the file's ids: join the adjacent pair of lowest rank (leftmost on a tie)
    until no pair has a merge. `merges` maps (left id, right id) -> (rank, new id)."""
    count = len(ids)
    if count < 2:
        return list(ids)
    symbols = list(ids)
    after = list(range(1, count)) + [-1]      # linked list over the positions still alive
    before = list(range(-1, count - 1))
    heap = []
    for position in range(count - 1):
        found = merges.get((symbols[position], symbols[position + 1]))
        if found is not None:
            heap.append((found[0], position, found[1]))
    heapq.heapify(heap)
    while heap:
        rank, position, new_id = heapq.heappop(heap)
        right = after[position]
        if symbols[position] < 0 or right < 0:
            continue
        current = merges.get((symbols[position], symbols[right]))
        if current is None or current[1] != new_id:
            continue                           # stale: this pair changed since it was pushed
        symbols[position] = new_id
        symbols[right] = -1
        after[position] = after[right]
        if after[right] >= 0:
            before[after[right]] = position
        if before[position] >= 0:
            found = merges.get((symbols[before[position]], new_id))
            if found is not None:
                heapq.heappush(heap, (found[0], before[position], found[1]))
        if after[position] >= 0:
            found = merges.get((new_id, symbols[after[position]]))
            if found is not None:
                heapq.heappush(heap, (found[0], position, found[1]))
    return [symbol for symbol in symbols if symbol >= 0]


def _characters_with_bytes(byte_values: Iterable[int]) -> re.Pattern | None:
    """A pattern matching any character whose UTF-8 form holds one of `byte_values` (None if none can).

    An ASCII byte is its own character; a lead byte C2-F4 starts a known range of code points;
    C0, C1 and F5-FF never occur in UTF-8. (Continuation bytes 80-BF are handled by the caller.)
    """
    ranges = []
    for byte in byte_values:
        if byte < 0x80:
            ranges.append((byte, byte))
        elif 0xC2 <= byte <= 0xDF:
            ranges.append(((byte - 0xC0) << 6, ((byte - 0xC0) << 6) + 0x3F))
        elif 0xE0 <= byte <= 0xEF:
            ranges.append(((byte - 0xE0) << 12, ((byte - 0xE0) << 12) + 0xFFF))
        elif 0xF0 <= byte <= 0xF4:
            ranges.append(((byte - 0xF0) << 18, min(((byte - 0xF0) << 18) + 0x3FFFF, 0x10FFFF)))
    if not ranges:
        return None
    return re.compile("[" + "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in ranges) + "]")


class ByteLevelBPEModel:
    """A byte-level BPE "model" section: {token: id} vocabulary in GPT-2 spelling plus ranked merges."""

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], ignore_merges: bool = False,
                 unk_token: str | None = None, source: str = "tokenizer.json"):
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.ignore_merges = ignore_merges
        self.unk_token = unk_token
        self._tokens: dict[int, str] = {token_id: token for token, token_id in self.vocab.items()}

        # A byte whose token the vocabulary lacks is dropped from the word before merging, as
        # `tokenizers` does without an unk_token (SmolLM2 lacks six control characters, the lead
        # bytes F1 and F2, and C0, C1, F5-FF that UTF-8 never uses). Words holding a character with
        # such a byte go through the Python path, which drops it; minifm's encoder takes the rest.
        missing = [byte for byte in range(256) if BYTE_TO_UNICODE[byte] not in self.vocab]
        if missing and unk_token is not None:
            raise ValueError(
                f"{source}: model.unk_token = {unk_token!r} with {len(missing)} byte tokens missing from model.vocab "
                f"(first: {[BYTE_TO_UNICODE[b] for b in missing[:8]]}) is not supported"
            )
        self._byte_ids = np.array([self.vocab.get(BYTE_TO_UNICODE[byte], -1) for byte in range(256)], dtype=np.int64)
        self._rare_chars = _characters_with_bytes(missing)      # None when no text can hold a missing byte
        self._all_python = any(0x80 <= byte < 0xC0 for byte in missing)   # a continuation byte: every word

        # (left id, right id) -> (rank, new id); a pair listed twice keeps its last rank, as in `tokenizers`.
        self._merge_map: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (left, right) in enumerate(self.merges):
            for token in (left, right, left + right):
                if token not in self.vocab:
                    raise ValueError(f"{source}: model.merges[{rank}] = {left!r} {right!r}: {token!r} is not in model.vocab")
            self._merge_map[(self.vocab[left], self.vocab[right])] = (rank, self.vocab[left + right])

        self._encoder = None          # minifm's encoder, when the merges map onto its id space
        self._permutation = None      # minifm id -> file id
        self._build_minifm_merges()
        self._cache: dict[str, list[int]] = {}
        self._direct: dict[str, int] | None = None   # text -> id of whole-word tokens (ignore_merges)

    def _build_minifm_merges(self) -> None:
        """Map the merges onto ids 256 + k when every merged token has exactly one merge making it."""
        if self._all_python:
            return
        byte_ids = set(self._byte_ids.tolist()) - {-1}
        producible = set(byte_ids)
        usable: dict[tuple[int, int], tuple[int, int]] = {}
        changed = True
        while changed:   # merges may use tokens made by later merges: repeat until nothing new
            changed = False
            for pair, (rank, new_id) in self._merge_map.items():
                if pair not in usable and pair[0] in producible and pair[1] in producible:
                    usable[pair] = (rank, new_id)
                    producible.add(new_id)
                    changed = True
        ordered = sorted(usable.items(), key=lambda item: item[1][0])   # by rank
        producers: dict[int, int] = {}
        for k, (pair, (rank, new_id)) in enumerate(ordered):
            if new_id in producers or new_id in byte_ids:
                return    # a token made by two merges (or a byte made by a merge): use the Python path
            producers[new_id] = k
        minifm_id = {file_id: byte for byte, file_id in enumerate(self._byte_ids.tolist()) if file_id >= 0}
        for file_id, k in producers.items():
            minifm_id[file_id] = 256 + k
        merges = np.array([[minifm_id[left], minifm_id[right]] for (left, right), _ in ordered],
                          dtype=np.int32).reshape(-1, 2)
        self._permutation = np.concatenate(
            [self._byte_ids, np.array([new_id for _, (_, new_id) in ordered], dtype=np.int64)]
        )
        self._minifm_merges = merges

    @property
    def uses_minifm_encoder(self) -> bool:
        """True when minifm's BPE encoder (compiled or its reference) does the merging."""
        return self._permutation is not None

    def _minifm_encoder(self):
        path = "reference" if compiled("bpe") is None else "compiled"
        if self._encoder is None or self._encoder[0] != path:
            self._encoder = (path, bpe_kernels.make_encoder(self._minifm_merges, 256))
        return self._encoder[1]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokens.get(token_id)

    def _direct_ids(self) -> dict[str, int]:
        """{text: id} of every vocabulary token whose bytes are UTF-8 text (for ignore_merges)."""
        if self._direct is None:
            direct = {}
            for token, token_id in self.vocab.items():
                if is_byte_level_text(token):
                    try:
                        direct[token_text_to_bytes(token).decode("utf-8")] = token_id
                    except UnicodeDecodeError:
                        pass
            self._direct = direct
        return self._direct

    def _encode_word(self, word: str) -> list[int]:
        """Ids of one word (no cache)."""
        if self.ignore_merges:
            direct = self._direct_ids().get(word)
            if direct is not None:
                return [direct]
        if self._permutation is not None and (self._rare_chars is None or not self._rare_chars.search(word)):
            ids = np.asarray(self._minifm_encoder().encode_pieces([word]), dtype=np.int64)
            return self._permutation[ids].tolist()
        start = self._byte_ids[np.frombuffer(word.encode("utf-8"), dtype=np.uint8)]
        return _merge_word(start[start >= 0].tolist(), self._merge_map)

    def encode_words(self, words: list[str]) -> list[int]:
        """Concatenated ids of `words` (pre-tokenized, valid UTF-8 text)."""
        all_common = self._rare_chars is None or not self._rare_chars.search("".join(words))
        if self._permutation is not None and not self.ignore_merges and all_common:
            ids = np.asarray(self._minifm_encoder().encode_pieces(words), dtype=np.int64)
            return self._permutation[ids].tolist()
        return encode_pieces_cached(words, self._cache, self._encode_word)

    def to_json(self) -> dict:
        """The tokenizer.json "model" section (merges in the [a, b] list form)."""
        return {
            "type": "BPE", "dropout": None, "unk_token": self.unk_token, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": self.ignore_merges,
            "vocab": dict(sorted(self.vocab.items(), key=lambda item: item[1])),
            "merges": [[left, right] for left, right in self.merges],
        }


def _check_vocab(vocab, source: str) -> dict[str, int]:
    if not isinstance(vocab, dict):
        raise ValueError(f"{source}: model.vocab must be an object {{token: id}}, got {type(vocab).__name__}")
    seen: dict[int, str] = {}
    for token, token_id in vocab.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise ValueError(f"{source}: model.vocab[{token!r}] must be an int id >= 0, got {token_id!r}")
        if token_id in seen:
            raise ValueError(f"{source}: model.vocab gives id {token_id} to both {seen[token_id]!r} and {token!r}")
        seen[token_id] = token
    return vocab


def _build_model(spec, source: str, byte_level: bool):
    """The "model" section -> ByteLevelBPEModel or WordPieceModel."""
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: model must be an object, got {type(spec).__name__}")
    kind = spec.get("type", "BPE" if "merges" in spec else None)
    if kind == "BPE":
        for key, allowed in (("dropout", (None,)), ("byte_fallback", (False, None)),
                             ("continuing_subword_prefix", (None, "")), ("end_of_word_suffix", (None, ""))):
            if spec.get(key) not in allowed:
                raise unsupported(source, f"model.{key}", spec[key], " or ".join(map(json.dumps, allowed)))
        if not byte_level:
            raise ValueError(
                f"{source}: model.type = 'BPE' needs a ByteLevel pre_tokenizer (byte-level BPE); this file "
                f"has none (a SentencePiece-style BPE with Metaspace is not supported)"
            )
        ignore_merges = spec.get("ignore_merges", False)
        if not isinstance(ignore_merges, bool):
            raise ValueError(f"{source}: model.ignore_merges must be true or false, got {ignore_merges!r}")
        return ByteLevelBPEModel(
            _check_vocab(spec.get("vocab"), source), _parse_merges(spec.get("merges"), source),
            ignore_merges=ignore_merges, unk_token=spec.get("unk_token"), source=source,
        )
    if kind == "WordPiece":
        if byte_level:
            raise ValueError(f"{source}: model.type = 'WordPiece' with a ByteLevel pre_tokenizer is not supported")
        prefix = spec.get("continuing_subword_prefix", "##")
        max_chars = spec.get("max_input_chars_per_word", 100)
        if not isinstance(prefix, str) or isinstance(max_chars, bool) or not isinstance(max_chars, int):
            raise ValueError(f"{source}: model.continuing_subword_prefix must be str and max_input_chars_per_word int")
        return WordPieceModel(_check_vocab(spec.get("vocab"), source), unk_token=spec.get("unk_token", "[UNK]"),
                              continuing_subword_prefix=prefix, max_input_chars_per_word=max_chars, source=source)
    raise unsupported(source, "model.type", kind, "BPE (byte-level), WordPiece")


# ------------------------------------------------------------------ the tokenizer
def _token_text(value, source: str, key: str) -> str | None:
    """A special token in tokenizer_config.json: a string, or an AddedToken object with "content"."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{source}: {key} must be a string or an object with 'content', got {value!r:.80}")


class PretrainedTokenizer:
    """A tokenizer.json pipeline (byte-level BPE or WordPiece) plus its tokenizer_config settings.

    Build it with `from_pretrained`; `PretrainedTokenizer(data, config)` takes the parsed
    tokenizer.json and the tokenizer_config.json dict (bos_token, eos_token, pad_token, unk_token,
    chat_template, model_max_length, ...).
    """

    def __init__(self, data: dict, config: dict | None = None, source: str = TOKENIZER_FILE):
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if "model" not in data:
            raise ValueError(f"{source}: has no 'model' section (keys: {sorted(data)})")
        config = dict(config or {})
        self.source = source
        self._data = copy.deepcopy({key: data.get(key) for key in (
            "truncation", "padding", "normalizer", "pre_tokenizer", "post_processor", "decoder")})
        for key in ("truncation", "padding"):
            if self._data[key] is not None and not isinstance(self._data[key], dict):
                raise ValueError(f"{source}: {key} must be an object or null, got {self._data[key]!r:.80}")

        self._normalizer = build_normalizer(data.get("normalizer"), source)
        self._pre_tokenizer = build_pre_tokenizer(data.get("pre_tokenizer"), source)
        self._post_processor = build_post_processor(data.get("post_processor"), source)
        self._decoder = build_decoder(data.get("decoder"), source)
        self.model = _build_model(data["model"], source, self._pre_tokenizer.byte_level)

        self._added_tokens = self._check_added_ids(parse_added_tokens(data.get("added_tokens"), source), source)
        self._added = AddedVocabulary(self._added_tokens, self._normalizer)
        self._added_by_id = {token.id: token for token in self._added_tokens}
        self._added_by_content = {token.content: token.id for token in self._added_tokens}
        self._special_contents = {token.content for token in self._added_tokens if token.special}
        self._added_decoded = {
            token.id: (self._normalizer(token.content) if token.normalized and self._normalizer else token.content)
            for token in self._added_tokens
        }

        self._named: dict[str, str] = {}
        for name in SPECIAL_TOKEN_NAMES:
            text = _token_text(config.get(name), f"{source} (tokenizer config)", name)
            if text is not None:
                self._named[name] = text
        template = config.get("chat_template")
        if isinstance(template, list):   # [{"name": "default", "template": ...}, ...]
            named = {item.get("name"): item.get("template") for item in template if isinstance(item, dict)}
            template = named.get("default")
        if template is not None and not isinstance(template, str):
            raise ValueError(f"{source} (tokenizer config): chat_template must be a string, got {type(template).__name__}")
        self.chat_template: str | None = template
        max_length = config.get("model_max_length")
        self.model_max_length: int | None = (
            int(max_length) if isinstance(max_length, (int, float)) and not isinstance(max_length, bool)
            and 0 < max_length < 1e15 else None
        )

    def _check_added_ids(self, tokens: list[AddedToken], source: str) -> list[AddedToken]:
        """Refuse added-token ids that `tokenizers` would renumber (it ignores the ids in the file)."""
        seen: set[str] = set()
        assigned: list[int] = []
        base = self.model.vocab_size
        for index, token in enumerate(tokens):
            if token.content in seen:
                raise ValueError(f"{source}: added_tokens[{index}] repeats the content {token.content!r}")
            model_id = self.model.token_to_id(token.content)
            if model_id is not None:
                expected = model_id                    # a token the vocabulary has keeps its id
            elif assigned and max(assigned) >= base:
                expected = max(assigned) + 1           # otherwise the next id after the model's
            else:
                expected = base
            if token.id != expected:
                raise ValueError(
                    f"{source}: added_tokens[{index}] {token.content!r} has id {token.id}, but `tokenizers` would "
                    f"give it id {expected} (ids of added tokens follow the model vocabulary in order)"
                )
            seen.add(token.content)
            assigned.append(token.id)
        return tokens

    # ------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens (`tokenizers`' get_vocab_size(with_added_tokens=True))."""
        overlapping = sum(1 for token in self._added_tokens if self.model.token_to_id(token.content) is not None)
        return self.model.vocab_size + len(self._added_tokens) - overlapping

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"PretrainedTokenizer({type(self.model).__name__}, vocab_size={self.vocab_size}, "
                f"added_tokens={len(self._added_tokens)}, source={self.source!r})")

    def get_vocab(self) -> dict[str, int]:
        """{token: id} for the model vocabulary and the added tokens."""
        vocab = dict(self.model.vocab)
        vocab.update(self._added_by_content)
        return vocab

    def token_to_id(self, token: str) -> int | None:
        """The id of `token` (an added token's content or a vocabulary spelling); None when absent."""
        if token in self._added_by_content:
            return self._added_by_content[token]
        return self.model.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The spelling of `token_id` (an added token's content first); None when absent."""
        if token_id in self._added_decoded:
            return self._added_decoded[token_id]
        return self.model.id_to_token(token_id)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes `token_id` adds to decoded text (a byte-level tokenizer's token on its own, as its
        ByteLevel decoder reads it: stand-in characters back to bytes, other text as UTF-8).
        ValueError for an id outside the vocabulary or a tokenizer without a ByteLevel decoder."""
        if self._decoder is not decode_byte_level:
            raise ValueError(f"{self.source}: token_bytes needs a byte-level tokenizer (a ByteLevel decoder); this "
                             f"one is {type(self.model).__name__}, whose tokens are not byte strings")
        token = self.id_to_token(int(token_id))
        if token is None:
            raise ValueError(f"token id {token_id} is not in the vocabulary (size {self.vocab_size})")
        if is_byte_level_text(token):
            return token_text_to_bytes(token)
        return token.encode("utf-8", "surrogatepass")

    @property
    def added_tokens(self) -> list[AddedToken]:
        return list(self._added_tokens)

    @property
    def special_tokens(self) -> dict[str, int]:
        """{content: id} of the added tokens marked special."""
        return {token.content: token.id for token in self._added_tokens if token.special}

    def _named_token(self, name: str) -> str | None:
        return self._named.get(name)

    def _named_id(self, name: str) -> int | None:
        text = self._named.get(name)
        return None if text is None else self.token_to_id(text)

    bos_token = property(lambda self: self._named_token("bos_token"), doc="The beginning-of-sequence token (or None).")
    eos_token = property(lambda self: self._named_token("eos_token"), doc="The end-of-sequence token (or None).")
    pad_token = property(lambda self: self._named_token("pad_token"), doc="The padding token (or None).")
    unk_token = property(lambda self: self._named_token("unk_token"), doc="The unknown token (or None).")
    bos_token_id = property(lambda self: self._named_id("bos_token"))
    eos_token_id = property(lambda self: self._named_id("eos_token"))
    pad_token_id = property(lambda self: self._named_id("pad_token"))
    unk_token_id = property(lambda self: self._named_id("unk_token"))

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """{"bos_token": "<s>", ...}: the named special tokens known from the tokenizer config."""
        return dict(self._named)

    # ------------------------------------------------------------ encoding
    def _encode_sequence(self, text: str) -> list[int]:
        """Ids of one text, without the post-processor's special tokens."""
        ids: list[int] = []
        for piece, token_id in self._added.split(_replace_surrogates(text)):
            if token_id is not None:
                ids.append(token_id)
            else:
                ids.extend(self.model.encode_words(self._pre_tokenizer(piece)))
        return ids

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many ids the post-processor adds to one sequence (or a pair)."""
        return self._post_processor.num_special_tokens(pair)

    def _truncate(self, ids: list[int], pair_ids: list[int] | None, max_length: int, add_special_tokens: bool):
        """`tokenizers`' LongestFirst truncation from the right, leaving room for special tokens."""
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 0:
            raise ValueError(f"max_length must be an int >= 0, got {max_length!r}")
        room = max_length
        if add_special_tokens:
            room -= self.num_special_tokens_to_add(pair_ids is not None)
            if room < 0:
                raise ValueError(
                    f"max_length={max_length} leaves no room: the template adds "
                    f"{self.num_special_tokens_to_add(pair_ids is not None)} special tokens"
                )
        if pair_ids is None:
            return ids[:room], None
        if len(ids) + len(pair_ids) <= room:
            return ids, pair_ids
        short, long = sorted((len(ids), len(pair_ids)))
        long = short if short > room else max(short, room - short)
        if short + long > room:
            short = room // 2
            long = short + room % 2
        if len(ids) <= len(pair_ids):
            return ids[:short], pair_ids[:long]
        return ids[:long], pair_ids[:short]

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               max_length: int | None = None) -> list[int]:
        """Ids of `text` (and `text_pair`), as `tokenizers`' Tokenizer.encode(...).ids.

        add_special_tokens=True (the Hugging Face default) wraps the ids in the post-processor's
        template ([CLS] A [SEP] for BERT; nothing for GPT-2 or SmolLM2). Added and special tokens
        written in the text are always their own ids. max_length truncates from the right (the
        longer sequence of a pair first), keeping room for the template's special tokens.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if text_pair is not None and not isinstance(text_pair, str):
            raise TypeError(f"text_pair must be str or None, got {type(text_pair).__name__}")
        ids = self._encode_sequence(text)
        pair_ids = None if text_pair is None else self._encode_sequence(text_pair)
        if max_length is not None:
            ids, pair_ids = self._truncate(ids, pair_ids, max_length, add_special_tokens)
        return self._post_processor.process(ids, pair_ids, add_special_tokens)

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = True,
                     max_length: int | None = None) -> list[list[int]]:
        """[encode(text, ...) for text in texts]; pad the result with pad_batch."""
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of str, got a single str (use encode)")
        batch = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] must be str, got {type(text).__name__}")
            batch.append(self.encode(text, add_special_tokens=add_special_tokens, max_length=max_length))
        return batch

    def pad_batch(self, sequences: Sequence[Sequence[int]], padding_side: str = "right") -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both int64 (batch, longest): sequences padded with pad_token_id;
        the mask is 1 on real tokens and 0 on padding."""
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        pad_id = self.pad_token_id
        if pad_id is None:
            raise ValueError("this tokenizer has no pad_token (set one in tokenizer_config.json) to pad with")
        longest = max((len(sequence) for sequence in sequences), default=0)
        input_ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(sequences), longest), dtype=np.int64)
        for row, sequence in enumerate(sequences):
            n = len(sequence)
            columns = slice(0, n) if padding_side == "right" else slice(longest - n, longest)
            input_ids[row, columns] = sequence
            attention_mask[row, columns] = 1
        return input_ids, attention_mask

    # ------------------------------------------------------------ decoding
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids` through the file's decoder (`tokenizers`' decode); skip_special_tokens drops
        the tokens spelled as a special added token. An id with no token raises ValueError."""
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        tokens: list[str] = []
        for position, token_id in enumerate(ids):
            if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
                raise TypeError(f"ids[{position}] must be an int, got {type(token_id).__name__}")
            token_id = int(token_id)
            token = self.id_to_token(token_id)
            if token is None:
                raise ValueError(f"ids[{position}] = {token_id} is not in the vocabulary (size {self.vocab_size})")
            if skip_special_tokens and token in self._special_contents:
                continue   # as `tokenizers`, by spelling: a normalized special token's new spelling is kept
            tokens.append(token)
        return self._decoder(tokens)

    # ------------------------------------------------------------ chat
    def apply_chat_template(self, messages, add_generation_prompt: bool = False, tokenize: bool = True,
                            chat_template: str | None = None, **variables):
        """The conversation in the model's chat template: ids (tokenize=True) or the text.

        The template sees `messages`, `add_generation_prompt`, the named special tokens
        (bos_token, eos_token, ...) and `variables`; the text is encoded without adding special
        tokens, as transformers does.
        """
        template = chat_template if chat_template is not None else self.chat_template
        if template is None:
            raise ValueError(f"{self.source} has no chat_template (and none was passed as chat_template=)")
        text = render_chat_template(template, messages, add_generation_prompt=add_generation_prompt,
                                    **{**self._named, **variables})
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ------------------------------------------------------------ files
    def to_json(self) -> dict:
        """The tokenizer.json content."""
        return {
            "version": "1.0",
            "truncation": copy.deepcopy(self._data["truncation"]),
            "padding": copy.deepcopy(self._data["padding"]),
            "added_tokens": [token.to_json() for token in self._added_tokens],
            "normalizer": copy.deepcopy(self._data["normalizer"]),
            "pre_tokenizer": copy.deepcopy(self._data["pre_tokenizer"]),
            "post_processor": copy.deepcopy(self._data["post_processor"]),
            "decoder": copy.deepcopy(self._data["decoder"]),
            "model": self.model.to_json(),
        }

    def tokenizer_config(self) -> dict:
        """The tokenizer_config.json content (loads as transformers' PreTrainedTokenizerFast)."""
        config: dict = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
        config.update(self._named)
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        config["added_tokens_decoder"] = {
            str(token.id): {key: value for key, value in token.to_json().items() if key != "id"}
            for token in self._added_tokens
        }
        return config

    def save_pretrained(self, directory: str | os.PathLike) -> list[Path]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `directory`
        (created if needed; each file written atomically). Returns the paths written."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"directory {str(directory)!r} exists and is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            TOKENIZER_FILE: self.to_json(),
            CONFIG_FILE: self.tokenizer_config(),
            SPECIAL_TOKENS_MAP_FILE: dict(self._named),
        }
        written = []
        for name, content in files.items():
            text = json.dumps(content, ensure_ascii=False, indent=2 if name != TOKENIZER_FILE else None)
            atomic_write_bytes(directory / name, (text + "\n").encode("utf-8"))
            written.append(directory / name)
        return written


# ------------------------------------------------------------------ reading files
def _from_directory(directory: Path) -> PretrainedTokenizer:
    tokenizer_file = directory / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        present = sorted(p.name for p in directory.iterdir())[:12]
        raise FileNotFoundError(
            f"{directory} has no {TOKENIZER_FILE} (files there: {present}); minifm reads tokenizer.json "
            f"directories and .gguf files"
        )
    config: dict = {}
    special_map = directory / SPECIAL_TOKENS_MAP_FILE
    if special_map.is_file():
        config.update({k: v for k, v in read_json_file(special_map).items() if k in SPECIAL_TOKEN_NAMES})
    config_file = directory / CONFIG_FILE
    if config_file.is_file():
        config.update({k: v for k, v in read_json_file(config_file).items() if v is not None})
    template_file = directory / CHAT_TEMPLATE_FILE
    if template_file.is_file():
        config["chat_template"] = template_file.read_text(encoding="utf-8")
    return PretrainedTokenizer(read_json_file(tokenizer_file), config, source=str(tokenizer_file))


def gguf_to_tokenizer_json(metadata: dict, source: str = "GGUF file") -> tuple[dict, dict]:
    """(tokenizer.json content, tokenizer_config content) from a GGUF file's metadata."""
    def get(key, types, default=...):
        if key not in metadata:
            if default is ...:
                raise ValueError(f"{source}: metadata has no {key!r}")
            return default
        value = metadata[key]
        if not isinstance(value, types):
            raise ValueError(f"{source}: metadata {key!r} must be {types}, got {type(value).__name__}")
        return value

    model = get("tokenizer.ggml.model", str)
    if model != "gpt2":
        raise unsupported(source, "tokenizer.ggml.model", model, "'gpt2' (byte-level BPE)")
    pre = get("tokenizer.ggml.pre", str, "gpt2")
    if pre not in GGUF_PRE_TOKENIZERS:
        raise unsupported(source, "tokenizer.ggml.pre", pre, sorted(GGUF_PRE_TOKENIZERS))
    if get("tokenizer.ggml.add_space_prefix", bool, False):
        raise unsupported(source, "tokenizer.ggml.add_space_prefix", True, "false")
    tokens = get("tokenizer.ggml.tokens", list)
    merges = get("tokenizer.ggml.merges", list)
    types = get("tokenizer.ggml.token_type", list, [1] * len(tokens))
    if len(types) != len(tokens):
        raise ValueError(f"{source}: {len(types)} token types for {len(tokens)} tokens")

    vocab: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        vocab.setdefault(token, token_id)
    added = []
    for token_id, (token, token_type) in enumerate(zip(tokens, types)):
        # CONTROL tokens are special; one spelled outside the byte alphabet is a llama.cpp mislabel
        # that transformers skips, and so does minifm.
        if token_type == GGUF_CONTROL and is_byte_level_text(token):
            added.append(AddedToken(token_id, token, special=True, normalized=False).to_json())
        elif token_type == GGUF_USER_DEFINED:
            added.append(AddedToken(token_id, token, special=False, normalized=False).to_json())

    def token_of(key: str) -> str | None:
        token_id = metadata.get(key)
        if isinstance(token_id, int) and 0 <= token_id < len(tokens):
            return tokens[token_id]
        return None

    config = {name: token_of(f"tokenizer.ggml.{key}") for name, key in (
        ("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
        ("pad_token", "padding_token_id"))}
    config = {name: token for name, token in config.items() if token is not None}
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str):
        config["chat_template"] = template
    architecture = metadata.get("general.architecture")
    context = metadata.get(f"{architecture}.context_length")
    if isinstance(context, int) and context > 0:
        config["model_max_length"] = context

    # add_bos_token / add_eos_token: the post-processor puts them around every encoded text.
    single: list = []
    specials = {}
    for flag, name, where in (("add_bos_token", "bos_token", 0), ("add_eos_token", "eos_token", 1)):
        if metadata.get(f"tokenizer.ggml.{flag}") is True and name in config:
            token = config[name]
            specials[token] = {"id": token, "ids": [vocab[token]], "tokens": [token]}
            piece = {"SpecialToken": {"id": token, "type_id": 0}}
            single = [piece] + single if where == 0 else single + [piece]
    if specials:
        sequence = {"Sequence": {"id": "A", "type_id": 0}}
        bos = [item for item in single if item["SpecialToken"]["id"] == config.get("bos_token")]
        eos = [item for item in single if item["SpecialToken"]["id"] == config.get("eos_token")]
        post_processor = {
            "type": "TemplateProcessing", "single": bos + [sequence] + eos,
            "pair": bos + [sequence] + eos + bos + [{"Sequence": {"id": "B", "type_id": 1}}] + eos,
            "special_tokens": specials,
        }
    else:
        post_processor = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}

    data = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": copy.deepcopy(GGUF_PRE_TOKENIZERS[pre]),
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    return data, config


def from_pretrained(path: str | os.PathLike) -> PretrainedTokenizer:
    """A tokenizer from a directory holding tokenizer.json (+ tokenizer_config.json,
    special_tokens_map.json, chat_template.jinja), a tokenizer.json file, a .gguf file, or a
    short model name of minifm.pretrained.registry ("smollm2-135m-instruct", "all-minilm-l6-v2")."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    resolved = resolve_model_path(path)   # FileNotFoundError naming the path (or the pip line)
    if resolved.is_dir():
        return _from_directory(resolved)
    if resolved.suffix.lower() == ".gguf":
        data, config = gguf_to_tokenizer_json(read_metadata(resolved), source=str(resolved))
        return PretrainedTokenizer(data, config, source=str(resolved))
    return PretrainedTokenizer(read_json_file(resolved), {}, source=str(resolved))
