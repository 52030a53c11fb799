"""Where text comes from: user files and folders, TRL-style JSONL, the Python standard library.

    load_texts(path)             a .txt/.md file, or every .txt/.md under a folder, as documents
    split_text(text)             plain text -> documents of a trainable size (blank lines, then size)
    load_jsonl(path)             one JSON object per line, validated against TRL's dataset fields
    read_jsonl_records(path)     the same with line numbers and formats (what sft/dpo --data read)
    hold_out(items, fraction)    a seeded held-out split
    python_stdlib_corpus(...)    the running interpreter's standard-library .py files (real code)
    load_corpus(name_or_path)    "tinyworld" (default), "python-stdlib", or a path

Plain text becomes documents by its blank lines: a file is cut into paragraphs (blocks of non-blank
lines; a line of only whitespace is blank), consecutive paragraphs are merged until a document
holds TARGET_DOCUMENT_CHARS characters, and no document is longer than MAX_DOCUMENT_CHARS: a longer
paragraph is cut at line ends, a longer line before a word. So a whole book in one file and a
folder of short notes both give documents of about 2,000-4,000 characters, which curation can
judge one by one and a held-out split can choose among. Nothing is lost but the blank lines:
the documents are consecutive slices of the text with its blank lines normalised to one.
A folder contributes every .txt/.md file under it (recursive, sorted by path, hidden files and
folders skipped), each file split on its own; `log`, if given, receives one line saying how.

JSONL records must have exactly one of TRL's shapes (extra keys are allowed):
    language modelling   {"text": str}            (one record = one document, never split)
    prompt-completion    {"prompt": str, "completion": str}
    conversational       {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
    preference           {"prompt": str, "chosen": str, "rejected": str}
TRL's conversational variants of prompt/completion and preference, lists of messages instead
of strings, are accepted too, and so is its implicit prompt: {"chosen": [...], "rejected": [...]}
without "prompt", the prompt being the leading messages both conversations share
(`preference_parts`). All fields of one record are strings or all are message lists; a
completion / chosen / rejected must hold text, and as messages it starts with the assistant's
turn; a "messages" conversation must hold an assistant turn.

`read_jsonl_records(path, formats)` reads and checks every line before returning any (a training
run never starts on half-read data): when lines are malformed, one DataFormatError names the file,
the first bad line's 1-based number and field, and lists the other bad lines. `hold_out` draws a
seeded held-out split. A line that is not UTF-8 is an error naming it; a path that holds no text
(an empty file, a folder without .txt/.md files, a JSONL without records) is a ValueError naming it.
"""
from __future__ import annotations

import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minifm.data import tinyworld

TEXT_SUFFIXES = (".txt", ".md")
ROLES = ("system", "user", "assistant")
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3",
                    "tkinter", "turtledemo", "ensurepip", "idlelib"}


class DataFormatError(ValueError):
    """A malformed record: the message names the file, line and field."""


def read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UnicodeDecodeError(error.encoding, error.object, error.start, error.end,
                                 f"{error.reason} (in file {path})") from None


# ------------------------------------------------------------------ plain text -> documents
TARGET_DOCUMENT_CHARS = 2_000   # short paragraphs are merged until a document holds this many characters
MAX_DOCUMENT_CHARS = 4_000      # and no document holds more


def paragraphs(text: str) -> list[str]:
    """The blocks of non-blank lines of `text`, each line kept verbatim ("\r\n" and "\r" read as "\n");
    a line holding only whitespace is blank."""
    blocks, lines = [], []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.strip():
            lines.append(line)
        elif lines:
            blocks.append("\n".join(lines))
            lines = []
    if lines:
        blocks.append("\n".join(lines))
    return blocks


def normalise_blank_lines(text: str) -> str:
    """`text` with each run of blank lines made one empty line, and none at either end."""
    return "\n\n".join(paragraphs(text))


def cut_line(line: str, max_chars: int) -> list[str]:
    """`line` in pieces of at most max_chars characters, each cut before a word where one starts in
    reach (else inside the word); "".join(pieces) == line."""
    pieces, start = [], 0
    while len(line) - start > max_chars:
        limit = start + max_chars
        cut = next((i for i in range(limit, start, -1) if line[i - 1].isspace() and not line[i].isspace()), limit)
        pieces.append(line[start:cut])
        start = cut
    pieces.append(line[start:])
    return pieces


