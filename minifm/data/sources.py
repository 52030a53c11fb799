"""Where text comes from: user files and folders, TRL-style JSONL, the Python standard library.

    load_texts(path)             a .txt/.md file, or every .txt/.md under a folder, as documents
    split_text(text)             plain text -> documents of a trainable size (blank lines, then size)
    load_jsonl(path)             one JSON object per line, validated against TRL's dataset fields
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
(TRL's conversational variants of prompt/completion and preference, lists of messages instead
of strings, are accepted too.) Errors name the file, the 1-based line number and the field.
Files are read as UTF-8; undecodable bytes raise a UnicodeDecodeError naming the file. A path
that holds no text (an empty file, a folder without .txt/.md files, a JSONL without records)
is a ValueError naming it.
"""
from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

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


def validate_messages(messages, where: str, field: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataFormatError(f"{where}: field {field!r} must be a non-empty list of messages, got {messages!r:.80}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataFormatError(f"{where}: field {field}[{i}] must be an object with role/content, got {message!r:.80}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataFormatError(f"{where}: field {field}[{i}].role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise DataFormatError(f"{where}: field {field}[{i}].content must be a string, got {type(content).__name__}")


def validate_string_or_messages(record: dict, field: str, where: str) -> None:
    value = record[field]
    if isinstance(value, list):
        validate_messages(value, where, field)
    elif not isinstance(value, str):
        raise DataFormatError(f"{where}: field {field!r} must be a string (or a list of messages), "
                              f"got {type(value).__name__}")


def record_format(record, where: str) -> str:
    """Validate one record; return its format: "text", "prompt_completion", "messages", "preference"."""
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    if "chosen" in record or "rejected" in record:
        for field in ("prompt", "chosen", "rejected"):
            if field not in record:
                raise DataFormatError(f"{where}: preference record is missing field {field!r}")
            validate_string_or_messages(record, field, where)
        return "preference"
    if "messages" in record:
        validate_messages(record["messages"], where, "messages")
        return "messages"
    if "prompt" in record or "completion" in record:
        for field in ("prompt", "completion"):
            if field not in record:
                raise DataFormatError(f"{where}: prompt-completion record is missing field {field!r}")
            validate_string_or_messages(record, field, where)
        return "prompt_completion"
    if "text" in record:
        if not isinstance(record["text"], str):
            raise DataFormatError(f"{where}: field 'text' must be a string, got {type(record['text']).__name__}")
        return "text"
    raise DataFormatError(f"{where}: record has none of the fields text, prompt/completion, messages, "
                          f"prompt/chosen/rejected (keys: {sorted(record)})")


def load_jsonl(path: str | os.PathLike, expected_format: str | None = None) -> list[dict]:
    """Records of a JSONL file, each validated; all records must share one format
    (or `expected_format` if given). Blank lines are skipped."""
    path = Path(path)
    records, formats = [], set()
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
            kind = record_format(record, where)
            if expected_format is not None and kind != expected_format:
                raise DataFormatError(f"{where}: expected a {expected_format!r} record, got {kind!r}")
            if formats and kind not in formats:
                raise DataFormatError(f"{where}: record format {kind!r} differs from earlier records ({formats.pop()!r})")
            formats.add(kind)
            records.append(record)
    return records


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
