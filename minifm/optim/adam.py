"""Adam and AdamW (torch.optim.Adam / AdamW semantics, without amsgrad).

For each parameter w with gradient g, at step t (starting at 1):
    Adam:  g = g + weight_decay * w                  (L2 penalty, coupled: goes through the moments)
    AdamW: w = w * (1 - lr * weight_decay)           (decoupled decay, Loshchilov & Hutter)
    m = beta1 * m + (1 - beta1) * g                  first moment
    v = beta2 * v + (1 - beta2) * g^2                second moment
    w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
Moments ("exp_avg", "exp_avg_sq") are kept in the parameter's dtype and updated in place. The update
itself is `minifm.kernels.adam.adam_update`: a NumPy reference (one scratch array per update) and a
compiled twin that makes one pass per parameter.

`param_groups_for_weight_decay(model, weight_decay)` builds the usual two AdamW groups: decay on
weight matrices, none on biases, normalisation weights and embeddings (GPT-2 / nanoGPT practice).
"""
from __future__ import annotations

import numpy as np

from minifm.kernels import adam as adam_kernels
from minifm.nn.layers import Embedding
from minifm.optim.optimizer import Optimizer


class Adam(Optimizer):
    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, weight, grad, state, group):
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(weight)
            state["exp_avg_sq"] = np.zeros_like(weight)
        state["step"] += 1
        # the arithmetic (one pass per parameter when compiled) lives in minifm.kernels.adam
        adam_kernels.adam_update(weight, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], lr, beta1,
                                 beta2, eps, weight_decay, self.decoupled_weight_decay)


class AdamW(Adam):
    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def param_groups_for_weight_decay(model, weight_decay: float) -> list[dict]:
    """Two groups: [{"params": matrices, "weight_decay": wd}, {"params": the rest, "weight_decay": 0}].

    No decay on: parameters with fewer than 2 dimensions (biases, norm weights) and Embedding tables
    (including a tied output head, which is the token embedding). Frozen parameters are left out.
    """
    embedding_ids = {id(module.weight) for module in model.modules() if isinstance(module, Embedding)}
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or id(param) in embedding_ids:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
