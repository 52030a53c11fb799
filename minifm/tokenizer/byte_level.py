"""GPT-2's byte <-> unicode table: how byte-level BPE vocabularies spell bytes as printable text.

A byte-level BPE works on the 256 byte values, but tokenizer.json files (and GGUF files with
`tokenizer.ggml.model = "gpt2"`) store tokens as JSON strings. GPT-2 therefore gives every byte a
printable stand-in character:

  * the 188 bytes that are already printable and not a space in Latin-1 -- '!'..'~' (0x21-0x7E),
    '¡'..'¬' (0xA1-0xAC) and '®'..'ÿ' (0xAE-0xFF) -- stand for themselves;
  * the other 68 bytes (controls, space, 0x7F-0xA0, the soft hyphen 0xAD) get the characters
    U+0100, U+0101, ... in increasing byte order. So the space 0x20 is 'Ġ' (U+0120) and the
    newline 0x0A is 'Ċ' (U+010A), the letters familiar from GPT-2 vocabularies.

A token's text is its bytes, each replaced by its stand-in: b" the" -> "Ġthe". This module is the one
place in minifm that holds the table; minifm's own BPETokenizer uses it when it writes a Hugging Face
tokenizer.json, and the pretrained tokenizers use it to read one.

`decode_byte_level` is the ByteLevel *decoder* of Hugging Face `tokenizers`: each token's characters
map back to bytes; a token holding a character outside the table (an added token such as "<|é|>",
say) contributes its own UTF-8 bytes instead; the joined bytes are decoded as UTF-8 with invalid
sequences replaced by U+FFFD.
"""
from __future__ import annotations

from collections.abc import Iterable

NUM_BYTES = 256


def _build_byte_to_unicode() -> tuple[str, ...]:
    """The stand-in character of every byte value, indexed by the byte (256 one-char strings)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    stand_in: dict[int, int] = {byte: byte for byte in printable}
    next_free = NUM_BYTES  # U+0100 onwards, handed out in byte order
    for byte in range(NUM_BYTES):
        if byte not in stand_in:
            stand_in[byte] = next_free
            next_free += 1
    return tuple(chr(stand_in[byte]) for byte in range(NUM_BYTES))


BYTE_TO_UNICODE: tuple[str, ...] = _build_byte_to_unicode()       # byte value -> stand-in char
UNICODE_TO_BYTE: dict[str, int] = {char: byte for byte, char in enumerate(BYTE_TO_UNICODE)}
ALPHABET: frozenset[str] = frozenset(BYTE_TO_UNICODE)

# str.translate tables: bytes decoded as Latin-1 (one char per byte) -> stand-ins, and back.
_TO_STAND_IN = {byte: char for byte, char in enumerate(BYTE_TO_UNICODE)}
_FROM_STAND_IN = {ord(char): chr(byte) for byte, char in enumerate(BYTE_TO_UNICODE)}


def bytes_to_token_text(data: bytes) -> str:
    """The vocabulary spelling of `data`: b" the" -> "Ġthe"."""
    return data.decode("latin-1").translate(_TO_STAND_IN)


def is_byte_level_text(text: str) -> bool:
    """True when every character of `text` is one of the 256 stand-ins."""
    return all(char in UNICODE_TO_BYTE for char in text)


def token_text_to_bytes(text: str) -> bytes:
    """The bytes a vocabulary spelling stands for: "Ġthe" -> b" the".

    Raises ValueError naming the first character that is not a stand-in.
    """
    for char in text:
        if char not in UNICODE_TO_BYTE:
            raise ValueError(
                f"token {text!r} holds {char!r} (U+{ord(char):04X}), which is not one of the 256 "
                f"byte-level stand-in characters"
            )
    return text.translate(_FROM_STAND_IN).encode("latin-1")


def decode_byte_level(tokens: Iterable[str]) -> str:
    """Hugging Face's ByteLevel decoder: token spellings -> text (see the module docstring)."""
    parts: list[bytes] = []
    for token in tokens:
        if is_byte_level_text(token):
            parts.append(token.translate(_FROM_STAND_IN).encode("latin-1"))
        else:
            parts.append(token.encode("utf-8", "surrogatepass"))
    return b"".join(parts).decode("utf-8", errors="replace")
