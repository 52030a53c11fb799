"""Data-parallel training over MPI: `mpiexec -n N minifm pretrain|sft|dpo ...` (optional extra: pip install "minifm[mpi]").

Every rank holds the whole model, trains on its own share of each batch, and averages the
gradients with the others before every update, so N ranks at batch B train like one process at
batch N * B (docs/distributed.md). One concept per file:

    environment.py   was this process started by mpiexec, as which rank of how many (get_world);
                     mpi4py is imported only then, never in a run without MPI
    world.py         World: rank, size and the buffer-based collectives (nothing pickled)
    watchdog.py      a rank waiting too long in a collective stops every rank (MPI_Abort)
    errors.py        errors every rank raises together vs errors that stop the job at once
    config.py        DistributedConfig: bucket size, overlap, ZeRO, timeout, check interval (MINIFM_DIST_*)
    buckets.py       gradient buckets: many gradients in one flat array, one message
    ddp.py           DistributedDataParallel: hooks -> buckets -> non-blocking allreduce during backward;
                     no_sync() for gradient accumulation; allreduce_gradients, the plain reference
    broadcast.py     rank 0's weights and optimizer state to every rank
    sampler.py       DistributedSampler (torch's, over indices) and ShardedBatches (over a batch stream)
    zero.py          ZeroRedundancyOptimizer: ZeRO stage 1, the optimizer state sharded
    divergence.py    the check that the ranks' parameters are still the same

The training loop (minifm/train/loop.py) puts them together; a run without mpiexec uses none of it.
"""
from minifm.distributed.broadcast import broadcast_optimizer_state, broadcast_parameters
from minifm.distributed.config import DistributedConfig
from minifm.distributed.ddp import DistributedDataParallel, allreduce_gradients
from minifm.distributed.divergence import check_parameters_agree, parameter_checksum
from minifm.distributed.environment import (
    INSTALL_LINE, get_world, launched_with_several_processes, rank_and_size_from_environment,
)
from minifm.distributed.errors import (
    DistributedError, RanksDivergedError, is_raised_on_every_rank, raised_on_every_rank,
)
from minifm.distributed.sampler import DistributedSampler, ShardedBatches, batch_digest
from minifm.distributed.world import World
from minifm.distributed.zero import ZeroRedundancyOptimizer, partition_parameters

__all__ = [
    "INSTALL_LINE", "DistributedConfig", "DistributedDataParallel", "DistributedError", "DistributedSampler",
    "RanksDivergedError", "ShardedBatches", "World", "ZeroRedundancyOptimizer", "allreduce_gradients",
    "batch_digest", "broadcast_optimizer_state", "broadcast_parameters", "check_parameters_agree", "get_world",
    "is_raised_on_every_rank", "launched_with_several_processes", "parameter_checksum", "partition_parameters",
    "raised_on_every_rank", "rank_and_size_from_environment",
]
