"""ZeRO stage 1: the optimizer state sharded across the ranks (Rajbhandari et al. 2020; torch's ZeroRedundancyOptimizer).

With plain data parallelism every rank keeps the whole optimizer state: Adam's two moments are
twice the model's size, on every rank. But every rank computes the same update from the same
averaged gradient, so each rank may keep the state of, and update, only its share of the
parameters, and hand the updated values to the others:

    partition_parameters: parameter i -> owner rank (greedy by size: the largest first, each to the
                          rank with the fewest elements so far; the same on every rank)
    step():   1. every rank has the averaged gradients (DistributedDataParallel)
              2. each rank's optimizer updates the parameters it owns (the others' grads set to None,
                 so the wrapped optimizer skips them and never creates their state)
              3. each rank broadcasts the parameters it owns (one message per owner and dtype)

The update of an owned parameter is the same arithmetic on the same numbers as in plain data
parallelism, and a broadcast copies bits, so ZeRO-1 gives exactly plain DP's weights (the tests
check equality, not closeness). Memory: the state of 1/N of the parameters per rank. Traffic: the
parameters once more per step (the broadcasts), on top of the gradient allreduce.

Checkpoints are the files of a single process: `consolidated(to=0)` gathers every rank's share into
rank 0's optimizer for the length of a `with` block (each rank sends its share as JSON-described
arrays, minifm/distributed/broadcast.py), so rank 0 saves the full state; a checkpoint loads on
any number of ranks (rank 0 loads the full state, broadcasts it, each rank keeps its share).

Simplifications against DeepSpeed / torch: the partition is by whole parameters (not flat slices of
equal size), the parameters are broadcast rather than all-gathered, and stage 1 only (gradients and
parameters are not sharded).
"""
from __future__ import annotations

import contextlib

import numpy as np

from minifm.distributed.broadcast import broadcast_arrays, decode_state, encode_state


def partition_parameters(params: list, world_size: int) -> list[int]:
    """The owner rank of each parameter: largest first, each to the least-loaded rank (lowest rank on ties)."""
    if world_size < 1:
        raise ValueError(f"partition_parameters: world_size must be >= 1, got {world_size}")
    owners = [0] * len(params)
    load = [0] * world_size
    for index in sorted(range(len(params)), key=lambda i: (-params[i].data.size, i)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[index] = rank
        load[rank] += params[index].data.size
    return owners


class ZeroRedundancyOptimizer:
    """ZeRO stage 1 around an existing optimizer (see the module docstring). `param_groups` are the
    wrapped optimizer's (a schedule sets the learning rate there as usual)."""

    def __init__(self, optimizer, world):
        self.optimizer = optimizer
        self.world = world
        self.params = [param for group in optimizer.param_groups for param in group["params"]]
        self.owners = partition_parameters(self.params, world.size)
        self.drop_other_state()

    @property
    def param_groups(self) -> list:
        return self.optimizer.param_groups

    def owned(self, rank: int | None = None) -> list:
        rank = self.world.rank if rank is None else rank
        return [param for param, owner in zip(self.params, self.owners) if owner == rank]

    def drop_other_state(self) -> None:
        """Keep only the state of the parameters this rank owns (after loading or receiving a full state)."""
        mine = {id(param) for param in self.owned()}
        self.optimizer.state = {param: state for param, state in self.optimizer.state.items() if id(param) in mine}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def step(self) -> None:
        """Update the owned parameters, then broadcast each rank's parameters from their owner."""
        for param, owner in zip(self.params, self.owners):
            if owner != self.world.rank:
                param.grad = None
        self.optimizer.step()
        for rank in range(self.world.size):
            broadcast_arrays([param.data for param in self.owned(rank)], self.world, root=rank,
                             what=f"the ZeRO-1 broadcast of rank {rank}'s parameters")

    @contextlib.contextmanager
    def consolidated(self, to: int = 0):
        """Inside the block, rank `to`'s optimizer holds the state of every parameter (collective: every
        rank enters it); yields the wrapped optimizer. The shards are restored on leaving."""
        index = {id(param): i for i, param in enumerate(self.params)}
        world = self.world
        if world.rank == to:
            full = dict(self.optimizer.state)
            for rank in range(world.size):
                if rank == to:
                    continue
                what = f"the ZeRO-1 gather of rank {rank}'s optimizer state"
                length = world.recv_(np.zeros(1, dtype=np.int64), rank, what)
                description = world.recv_(np.empty(int(length[0]), dtype=np.uint8), rank, what).tobytes()
                state, arrays = decode_state(description)
                for array in arrays:
                    world.recv_(array, rank, what)
                for i, values in state.items():
                    full[self.params[i]] = values
            mine = self.optimizer.state
            self.optimizer.state = full
        elif world.size > 1:
            own_state = {index[id(param)]: values for param, values in self.optimizer.state.items()}
            description, arrays = encode_state(own_state)
            what = f"the ZeRO-1 gather of the optimizer state on rank {to}"
            world.send(np.array([len(description)], dtype=np.int64), to, what)
            world.send(np.frombuffer(description, dtype=np.uint8), to, what)
            for array in arrays:
                world.send(array, to, what)
        try:
            yield self.optimizer
        finally:
            if world.rank == to:
                self.optimizer.state = mine


__all__ = ["ZeroRedundancyOptimizer", "partition_parameters"]
