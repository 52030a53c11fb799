"""DistributedDataParallel: every rank computes gradients on its own batch; allreduce makes them the average.

Data parallelism (PyTorch DDP, Horovod): each of N ranks holds the whole model, takes a different
batch, and runs forward and backward. Averaging the N gradients gives the gradient of the N
batches together, so after the same optimizer step the N copies stay identical; N ranks at batch B
train like one process at batch N * B.

The average is an allreduce: every rank contributes its gradient and receives the sum. Sending it
only after backward would leave the network idle during backward and the CPU idle during the
allreduce. As PyTorch DDP does, this wrapper overlaps them:

    backward walks the graph from the loss down to the first layer
      |  a parameter's gradient is final  ->  post-accumulate-grad hook (minifm/autograd/tensor.py)
      |                                       copies it into its bucket (minifm/distributed/buckets.py)
      |  a bucket's last gradient arrives  ->  MPI_Iallreduce of the bucket starts (non-blocking)
      |  ... backward goes on with the layers below while the message travels ...
    finish_gradient_sync(): wait for every bucket, then p.grad = sum (or average) over the ranks

MPICH moves a non-blocking collective on only inside MPI calls (it has no progress thread unless
MPIR_CVAR_ASYNC_PROGRESS=1, which spins a core), so every hook call also tests the pending
requests (`World.test_all`, a few microseconds): the messages advance each time a gradient is
ready, without a thread competing with backward for the cores.

Gradient accumulation: inside `with ddp.no_sync():` the hooks do nothing and gradients accumulate
in p.grad as in one process; the backward of the last micro-batch (outside no_sync) sends the
accumulated gradients. So k micro-batches cost one round of communication, not k.

    ddp = DistributedDataParallel(model, world)          # broadcasts rank 0's weights to every rank
    for micro_batch in micro_batches[:-1]:
        with ddp.no_sync():
            loss_fn(ddp(micro_batch)).backward()
    loss_fn(ddp(micro_batches[-1])).backward()
    ddp.finish_gradient_sync()                            # p.grad is now the average over the ranks
    optimizer.step()

`average=False` leaves the sum (the training loop divides by the total token count of all ranks
itself, so a rank with more tokens weighs more, exactly as in one process). `overlap=False` sends
every bucket after backward (for measuring what the overlap hides). `allreduce_gradients` is the
plain reference: one blocking Allreduce per parameter after backward; the tests check that the
bucketed, overlapped path gives the same bits.

Reduction order: each element is the sum of the ranks' values as MPI computes it. With 2 ranks
that is a + b, which IEEE arithmetic makes identical on both ranks and in either order, so the
result is deterministic. With more ranks MPICH's algorithm (chosen by message size) fixes how the
N terms are grouped; every rank still receives the same bits (each element is reduced once and
then distributed, or in commutative pairs), and the rounding differs from any other grouping by
the usual bound of (N - 1) * eps * sum |g_i|. The divergence check (minifm/distributed/divergence.py)
verifies that the ranks' parameters stay identical.

Simplifications against PyTorch: no forward hooks (unused parameters are found at
finish_gradient_sync from the buckets' flags, always, rather than with find_unused_parameters);
gradients are copied out of the buckets (not bucket views); buckets are fixed at construction.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from minifm.distributed.broadcast import broadcast_parameters
from minifm.distributed.buckets import make_buckets


@dataclass
class CommunicationStats:
    """What the gradient synchronisation of the last steps cost (read by the benchmark)."""

    steps: int = 0
    wait_s: float = 0.0              # time blocked in finish_gradient_sync waiting for the messages
    bytes_sent: int = 0              # bucket bytes allreduced
    buckets_sent_in_backward: int = 0  # buckets started before backward ended (overlapped)
    wait_per_step: list = field(default_factory=list)

    def reset(self) -> None:
        self.steps, self.wait_s, self.bytes_sent, self.buckets_sent_in_backward = 0, 0.0, 0, 0
        self.wait_per_step = []


class DistributedDataParallel:
    """Gradient averaging over the ranks of `world` for `module` (or a list of parameters); see the module docstring."""

    def __init__(self, module_or_params, world, bucket_cap_mb: float = 25.0, overlap: bool = True,
                 average: bool = True, broadcast: bool = True):
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb!r}")
        self.module = module_or_params if hasattr(module_or_params, "parameters") else None
        candidates = module_or_params.parameters() if self.module is not None else module_or_params
        params, seen = [], set()
        for param in candidates:
            if param.requires_grad and id(param) not in seen:  # a tied weight is one parameter
                seen.add(id(param))
                params.append(param)
        if not params:
            raise ValueError("DistributedDataParallel: no parameter requires grad")
        self.params = params
        self.world = world
        self.overlap = bool(overlap)
        self.average = bool(average)
        if broadcast:
            broadcast_parameters(self.module if self.module is not None else params, world)
        self.buckets = make_buckets(params, max(1, int(bucket_cap_mb * 1024 * 1024)))
        self._where = {}
        for bucket in self.buckets:
            for position, param in enumerate(bucket.params):
                self._where[id(param)] = (bucket, position)
        self._pending: list = []  # MPI requests of the buckets sent this step
        self._sync = True
        self.stats = CommunicationStats()
        self._handles = [param.register_post_accumulate_grad_hook(self._on_gradient_ready) for param in params]

    def __call__(self, *args, **kwargs):
        if self.module is None:
            raise TypeError("this DistributedDataParallel wraps a list of parameters, not a module to call")
        return self.module(*args, **kwargs)

    # ------------------------------------------------------------------ the hooks
    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally and send nothing (all micro-batches but the last)."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous

    def _on_gradient_ready(self, param) -> None:
        if not self._sync:
            return
        bucket, position = self._where[id(param)]
        bucket.add(position, param.grad)
        if self.overlap and bucket.full:
            self._send(bucket)
            self.stats.buckets_sent_in_backward += 1
        self.world.test_all(self._pending)  # let MPI move the messages already under way

    def _send(self, bucket) -> None:
        bucket.request = self.world.iallreduce_(bucket.buffer)
        self._pending.append(bucket.request)
        self.stats.bytes_sent += bucket.nbytes

    # ------------------------------------------------------------------ after backward
    def finish_gradient_sync(self) -> float:
        """Send what backward did not (every bucket without overlap; buckets holding a parameter the last
        backward did not reach), wait for all, and set each p.grad to the sum over the ranks (divided
        by the number of ranks with average=True). Returns the seconds spent waiting."""
        for bucket in self.buckets:
            if not bucket.sent:
                bucket.add_missing()
                self._send(bucket)
        started = time.perf_counter()
        self.world.wait_all(self._pending, "the gradient allreduce")
        waited = time.perf_counter() - started
        scale = 1.0 / self.world.size if self.average else None
        for bucket in self.buckets:
            bucket.unpack(scale)
            bucket.reset()
        self._pending = []
        self.stats.steps += 1
        self.stats.wait_s += waited
        self.stats.wait_per_step.append(waited)
        return waited

    def remove_hooks(self) -> None:
        """Unregister the gradient hooks (the parameters then train as in one process again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def allreduce_gradients(params, world, average: bool = True) -> None:
    """The plain reference: after backward, one blocking Allreduce per parameter's gradient, in order.
    A parameter without a gradient on a rank contributes zeros; one without a gradient on every rank
    keeps grad None."""
    for param in params:
        has_grad = np.array([0 if param.grad is None else 1], dtype=np.int64)
        any_rank = world.allreduce(has_grad, "max", "the plain gradient allreduce")[0]
        if not any_rank:
            continue
        grad = np.zeros_like(param.data) if param.grad is None else np.ascontiguousarray(param.grad)
        total = world.allreduce(grad, "sum", "the plain gradient allreduce")
        if average:
            total *= total.dtype.type(1.0 / world.size)
        param.grad = total


__all__ = ["CommunicationStats", "DistributedDataParallel", "allreduce_gradients"]
