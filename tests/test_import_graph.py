"""The package's import structure: no import cycles, every module importable on its own.

(a) The graph of module-level imports between minifm's modules (read with `ast`, nothing is run)
    has no cycle. An import inside a function is not an edge: it runs later, which is exactly how a
    cycle hides, so (c) forbids those instead.
(b) Every module imports in a fresh state, as the first minifm module loaded: an import that works
    only when another module happens to be loaded first fails here.
(c) No function-level import of a minifm module is left, except in the files listed in
    FUNCTION_LEVEL_IMPORTS_ALLOWED and on lines that say why with a `# lazy:` comment (the CLI's
    loading of a subcommand when it runs, for instance).
Imports of optional third-party packages inside functions (matplotlib, scipy's BLAS) are not
checked: (c) looks at minifm modules only.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minifm"

# Files whose function-level minifm imports are tolerated: none. A new one must say why on its line
# (LAZY_IMPORT_MARK) or be listed here with a reason.
FUNCTION_LEVEL_IMPORTS_ALLOWED: list[str] = []
LAZY_IMPORT_MARK = "# lazy:"


# ---------------------------------------------------------------------------- reading the package
def module_name(path: Path) -> str:
    """minifm/autograd/tensor.py -> "minifm.autograd.tensor"; a package's __init__.py -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported: not inside a function (or lambda),
    not under `if TYPE_CHECKING:`; class bodies and try/if blocks at module level count."""
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or _is_type_checking_block(node):
            continue
        else:
            pending.extend(ast.iter_child_nodes(node))
    return found


def function_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements inside a function body (at any depth)."""
    found = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for statement in function.body:
                found.extend(node for node in ast.walk(statement) if isinstance(node, (ast.Import, ast.ImportFrom)))
    return list({id(node): node for node in found}.values())  # nested functions are walked twice


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
                     modules: dict[str, Path]) -> list[str]:
    """The minifm modules an import statement loads: `from minifm.a import b` is minifm.a.b when b is
    a submodule, else minifm.a; relative imports are resolved against the importing module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "minifm"]
    if node.level:
        package = importer if is_package else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base.split(".")[0] != "minifm":
        return []
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if submodule in modules else base)
    return targets


def import_graph() -> dict[str, set[str]]:
    """module -> the minifm modules its module-level imports load."""
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = set()
        for node in module_level_imports(tree):
            edges.update(imported_modules(node, name, path.name == "__init__.py", modules))
        graph[name] = {target for target in edges if target != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path a -> b -> ... -> a) per strongly connected component that has one."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0

    def connect(start: str) -> None:  # Tarjan's algorithm, iterative so deep chains cannot overflow
        nonlocal counter
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_inside(graph, component) for component in components]


def _cycle_inside(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest closed path through the component's first module (breadth-first search)."""
    start = min(component)
    previous = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return list(reversed(path)) + [start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle found inside the strongly connected component {sorted(component)}")


# ---------------------------------------------------------------------------- (a) acyclic
def test_the_graph_reader_resolves_submodules_and_finds_cycles():
    modules = package_modules()
    tree = ast.parse("from minifm.autograd import ops, Tensor\nfrom . import engine\nimport minifm.functional as F")
    found = [imported_modules(node, "minifm.autograd.tensor", False, modules) for node in tree.body]
    assert found == [["minifm.autograd.ops", "minifm.autograd"], ["minifm.autograd.engine"], ["minifm.functional"]]
    tree = ast.parse("import a\ndef f():\n    import minifm.nn\nclass C:\n    import minifm.optim\n"
                     "if TYPE_CHECKING:\n    import minifm.models\n")
    assert [ast.unparse(node) for node in module_level_imports(tree)] == ["import minifm.optim", "import a"]
    assert [ast.unparse(node) for node in function_level_imports(tree)] == ["import minifm.nn"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_module_level_imports_form_no_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles among minifm's modules (module-level imports):\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in cycles)


# ---------------------------------------------------------------------------- (b) each module alone
# An interpreter imports its share of the modules in turn, removing all of minifm's Python modules
# from sys.modules before each, so each import runs as the first minifm import of a fresh process
# would. Compiled kernels stay loaded (a Cython extension cannot be initialised twice in one process)
# and so do third-party packages: neither takes part in minifm's import order. One interpreter per
# module would spend ~0.3 s each starting Python and NumPy; re-running minifm's own imports costs
# ~0.2 s a module, so the modules are dealt round-robin to one interpreter per core (at most 4),
# which run side by side.
_IMPORT_EACH = r"""
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "minifm" or m.startswith("minifm.")]:
        if (getattr(sys.modules[loaded], "__file__", None) or "").endswith(".py"):
            del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


def test_every_module_imports_first_in_a_fresh_state():
    # a __main__ module is a program (importing it runs it), not something to import
    names = sorted(name for name in package_modules() if not name.endswith(".__main__"))
    workers = max(1, min(4, os.cpu_count() or 1))
    processes = [subprocess.Popen([sys.executable, "-c", _IMPORT_EACH, json.dumps(names[start::workers])], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for start in range(workers)]
    failures = {}
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        failures.update(json.loads(stdout.strip().splitlines()[-1]))
    assert not failures, "modules that fail when imported first:\n" + "\n".join(
        f"--- {name}\n{error}" for name, error in sorted(failures.items()))


# ---------------------------------------------------------------------------- (c) no hidden imports
def _allowed(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in FUNCTION_LEVEL_IMPORTS_ALLOWED)


def test_no_function_level_import_of_a_minifm_module():
    modules = package_modules()
    found = []
    for name, path in modules.items():
        relative = path.relative_to(ROOT).as_posix()
        if _allowed(relative):
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in function_level_imports(ast.parse(source, filename=str(path))):
            if not imported_modules(node, name, path.name == "__init__.py", modules):
                continue  # a third-party package (an optional dependency): not checked here
            if LAZY_IMPORT_MARK in lines[node.lineno - 1]:
                continue  # the line says why it must be lazy
            found.append(f"{relative}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not found, ("function-level imports of minifm modules (move them to the top of the file, or say "
                       f"why on the line with {LAZY_IMPORT_MARK!r}):\n" + "\n".join(found))

