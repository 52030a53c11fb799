"""Where text comes from: user files and folders, TRL-style JSONL, the Python standard library.

    load_texts(path)             .txt/.md file, or every .txt/.md under a folder (recursive, sorted)
    load_jsonl(path)             one JSON object per line, validated against TRL's dataset fields
    python_stdlib_corpus(...)    the running interpreter's standard-library .py files (real code)
    load_corpus(name_or_path)    "tinyworld" (default), "python-stdlib", or a path

JSONL records must have exactly one of TRL's shapes (extra keys are allowed):
    language modelling   {"text": str}
    prompt-completion    {"prompt": str, "completion": str}
    conversational       {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
    preference           {"prompt": str, "chosen": str, "rejected": str}
(TRL's conversational variants of prompt/completion and preference, lists of messages instead
of strings, are accepted too.) Errors name the file, the 1-based line number and the field.
Files are read as UTF-8; undecodable bytes raise a UnicodeDecodeError naming the file.
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


def load_texts(path: str | os.PathLike) -> list[str]:
    """The contents of a .txt/.md file, or of every .txt/.md file under a folder, sorted by path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load_texts: {path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise ValueError(f"load_texts: {path} is not a {'/'.join(TEXT_SUFFIXES)} file")
        return [read_text_file(path)]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    return [read_text_file(p) for p in files]


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


def load_corpus(name_or_path: str | os.PathLike = "tinyworld", max_bytes: int | None = None, **kwargs) -> list[str]:
    """"tinyworld" (tinyworld.generate_corpus; `max_bytes` -> size_bytes, kwargs passed on),
    "python-stdlib", or a path (.txt/.md file or folder; .jsonl with a "text" field)."""
    if name_or_path == "tinyworld":
        return tinyworld.generate_corpus(size_bytes=max_bytes or 1_000_000, **kwargs)
    if name_or_path == "python-stdlib":
        return python_stdlib_corpus(max_bytes)
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"load_corpus: {name_or_path!r} is neither 'tinyworld', 'python-stdlib' nor an existing path")
    if path.suffix.lower() == ".jsonl":
        return [r["text"] for r in load_jsonl(path, expected_format="text")]
    return load_texts(path)
