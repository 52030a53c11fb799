"""The same backward on every rank, its gradients averaged four ways; rank 0 writes what it found as JSON.

    bucketed      DistributedDataParallel, many small buckets, each sent during backward (overlap)
    one bucket    DistributedDataParallel with the default 25 MB: one bucket, sent when backward ends
    no overlap    DistributedDataParallel, small buckets, all sent after backward
    plain         allreduce_gradients: one blocking Allreduce per parameter after backward (the reference)
    accumulated   two micro-batches, the first under no_sync(), against the plain sum of both

Two extra parameters test the "used" flags: `rank0_only` enters the loss on rank 0 alone (its
gradient is rank 0's, halved by the average), `unused` enters no rank's loss (grad stays None).
"""
import json
import sys

import numpy as np

import minifm.functional as F
from minifm.distributed import DistributedDataParallel, allreduce_gradients, get_world
from minifm.models import GPT, GPTConfig
from minifm.nn import Parameter

world = get_world()
model = GPT(GPTConfig(vocab_size=40, block_size=8, n_layer=3, n_head=2, n_embd=16, dropout=0.0, seed=0))
model.to(np.float64)
rank0_only = Parameter(np.ones(3))
unused = Parameter(np.ones(2))
params = [p for p in model.parameters() if p.requires_grad] + [rank0_only, unused]


def batch(rng):
    return rng.integers(0, 40, (3, 8)), rng.integers(0, 40, (3, 8))


def backward(micro: int = 0) -> None:
    inputs, targets = batch(np.random.default_rng(100 * world.rank + micro))  # a different batch per rank
    loss = F.cross_entropy(model(inputs), targets)
    if world.rank == 0:
        loss = loss + (rank0_only * rank0_only).sum()
    loss.backward()


def zero_grads() -> None:
    for param in params:
        param.grad = None


def grads() -> list:
    return [None if p.grad is None else p.grad.copy() for p in params]


def with_ddp(bucket_mb: float, overlap: bool, micro_batches: int = 1):
    zero_grads()
    ddp = DistributedDataParallel(params, world, bucket_cap_mb=bucket_mb, overlap=overlap)
    for micro in range(micro_batches - 1):
        with ddp.no_sync():
            backward(micro)
    backward(micro_batches - 1)
    ddp.finish_gradient_sync()
    ddp.remove_hooks()
    return grads(), len(ddp.buckets), ddp.stats.buckets_sent_in_backward


def plain(micro_batches: int = 1):
    zero_grads()
    for micro in range(micro_batches):
        backward(micro)
    allreduce_gradients(params, world)
    return grads()


def same(a: list, b: list) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
               for x, y in zip(a, b))


reference = plain()
bucketed, n_buckets, sent_in_backward = with_ddp(0.001, overlap=True)
single, n_single, _ = with_ddp(25.0, overlap=True)
late, _, late_sent = with_ddp(0.001, overlap=False)
accumulated, _, _ = with_ddp(0.001, overlap=True, micro_batches=2)
reference_accumulated = plain(micro_batches=2)
local = None
zero_grads()
backward()
local = rank0_only.grad.copy() if rank0_only.grad is not None else None
facts = {
    "buckets": n_buckets, "buckets_sent_in_backward": sent_in_backward, "single_bucket_count": n_single,
    "no_overlap_sent_in_backward": late_sent,
    "bucketed_equals_plain": same(bucketed, reference), "single_equals_plain": same(single, reference),
    "no_overlap_equals_plain": same(late, reference), "accumulated_equals_plain": same(accumulated,
                                                                                      reference_accumulated),
    "unused_grad_is_none": reference[-1] is None and bucketed[-1] is None,
    "rank0_only_grad": None if bucketed[-2] is None else bucketed[-2].tolist(),
    "rank0_only_local": None if local is None else local.tolist(),
}
if world.rank == 0:
    json.dump(facts, open(sys.argv[1], "w"))
