"""Test-only oracle packages: each with the exact line that installs it, and `require` to import one or skip.

A test that needs an oracle calls require(name) and is skipped with that install line when the package
is absent; CI installs them all and fails on any skip. (A plain module, not a conftest, so that every
test folder imports the same one: `from oracles import require`.)
"""
import pytest

ORACLE_INSTALL = {
    "torch": "pip install torch==2.13.0",
    "transformers": "pip install transformers accelerate gguf",
    "sentence_transformers": "pip install sentence-transformers",
    "tokenizers": "pip install tokenizers",
    "peft": "pip install peft",
    "gguf": "pip install gguf",
    "jinja2": "pip install jinja2",
    "mpi4py": 'pip install "minifm[mpi]"',  # mpi4py and the MPICH wheel with its mpiexec (tests/distributed)
}


def require(module: str):
    """Import and return an oracle package, or skip the test with the exact install line."""
    return pytest.importorskip(module, reason=f"needs {module}: {ORACLE_INSTALL[module]}")
