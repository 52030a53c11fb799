"""DistributedSampler has torch's semantics; ShardedBatches gives each rank a disjoint share of one batch stream.

No MPI needed: a sampler or a shard is a pure function of (rank, world size, seed), so every rank is
simulated in this process.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifm.data.batches import causal_lm_batches, shuffled_batches
from minifm.distributed import DistributedSampler, ShardedBatches, batch_digest
from oracles import require


def shares(n: int, replicas: int, **options) -> list[list[int]]:
    return [list(DistributedSampler(n, replicas, rank, **options)) for rank in range(replicas)]


@given(n=st.integers(1, 60), replicas=st.integers(1, 7), seed=st.integers(0, 5), epoch=st.integers(0, 3))
def test_every_example_exactly_once_per_epoch_when_the_size_divides(n, replicas, seed, epoch):
    n = n * replicas  # divisible: no padding, nothing dropped
    samplers = [DistributedSampler(n, replicas, rank, seed=seed) for rank in range(replicas)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    parts = [list(sampler) for sampler in samplers]
    assert sorted(index for part in parts for index in part) == list(range(n))  # disjoint, together all
    assert all(len(part) == n // replicas for part in parts)


@given(n=st.integers(1, 50), replicas=st.integers(1, 7), drop_last=st.booleans())
def test_padding_and_drop_last_as_torch(n, replicas, drop_last):
    parts = shares(n, replicas, seed=3, drop_last=drop_last)
    together = [index for part in parts for index in part]
    assert len({len(part) for part in parts}) == 1  # every rank gets as many
    if drop_last:
        assert len(together) == (n // replicas) * replicas and len(set(together)) == len(together)
    else:
        assert len(together) == -(-n // replicas) * replicas and set(together) == set(range(n))  # all, a few twice


def test_the_same_shuffle_on_every_rank_and_a_new_one_each_epoch():
    first = shares(20, 4, seed=7)
    assert shares(20, 4, seed=7) == first  # the ranks compute it apart and agree
    sampler = DistributedSampler(20, 4, 0, seed=7)
    sampler.set_epoch(1)
    assert list(sampler) != first[0]


@pytest.mark.torch
@pytest.mark.parametrize("n", [1, 5, 12, 13, 31])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_indices_equal_torchs(n, replicas, drop_last):
    torch = require("torch")
    from torch.utils.data import DistributedSampler as TorchSampler

    for rank in range(replicas):
        theirs = list(TorchSampler(range(n), num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last))
        assert list(DistributedSampler(n, replicas, rank, shuffle=False, drop_last=drop_last)) == theirs


def test_sampler_refuses_bad_arguments_naming_them():
    with pytest.raises(ValueError, match="rank must be in \\[0, 1\\], got 2"):
        DistributedSampler(10, 2, 2)
    with pytest.raises(ValueError, match="num_replicas must be an integer >= 1, got 0"):
        DistributedSampler(10, 0, 0)
    with pytest.raises(ValueError, match="dataset_size must be an integer >= 0, got -1"):
        DistributedSampler(-1, 2, 0)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sharded_batch_stream_covers_every_window_exactly_once_per_epoch(world_size):
    windows = np.arange(24 * 5).reshape(24, 5)  # (n, T + 1): window i holds 5i .. 5i + 4
    batch_size = 2  # 12 batches per epoch, a multiple of 1, 2 and 3

    def stream(rng):
        while True:
            yield from causal_lm_batches(windows, batch_size, rng, drop_last=True)

    seen = []
    for rank in range(world_size):
        shard = ShardedBatches(stream(np.random.default_rng(0)), rank, world_size)
        for _ in range(12 // world_size):
            inputs, _ = next(shard)
            seen.extend(int(row[0]) // 5 for row in inputs)
    assert sorted(seen) == list(range(24))


def test_one_round_of_the_sharded_stream_is_one_big_batch_of_one_process():
    """Rank r's batch k is rows [k N B + r B, k N B + (r + 1) B) of the epoch's permutation: the N ranks'
    batches of one step together are the single process's batch of N B rows."""
    items = list(range(40))
    small = shuffled_batches(items, 4)
    big = next(iter(shuffled_batches(items, 8)(np.random.default_rng(5))))
    ranks = [next(ShardedBatches(small(np.random.default_rng(5)), rank, 2)) for rank in (0, 1)]
    assert ranks[0] + ranks[1] == big


def test_batch_digest_sees_every_part_of_a_batch():
    batch = (np.arange(6).reshape(2, 3), [{"prompt_length": 3, "chosen": [1, 2]}], "text", 1.5, None)
    assert batch_digest(batch) == batch_digest((np.arange(6).reshape(2, 3), [{"chosen": [1, 2], "prompt_length": 3}],
                                                "text", 1.5, None))
    changed = (np.arange(6).reshape(3, 2),) + batch[1:]
    assert batch_digest(changed) != batch_digest(batch)
    assert batch_digest((batch[0], [{"prompt_length": 4, "chosen": [1, 2]}]) + batch[2:]) != batch_digest(batch)
    # floats (a model's log-probabilities, rounded differently on another CPU) count by type and shape only
    assert batch_digest(batch[:3] + (1.5000001, None)) == batch_digest(batch)
    assert batch_digest(np.array([0.1, 0.2])) == batch_digest(np.array([0.1, 0.2 + 1e-16]))
    assert batch_digest(np.array([0.1, 0.2])) != batch_digest(np.array([0.1, 0.2, 0.3]))
