"""Giving each rank its own share of the data: DistributedSampler (examples) and ShardedBatches (a batch stream).

Data parallelism needs every rank to see different examples, and all of them together to see each
example once per epoch, in one shuffle that every rank agrees on without talking: every rank draws
the same permutation from the same seed and keeps its own slice.

DistributedSampler(dataset_size, num_replicas, rank, shuffle=True, seed=0, drop_last=False) is
torch.utils.data.DistributedSampler over indices 0 .. dataset_size-1, with its semantics:

    epoch order    a permutation drawn from seed + epoch (set_epoch(e) before each epoch), or 0..n-1
    drop_last=False  the order is padded with its own first indices to a multiple of num_replicas
                     (every rank gets ceil(n / num_replicas) indices; a few examples appear twice)
    drop_last=True   the order is cut to a multiple of num_replicas (floor(n / num_replicas) each;
                     up to num_replicas - 1 examples are left out of the epoch)
    rank's share     order[rank::num_replicas]: disjoint shares, together the whole (padded) order
Deviation: the permutation comes from NumPy's Generator (default_rng(seed + epoch)), not torch's, so
shuffled orders differ from torch's bit for bit; with shuffle=False the indices are torch's.

ShardedBatches(stream, rank, world_size) is the same idea one level up, and what the training loop
uses. A minifm stage hands the loop `batches(rng)`, an endless stream of shuffled batches (epoch after
epoch), not a dataset. Every rank builds the same stream from the same seed; ShardedBatches takes the
next world_size batches of it and keeps batch number `rank`:

    stream:   b0 b1 b2 b3 b4 b5 ...      (per-rank batch size B, one shuffle per epoch)
    rank 0:   b0    b2    b4             rank 1:   b1    b3    b5   (world_size 2)

So the ranks' batches are disjoint, together they are the stream itself (each example once per
epoch, as in one process), and one step of N ranks at batch B consumes exactly the examples of one
step of one process at batch N * B whose batch builder takes consecutive slices of one permutation
(causal_lm_batches, shuffled_batches): that is what makes data-parallel training equal to the big
batch in one process. Every rank draws all world_size batches of a round (and drops all but one), so
the stream's random state is the same on every rank after every step: the position in the stream
is one number, the same for any number of ranks, which a checkpoint saves and a run on another
number of ranks continues from. Drawing a batch is cheap beside a model step (slicing, or masking
for BERT), so the extra draws cost little.

batch_digest(batch) hashes a batch (arrays, lists, dicts, numbers, strings) so the ranks can check
that they draw the same stream (World.check_same); the loop does it on the first round. It hashes
every integer (token ids, lengths, labels), string and the structure, but of floating-point values
only their dtype and shape: ranks on hosts with other CPUs may compute floats derived from a model
(DPO's reference log-probabilities) with other rounding, which is not a different data stream.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np


class DistributedSampler:
    """torch.utils.data.DistributedSampler over range(dataset_size) (see the module docstring)."""

    def __init__(self, dataset_size: int, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, (int, np.integer)) or dataset_size < 0:
            raise ValueError(f"DistributedSampler: dataset_size must be an integer >= 0, got {dataset_size!r}")
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be an integer >= 1, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in [0, {num_replicas - 1}], got {rank!r}")
        self.dataset_size = int(dataset_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last and self.dataset_size % self.num_replicas != 0:
            self.num_samples = math.ceil((self.dataset_size - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(self.dataset_size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle the next iteration uses (the same on every rank)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.dataset_size)  # (n,)
        else:
            order = np.arange(self.dataset_size)
        if not self.drop_last:
            padding = self.total_size - order.size
            if padding > 0 and order.size > 0:
                repeats = math.ceil(padding / order.size)
                order = np.concatenate([order, np.tile(order, repeats)[:padding]])
        else:
            order = order[:self.total_size]
        share = order[self.rank:self.total_size:self.num_replicas]  # (num_samples,)
        return iter(int(index) for index in share)


class ShardedBatches:
    """Batch number `rank` of every round of world_size batches of `stream` (see the module docstring)."""

    def __init__(self, stream, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"ShardedBatches: rank must be in [0, {world_size - 1}], got {rank}")
        self.stream = iter(stream)
        self.rank = rank
        self.world_size = world_size
        self.last_round: list = []  # the batches of the last round (for batch_digest)

    def __iter__(self):
        return self

    def __next__(self):
        self.last_round = [next(self.stream) for _ in range(self.world_size)]
        return self.last_round[self.rank]


def batch_digest(batch) -> bytes:
    """A SHA-256 digest of a batch's content: NumPy arrays (dtype, shape, and the values unless they are
    floats), lists, tuples, dicts, strings, integers and None; floats and any other object by their
    type only (see the module docstring)."""
    digest = hashlib.sha256()
    _feed(digest, batch)
    return digest.digest()


def _feed(digest, value) -> None:
    if isinstance(value, np.ndarray):
        digest.update(f"array{value.dtype.str}{value.shape}".encode())
        if value.dtype.kind != "f":
            digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (float, np.floating)):
        digest.update(type(value).__name__.encode())
    elif isinstance(value, (str, bytes, int, bool, np.generic)) or value is None:
        digest.update(f"{type(value).__name__}:{value!r}".encode())
    else:
        digest.update(f"object:{type(value).__name__}".encode())


__all__ = ["DistributedSampler", "ShardedBatches", "batch_digest"]
