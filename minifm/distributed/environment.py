"""Rank and world size: was this process started by mpiexec, and as which rank of how many?

`get_world()` answers once per process and keeps the answer:

  * the launcher's environment is read first, before anything MPI is imported: MPICH's Hydra and
    Intel MPI set PMI_RANK / PMI_SIZE, Open MPI sets OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE,
    MVAPICH sets MV2_COMM_WORLD_RANK / MV2_COMM_WORLD_SIZE. Without them (a plain `minifm ...`), or
    with a world of one process (`mpiexec -n 1`), the World is the single-process one and mpi4py is
    never imported: nothing changes for a run without MPI;
  * with a world of several processes, mpi4py is imported (MPI_Init with MPI_THREAD_MULTIPLE, for
    the watchdog thread), the World wraps a duplicate of MPI_COMM_WORLD, and:
      - an uncaught exception on one rank ends every rank (sys.excepthook prints the traceback, then
        MPI_Abort), unless every rank raised it together (minifm.distributed.errors);
      - ranks sharing a machine share its cores: unless MINIFM_NUM_THREADS / OMP_NUM_THREADS fix a
        count, each rank's kernel and BLAS pools get usable cores / ranks on this machine (at least
        1), so two ranks on a 2-core machine run one thread each instead of fighting for the cores.

Launched by mpiexec without mpi4py installed, get_world() raises an ImportError with the install
line: pip install "minifm[mpi]".
"""
from __future__ import annotations

import os
import sys

from minifm.distributed.config import DistributedConfig
from minifm.distributed.errors import is_raised_on_every_rank
from minifm.distributed.world import World
from minifm.kernels import threads

# (rank variable, size variable) of the launchers minifm recognises, in the order they are tried
LAUNCHER_VARIABLES = (
    ("PMI_RANK", "PMI_SIZE"),                            # MPICH (Hydra), Intel MPI
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),    # Open MPI
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),      # MVAPICH
)
INSTALL_LINE = 'pip install "minifm[mpi]"'

_world: World | None = None


def rank_and_size_from_environment(environ=None) -> tuple[int, int] | None:
    """(rank, world size) set by an MPI launcher, or None when no launcher started this process."""
    environ = os.environ if environ is None else environ
    for rank_name, size_name in LAUNCHER_VARIABLES:
        if rank_name in environ and size_name in environ:
            try:
                rank, size = int(environ[rank_name]), int(environ[size_name])
            except ValueError:
                raise ValueError(f"{rank_name}={environ[rank_name]!r} / {size_name}={environ[size_name]!r}: "
                                 "an MPI launcher's rank and size must be integers") from None
            if not 0 <= rank < size:
                raise ValueError(f"{rank_name}={rank} is not a rank of a world of {size_name}={size} processes")
            return rank, size
    return None


def launched_with_several_processes(environ=None) -> bool:
    found = rank_and_size_from_environment(environ)
    return found is not None and found[1] > 1


def get_world(config: DistributedConfig | None = None) -> World:
    """This process's World (made on the first call; see the module docstring). `config` gives the
    watchdog's timeout on that first call (default: DistributedConfig.from_environment())."""
    global _world
    if _world is None:
        if not launched_with_several_processes():
            _world = World()
        else:
            _world = _start_mpi(config or DistributedConfig.from_environment())
    return _world


def _start_mpi(config: DistributedConfig) -> World:
    rank, size = rank_and_size_from_environment()
    try:
        from mpi4py import MPI  # optional dependency, imported only under mpiexec with several processes
    except ImportError:
        raise ImportError(f"this process is rank {rank} of {size} started by mpiexec, but mpi4py is not installed: "
                          f"{INSTALL_LINE}") from None
    world = World(MPI.COMM_WORLD.Dup(), MPI, timeout_s=config.timeout_s)
    if world.size != size:
        raise RuntimeError(f"the launcher's environment says {size} processes but MPI_COMM_WORLD has {world.size}: "
                           "is mpi4py built against another MPI than the mpiexec that started this process?")
    _install_excepthook(world)
    _share_the_cores(world, MPI)
    return world


def _install_excepthook(world: World) -> None:
    """An uncaught exception on one rank alone ends every rank: the others would wait for it forever."""
    previous = sys.excepthook

    def excepthook(kind, error, traceback):
        previous(kind, error, traceback)
        if not is_raised_on_every_rank(error):
            world.abort(1, f"minifm: {world.describe()} stopped with {kind.__name__}; stopping every rank")

    sys.excepthook = excepthook


def _share_the_cores(world: World, MPI) -> None:
    if threads.requested_threads() is not None:
        return
    on_this_machine = world.comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_ranks = on_this_machine.Get_size()
    on_this_machine.Free()
    if local_ranks > 1:
        threads.set_num_threads(max(1, threads.usable_cores() // local_ranks))


__all__ = ["INSTALL_LINE", "LAUNCHER_VARIABLES", "get_world", "launched_with_several_processes",
           "rank_and_size_from_environment"]