def text_units(paragraph: str, max_chars: int) -> list[tuple[str, str]]:
    """(joint, unit) pairs, the pieces a paragraph may be merged or cut into: the paragraph itself if it
    fits in max_chars, else its lines (joint "\n"), a line too long cut before a word (joint "")."""
    if len(paragraph) <= max_chars:
        return [("\n\n", paragraph)]
    units = []
    for line in paragraph.split("\n"):
        for i, piece in enumerate(cut_line(line, max_chars)):
            units.append(("\n" if i == 0 else "", piece))
    units[0] = ("\n\n", units[0][1])
    return units


def split_text(text: str, target_chars: int = TARGET_DOCUMENT_CHARS,
               max_chars: int = MAX_DOCUMENT_CHARS) -> list[str]:
    """Plain text as documents of a trainable size: split on blank lines, consecutive paragraphs merged
    (one blank line between them) while the document is shorter than target_chars and the next one
    fits, none longer than max_chars (a longer paragraph is cut at line ends, a longer line before a
    word). The documents are consecutive slices of normalise_blank_lines(text), in order."""
    if not 1 <= target_chars <= max_chars:
        raise ValueError(f"split_text: need 1 <= target_chars <= max_chars, got {target_chars} and {max_chars}")
    documents, current = [], ""
    for paragraph in paragraphs(text):
        for joint, unit in text_units(paragraph, max_chars):
            if current and (len(current) >= target_chars or len(current) + len(joint) + len(unit) > max_chars):
                documents.append(current)
                current = ""
            current = current + joint + unit if current else unit
    if current:
        documents.append(current)
    return documents


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def human_size(n_bytes: int) -> str:
    return f"{n_bytes:,} bytes" if n_bytes < 10_000 else f"{n_bytes / 1000:,.0f} KB"


def text_files(folder: Path) -> list[Path]:
    """Every .txt/.md file under `folder`, sorted by path, hidden files and folders skipped."""
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES and not any(
                part.startswith(".") for part in relative.parts):
            found.append(path)
    return sorted(found)


