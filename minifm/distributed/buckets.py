"""Gradient buckets: many parameters' gradients in one flat array, so one allreduce carries them all.

An allreduce costs a fixed latency plus its bytes over the bandwidth; a model has a few large and
many small parameters (biases, norms), and one message per parameter would pay the latency for
each. DistributedDataParallel therefore packs the gradients into buckets of about bucket_cap_bytes
(25 MB by default, as PyTorch) and sends each bucket as one message.

Which parameters share a bucket (`make_buckets`, PyTorch's rule): the parameters in *reverse* order
of model.parameters(), since backward reaches the last layers first, filled into a bucket until the
next one would exceed the cap; one dtype per bucket (an allreduce has one datatype); a parameter
larger than the cap has a bucket of its own. The first bucket is then complete early in backward
and its message travels while backward computes the layers below.

The flat array of a bucket with parameters p_0 .. p_{k-1} (n_i elements each):

    [ grad(p_0).ravel() | grad(p_1).ravel() | ... | grad(p_{k-1}).ravel() | used_0 ... used_{k-1} ]
      offsets[0]          offsets[1]                                        flags_start

used_i is 1 where this rank has a gradient for p_i and 0 where it has none (a parameter this rank's
batch did not reach): after the sum, used_i > 0 says whether any rank had one, so a parameter no
rank used keeps grad None, as in a single process, and one some ranks used gets the sum of theirs.
The flags travel in the same message as the gradients (no extra collective).
"""
from __future__ import annotations

import numpy as np


class GradientBucket:
    """The flat gradient array of a group of parameters of one dtype, and its progress in this step."""

    def __init__(self, index: int, params: list):
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"GradientBucket: parameters of one dtype only, got {sorted(map(str, dtypes))}")
        self.index = index
        self.params = list(params)
        self.dtype = params[0].data.dtype
        sizes = [p.data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # (k + 1,)
        self.flags_start = int(self.offsets[-1])
        self.buffer = np.zeros(self.flags_start + len(params), dtype=self.dtype)  # gradients, then used flags
        self.reset()

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes

    def reset(self) -> None:
        """Forget this step's gradients (the buffer is rewritten before its next use)."""
        self.ready = [False] * len(self.params)
        self.n_ready = 0
        self.request = None  # the pending MPI request once the bucket is sent

    @property
    def full(self) -> bool:
        return self.n_ready == len(self.params)

    @property
    def sent(self) -> bool:
        return self.request is not None

    def add(self, position: int, grad) -> None:
        """Copy the final gradient of parameter number `position` into the flat array."""
        if self.ready[position]:
            raise RuntimeError(f"the gradient of a parameter of shape {self.params[position].shape} became ready twice "
                               "before the gradients were synchronised: run every backward but the last of a step "
                               "inside no_sync(), and call finish_gradient_sync() after the last")
        if self.sent:
            raise RuntimeError(f"gradient bucket {self.index} was already sent this step")
        start, end = self.offsets[position], self.offsets[position + 1]
        if grad is None:
            self.buffer[start:end] = 0
            self.buffer[self.flags_start + position] = 0
        else:
            self.buffer[start:end] = np.asarray(grad).ravel()
            self.buffer[self.flags_start + position] = 1
        self.ready[position] = True
        self.n_ready += 1

    def add_missing(self) -> None:
        """Fill in the parameters whose gradient did not become ready in this step's synchronised backward
        (a parameter the last micro-batch did not reach): their accumulated .grad, or zeros and used = 0."""
        for position, param in enumerate(self.params):
            if not self.ready[position]:
                self.add(position, param.grad)

    def unpack(self, scale: float | None) -> None:
        """After the sum over the ranks: give each parameter its gradient (times `scale` if given), or
        grad None when no rank had one."""
        for position, param in enumerate(self.params):
            if self.buffer[self.flags_start + position] > 0:
                start, end = self.offsets[position], self.offsets[position + 1]
                grad = self.buffer[start:end].reshape(param.data.shape).copy()
                if scale is not None:
                    grad *= grad.dtype.type(scale)
                param.grad = grad
            else:
                param.grad = None


def make_buckets(params: list, cap_bytes: int) -> list[GradientBucket]:
    """Buckets of about cap_bytes over `params` in reverse order, one dtype per bucket (module docstring)."""
    if cap_bytes < 1:
        raise ValueError(f"make_buckets: cap_bytes must be >= 1, got {cap_bytes}")
    buckets: list[GradientBucket] = []
    open_groups: dict = {}  # dtype -> (parameters, bytes) of the bucket being filled
    for param in reversed(params):
        dtype = param.data.dtype
        group, size = open_groups.get(dtype, ([], 0))
        if group and size + param.data.nbytes > cap_bytes:
            buckets.append(GradientBucket(len(buckets), group))
            group, size = [], 0
        open_groups[dtype] = (group + [param], size + param.data.nbytes)
    for group, _ in open_groups.values():
        if group:
            buckets.append(GradientBucket(len(buckets), group))
    return buckets


__all__ = ["GradientBucket", "make_buckets"]
