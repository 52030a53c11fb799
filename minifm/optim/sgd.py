"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (torch.optim.SGD).

For each parameter w with gradient g, at step t:
    g = g + weight_decay * w                         (L2 penalty, coupled: goes through momentum)
    buf = g  (t = 1)   else   buf = momentum * buf + (1 - dampening) * g
    g = g + momentum * buf  (nesterov)   else   g = buf
    w = w - lr * g
Everything is done in place on the parameter's array; the momentum buffer is the only state.
"""
from __future__ import annotations

import numpy as np

from minifm.optim.optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening == 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def _update(self, weight, grad, state, group):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if weight_decay != 0:
            grad = grad + weight_decay * weight
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = np.array(grad, dtype=weight.dtype, copy=True)
            else:
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        state["step"] = state.get("step", 0) + 1
        weight -= np.asarray(lr, dtype=weight.dtype) * grad
