"""The documentation names only things that exist, and the README's layout shows every file.

docs/chapter-map.md: every row's files exist, every function / class it names is defined in one of
the row's Python files, and every test it names (`tests/path.py::test_name`) is a test function of
that file. README.md's "Layout" tree: it lists every committed source file of the repository (minifm/**/*.py,
csrc/*.pyx and templates, benchmarks/*.py, docs/*.md, the top-level tests/*.py and every tests/
folder), and every file it lists exists. Both are read as text; nothing is executed but imports.
"""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_MAP = ROOT / "docs" / "chapter-map.md"
README = ROOT / "README.md"
CODE = re.compile(r"`([^`]+)`")


def chapter_map_rows() -> list[dict]:
    """The rows of every 4-column table (concept | file | function / class | test)."""
    rows = []
    for number, line in enumerate(CHAPTER_MAP.read_text(encoding="utf-8").splitlines(), start=1):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 4 or cells[0] in ("concept", "---"):
            continue
        rows.append({"line": number, "concept": cells[0], "files": CODE.findall(cells[1]),
                     "names": CODE.findall(cells[2]), "tests": CODE.findall(cells[3])})
    return rows


ROWS = chapter_map_rows()


def row_id(row: dict) -> str:
    return f"line{row['line']}"


def test_the_chapter_map_has_rows_with_a_file_a_name_and_a_test_each():
    assert len(ROWS) >= 60
    for row in ROWS:
        assert row["files"] and row["names"] and len(row["tests"]) == 1, f"docs/chapter-map.md:{row['line']}"


def module_of(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolves(name: str, python_files: list[str]) -> bool:
    """`name` (`f`, `Class.method`, `f(...)`) is an attribute path of one of the files' modules."""
    path = name.split("(")[0].strip().split(".")
    for file in python_files:
        value = importlib.import_module(module_of(file))
        for attribute in path:
            value = getattr(value, attribute, None)
            if value is None:
                break
        else:
            return True
    return False


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_every_file_function_and_test_of_the_chapter_map_exists(row):
    where = f"docs/chapter-map.md:{row['line']} ({row['concept'][:40]})"
    for file in row["files"]:
        assert (ROOT / file).is_file(), f"{where}: no file {file}"
    python_files = [file for file in row["files"] if file.endswith(".py")]
    for name in row["names"]:
        assert resolves(name, python_files), f"{where}: {name} is not defined in {python_files}"
    for test in row["tests"]:
        file, _, function = test.partition("::")
        assert (ROOT / file).is_file(), f"{where}: no test file {file}"
        tree = ast.parse((ROOT / file).read_text(encoding="utf-8"))
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert function.startswith("test_") and function in defined, f"{where}: {file} has no {function}"


# ------------------------------------------------------------------------------------- README layout
TREE_LINE = re.compile(r"^(?P<indent>(?:[│ ] {3})*)(?:├── |└── )(?P<name>\S+)")


def readme_layout_paths() -> set[str]:
    """The paths of the README's Layout tree, rebuilt from the indentation (4 characters per level)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    paths, parents = set(), []
    for line in block.splitlines():
        match = TREE_LINE.match(line)
        if not match:
            continue
        depth = len(match["indent"]) // 4
        name = match["name"]
        del parents[depth:]
        path = "/".join(parents + [name.rstrip("/")])
        paths.add(path)
        if name.endswith("/"):
            parents.append(name.rstrip("/"))
    return paths


def tracked_files() -> list[str]:
    """The repository's files: git's index in a git checkout (so a work-in-progress file that is not
    committed yet does not count), else every file on disk."""
    try:
        listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
        return listing.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return [str(path.relative_to(ROOT)) for path in ROOT.rglob("*") if path.is_file()]


def repository_sources() -> set[str]:
    """The files the Layout tree must show: minifm/**/*.py, csrc/*.pyx and templates, benchmarks/*.py,
    docs/*.md, tests/*.py, every tests/ folder, setup.py and pyproject.toml."""
    in_folder = {"csrc": (".pyx", ".tp"), "benchmarks": (".py",), "docs": (".md",), "tests": (".py",)}
    found = {"setup.py", "pyproject.toml"}
    for path in tracked_files():
        parts = path.split("/")
        if "__pycache__" in parts:
            continue
        if parts[0] == "minifm" and path.endswith(".py"):
            found.add(path)
        elif len(parts) == 2 and path.endswith(in_folder.get(parts[0], ())):
            found.add(path)
        elif parts[0] == "tests" and len(parts) > 2:
            found.add("/".join(parts[:2]))
    return found


def test_the_readme_layout_lists_every_source_file():
    missing = sorted(repository_sources() - readme_layout_paths())
    assert not missing, f"README.md's Layout tree lacks {missing}"


def test_every_file_of_the_readme_layout_exists():
    absent = sorted(path for path in readme_layout_paths() if not (ROOT / path).exists())
    assert not absent, f"README.md's Layout tree lists files that do not exist: {absent}"


def test_every_test_module_has_a_unique_file_name():
    # pytest's default "prepend" import mode imports each test file as a top-level module named after
    # its file, so tests/lab/test_attention.py and tests/kernels/test_attention.py cannot both be
    # collected (a CI run stopped at collection on exactly that).
    by_name: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        by_name.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"test files share a module name: {clashes}"
