"""Running a script on several MPI ranks from a test: `run_ranks(script, *args, ranks=2)`.

The tests of minifm.distributed launch `mpiexec -n 2 python <script> ...` in a subprocess with a
timeout (a hung collective must fail the test, never hang the suite), one thread per rank
(MINIFM_NUM_THREADS=1: the same BLAS bits in every process, so one process and two ranks can be
compared to 1e-10) and a short collective timeout. They skip with the install line when mpi4py or
mpiexec is absent; CI installs both (.ci/run: pip install -e ".[test,mpi]"), so nothing skips there.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oracles import ORACLE_INSTALL

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def mpiexec_path() -> str | None:
    """mpiexec next to this Python (the MPICH wheel puts it in the environment's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def require_mpi() -> str:
    """The mpiexec to use, or skip the test with the install line."""
    reason = f"needs mpi4py and mpiexec: {ORACLE_INSTALL['mpi4py']}"
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip(reason)
    mpiexec = mpiexec_path()
    if mpiexec is None:
        pytest.skip(reason)
    return mpiexec


def environment(extra: dict | None = None) -> dict:
    """This process's environment without any MPI launcher's variables, with one thread per process."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "PMIX_", "OMPI_", "MV2_", "MPI_LOCAL", "HYDRA_", "MINIFM_DIST_"))}
    env.update({"MINIFM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MINIFM_DIST_TIMEOUT": "60",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def run_ranks(script: str, *args, ranks: int = 2, timeout: float = 180, env: dict | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
    """`mpiexec -n ranks python scripts/<script> args...`; with check, a non-zero exit fails the test with the output."""
    mpiexec = require_mpi()
    command = [mpiexec, "-n", str(ranks), sys.executable, str(SCRIPTS / script), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment(env))
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
                    f"stderr:\n{result.stderr[-3000:]}")
    return result


def run_single(script: str, *args, timeout: float = 180, env: dict | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    """The same script in one plain process (no mpiexec: the single-process World)."""
    command = [sys.executable, str(SCRIPTS / script), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment(env))
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}\nstderr:\n{result.stderr[-3000:]}")
    return result