def load_texts(path: str | os.PathLike, log=None, target_chars: int = TARGET_DOCUMENT_CHARS,
               max_chars: int = MAX_DOCUMENT_CHARS) -> list[str]:
    """The documents of a .txt/.md file, or of every .txt/.md file under a folder (sorted by path, hidden
    ones skipped), each file cut by split_text; `log` (e.g. print) receives one line saying how."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load_texts: {path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise ValueError(f"load_texts: {path} is not a {'/'.join(TEXT_SUFFIXES)} file")
        files = [path]
    else:
        files = text_files(path)
        if not files:
            raise ValueError(f"load_texts: the folder {path} holds no {'/'.join(TEXT_SUFFIXES)} file "
                             "(hidden files and folders are skipped)")
    documents, n_bytes, n_paragraphs, n_cut, n_empty = [], 0, 0, 0, 0
    for file in files:
        text = read_text_file(file)
        blocks = paragraphs(text)
        n_bytes += len(text.encode("utf-8"))
        n_paragraphs += len(blocks)
        n_cut += sum(len(block) > max_chars for block in blocks)
        n_empty += not blocks
        documents += split_text(text, target_chars, max_chars)
    if not documents:
        if path.is_file():
            raise ValueError(f"load_texts: {path} holds no text (it is empty or only blank lines)")
        raise ValueError(f"load_texts: the {len(files)} .txt/.md files under {path} hold no text "
                         "(all empty or only blank lines)")
    if log is not None:
        source = str(path)
        if path.is_dir():
            source += f" ({plural(len(files), 'file')}" + (f", {n_empty} empty)" if n_empty else ")")
        how = (f"split on blank lines into {plural(n_paragraphs, 'paragraph')}, merged to ~{target_chars:,} characters "
               f"per document, at most {max_chars:,}")
        if n_cut:
            how += f"; {plural(n_cut, 'paragraph')} over {max_chars:,} characters cut at line ends"
        log(f"{source}: {human_size(n_bytes)} -> {plural(len(documents), 'document')} ({how})")
    return documents


# ------------------------------------------------------------------ JSONL records (TRL's dataset fields)
FORMATS = ("text", "prompt_completion", "messages", "preference")
SFT_FORMATS = ("text", "prompt_completion", "messages")   # what `minifm sft --data` reads
PREFERENCE_FORMATS = ("preference",)                      # what `minifm dpo --data` reads
ERROR_LINES_LISTED = 5     # a file with many bad lines: the first error, then this many more line numbers


@dataclass(frozen=True)
class JsonlRecord:
    """One validated line of a JSONL file."""

    line: int               # 1-based line number in the file (error messages and warnings name it)
    record: dict            # the JSON object as read
    format: str             # "text" | "prompt_completion" | "messages" | "preference"
    conversational: bool    # True when its fields are lists of messages, False for strings


def validate_messages(messages, where: str, field: str) -> None:
    """A non-empty list of {"role": system|user|assistant, "content": str} objects (other keys ignored)."""
    if not isinstance(messages, list) or not messages:
        raise DataFormatError(f"{where}: field {field!r} must be a non-empty list of messages, got {messages!r:.80}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataFormatError(f"{where}: field {field}[{i}] must be an object with role/content, "
                                  f"got {message!r:.80}")
        if "role" not in message:
            raise DataFormatError(f"{where}: field {field}[{i}].role is missing (keys: {sorted(message)})")
        role = message["role"]
        if role not in ROLES:
            raise DataFormatError(f"{where}: field {field}[{i}].role must be one of {ROLES}, got {role!r:.40}")
        if "content" not in message:
            raise DataFormatError(f"{where}: field {field}[{i}].content is missing (keys: {sorted(message)})")
        if not isinstance(message["content"], str):
            raise DataFormatError(f"{where}: field {field}[{i}].content must be a string, "
                                  f"got {type(message['content']).__name__}")


def check_assistant_contents(messages: list[dict], where: str, field: str) -> None:
    """Every assistant message holds some text: an empty reply has nothing to learn from."""
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and not message["content"].strip():
            raise DataFormatError(f"{where}: field {field}[{i}].content is empty (an assistant turn needs text)")


def validate_reply(value, where: str, field: str) -> None:
    """A completion / chosen / rejected: a non-empty string, or messages starting with the assistant's turn."""
    if isinstance(value, str):
        if not value.strip():
            raise DataFormatError(f"{where}: field {field!r} is empty (a reply needs text)")
        return
    if not isinstance(value, list):
        raise DataFormatError(f"{where}: field {field!r} must be a string (or a list of messages), "
                              f"got {type(value).__name__}")
    validate_messages(value, where, field)
    if value[0]["role"] != "assistant":
        raise DataFormatError(f"{where}: field {field}[0].role must be 'assistant' (a reply starts with the "
                              f"assistant's turn), got {value[0]['role']!r}")
    check_assistant_contents(value, where, field)


def validate_string_or_messages(record: dict, field: str, where: str) -> None:
    value = record[field]
    if isinstance(value, list):
        validate_messages(value, where, field)
    elif not isinstance(value, str):
        raise DataFormatError(f"{where}: field {field!r} must be a string (or a list of messages), "
                              f"got {type(value).__name__}")


def check_same_style(record: dict, fields: tuple[str, ...], where: str) -> None:
    """The fields are all strings (TRL's standard format) or all message lists (conversational)."""
    styles = {field: isinstance(record[field], list) for field in fields}
    if len(set(styles.values())) > 1:
        lists = [field for field, is_list in styles.items() if is_list]
        strings = [field for field, is_list in styles.items() if not is_list]
        raise DataFormatError(f"{where}: fields {strings} are strings but {lists} are lists of messages; give all "
                              f"of them as strings (standard format) or all as message lists (conversational)")


def split_implicit_prompt(chosen: list[dict], rejected: list[dict], where: str) -> tuple[list, list, list]:
    """TRL's implicit prompt: (prompt, chosen reply, rejected reply) where the prompt is the longest run of
    leading messages the two conversations share."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise DataFormatError(f"{where}: fields 'chosen' and 'rejected' share no leading message, so no prompt can "
                              "be taken from them; add a 'prompt' field")
    for field, conversation in (("chosen", chosen), ("rejected", rejected)):
        if shared == len(conversation):
            raise DataFormatError(f"{where}: field {field!r} has no message after the {shared} it shares with the "
                                  f"other reply (chosen and rejected must differ)")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def preference_parts(record: dict, where: str = "record") -> tuple:
    """(prompt, chosen, rejected) of a preference record, the prompt taken from the shared leading messages
    when the record has no "prompt" field (TRL's implicit prompt)."""
    if "prompt" in record:
        return record["prompt"], record["chosen"], record["rejected"]
    return split_implicit_prompt(record["chosen"], record["rejected"], where)


def record_format(record, where: str) -> str:
    """Validate one record; return its format: "text", "prompt_completion", "messages", "preference".

    Beyond the types: completions and chosen/rejected replies must hold text, a conversational reply
    must start with an assistant message, a conversation must hold an assistant message, and the
    fields of one record are all strings or all message lists."""
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    if "chosen" in record or "rejected" in record:
        for field in ("chosen", "rejected"):
            if field not in record:
                raise DataFormatError(f"{where}: preference record is missing field {field!r}")
        if "prompt" in record:
            validate_string_or_messages(record, "prompt", where)
            check_same_style(record, ("prompt", "chosen", "rejected"), where)
            validate_reply(record["chosen"], where, "chosen")
            validate_reply(record["rejected"], where, "rejected")
            return "preference"
        if not (isinstance(record["chosen"], list) and isinstance(record["rejected"], list)):
            raise DataFormatError(f"{where}: preference record is missing field 'prompt' (without it, chosen and "
                                  "rejected must be conversations sharing their first messages: TRL's implicit prompt)")
        validate_messages(record["chosen"], where, "chosen")
        validate_messages(record["rejected"], where, "rejected")
        _, chosen, rejected = split_implicit_prompt(record["chosen"], record["rejected"], where)
        validate_reply(chosen, where, "chosen (after the shared prompt)")
        validate_reply(rejected, where, "rejected (after the shared prompt)")
        return "preference"
    if "messages" in record:
        validate_messages(record["messages"], where, "messages")
        if not any(message["role"] == "assistant" for message in record["messages"]):
            raise DataFormatError(f"{where}: field 'messages' has no assistant message, so nothing to learn")
        check_assistant_contents(record["messages"], where, "messages")
        return "messages"
    if "prompt" in record or "completion" in record:
        for field in ("prompt", "completion"):
            if field not in record:
                raise DataFormatError(f"{where}: prompt-completion record is missing field {field!r}")
        validate_string_or_messages(record, "prompt", where)
        check_same_style(record, ("prompt", "completion"), where)
        validate_reply(record["completion"], where, "completion")
        return "prompt_completion"
    if "text" in record:
        if not isinstance(record["text"], str):
            raise DataFormatError(f"{where}: field 'text' must be a string, got {type(record['text']).__name__}")
        return "text"
    raise DataFormatError(f"{where}: record has none of the fields text, prompt/completion, messages, "
                          f"prompt/chosen/rejected (keys: {sorted(record)})")


def is_conversational(record: dict) -> bool:
    """True when the record's fields are lists of messages (TRL's conversational format)."""
    return any(isinstance(record.get(field), list) for field in ("messages", "prompt", "completion", "chosen"))


def format_name(kind: str, conversational: bool) -> str:
    if kind in ("text", "messages"):
        return kind
    return f"{kind} ({'conversational' if conversational else 'standard'})"


def one_line_of_errors(errors: list[tuple[int, str]]) -> str:
    """The first error, then how many other lines are bad and which (the first few)."""
    (_, first), others = errors[0], [line for line, _ in errors[1:]]
    if not others:
        return first
    listed = ", ".join(str(line) for line in others[:ERROR_LINES_LISTED])
    if len(others) > ERROR_LINES_LISTED:
        listed += ", ..."
    return f"{first} (and {plural(len(others), 'more malformed line')}: {listed})"


def read_jsonl_records(path: str | os.PathLike, formats: tuple[str, ...] | None = None,
                       purpose: str | None = None) -> list[JsonlRecord]:
    """Every record of a JSONL file, each line validated before any is returned.

    All lines are read and checked (JSON, fields, types, format); if any is malformed, one
    DataFormatError names the file, the first bad line and its field, and lists the other bad lines.
    `formats` restricts the allowed formats (`purpose`, e.g. "TRL's SFT formats", explains why). All
    records must share one format and one style (strings or message lists). Blank lines are skipped;
    a line that is not UTF-8 is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    records: list[JsonlRecord] = []
    errors: list[tuple[int, str]] = []
    first: tuple[str, int] | None = None    # (format name, line) of the first good record
    with open(path, "rb") as handle:        # bytes, so that a line that is not UTF-8 is named too
        for line_number, raw in enumerate(handle, start=1):
            where = f"{path}:{line_number}"
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataFormatError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
                kind = record_format(record, where)
                if formats is not None and kind not in formats:
                    wanted = " or ".join(repr(name) for name in formats)
                    why = f" ({purpose})" if purpose else ""
                    raise DataFormatError(f"{where}: expected a {wanted} record{why}, got {kind!r}")
                name = format_name(kind, is_conversational(record))
                if first is None:
                    first = (name, line_number)
                elif name != first[0]:
                    raise DataFormatError(f"{where}: record format {name!r} differs from line {first[1]}'s "
                                          f"({first[0]!r}); all records of a file share one format")
            except UnicodeDecodeError as error:
                errors.append((line_number, f"{where}: not UTF-8 text ({error.reason} at byte {error.start})"))
                continue
            except DataFormatError as error:
                errors.append((line_number, str(error)))
                continue
            records.append(JsonlRecord(line_number, record, kind, is_conversational(record)))
    if errors:
        raise DataFormatError(one_line_of_errors(errors))
    return records


def load_jsonl(path: str | os.PathLike, expected_format: str | None = None) -> list[dict]:
    """Records of a JSONL file, each validated; all records must share one format
    (or `expected_format` if given). Blank lines are skipped."""
    formats = None if expected_format is None else (expected_format,)
    return [item.record for item in read_jsonl_records(path, formats)]


def hold_out(items: list, fraction: float, seed: int, what: str = "the data") -> tuple[list, list]:
    """(train, held_out): round(fraction * n) items, at least one when fraction > 0, chosen by a permutation
    seeded with `seed`; both lists keep the input order, and they are disjoint (by position)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return list(items), []
    n_held = max(1, round(fraction * len(items)))
    if n_held >= len(items):
        raise ValueError(f"{what} holds {plural(len(items), 'record')}: too few to hold {n_held} out for evaluation "
                         f"(fraction {fraction}) and still train on one; pass --eval-fraction 0 or --eval-data FILE")
    held = set(np.random.default_rng(seed).permutation(len(items))[:n_held].tolist())
    train = [item for index, item in enumerate(items) if index not in held]
    held_out_items = [item for index, item in enumerate(items) if index in held]
    return train, held_out_items


def python_stdlib_corpus(max_bytes: int | None = None) -> list[str]:
    """Source of the running interpreter's standard-library .py files, sorted by relative path,
    skipping test suites, site-packages and a few GUI/packaging folders; stops once the total
    reaches `max_bytes` (UTF-8), the last file included whole."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in STDLIB_SKIP_DIRS and not d.startswith("."))
        files += [Path(directory) / n for n in names if n.endswith(".py")]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    texts, total = [], 0
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue                      # a handful of stdlib files are deliberately not UTF-8
        texts.append(text)
        total += len(text.encode("utf-8"))
        if max_bytes is not None and total >= max_bytes:
            break
    return texts


def load_corpus(name_or_path: str | os.PathLike = "tinyworld", max_bytes: int | None = None, log=None,
                **kwargs) -> list[str]:
    """"tinyworld" (tinyworld.generate_corpus; `max_bytes` -> size_bytes, kwargs passed on),
    "python-stdlib", or a path: a .txt/.md file or a folder (load_texts, which tells `log` how it split
    the text) or a .jsonl of {"text": ...} records (one document each)."""
    if name_or_path == "tinyworld":
        return tinyworld.generate_corpus(size_bytes=max_bytes or 1_000_000, **kwargs)
    if name_or_path == "python-stdlib":
        return python_stdlib_corpus(max_bytes)
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"load_corpus: {name_or_path!r} is neither 'tinyworld', 'python-stdlib' nor an existing path")
    if path.suffix.lower() == ".jsonl" and path.is_file():
        texts = [r["text"] for r in load_jsonl(path, expected_format="text")]
        if not texts:
            raise ValueError(f"load_corpus: {path} holds no records (empty or only blank lines)")
        if log is not None:
            log(f"{path}: {plural(len(texts), 'document')} (one per JSONL record)")
        return texts
    return load_texts(path, log=log)
