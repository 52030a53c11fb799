"""Optimizers, learning-rate schedules and gradient clipping (torch.optim's names and semantics).

    optimizer.py  Optimizer base: param_groups, state, state_dict / load_state_dict
    sgd.py        SGD (momentum, nesterov, weight decay)
    adam.py       Adam, AdamW, param_groups_for_weight_decay
    schedules.py  constant, warmup + cosine, warmup + linear; set_lr
    clip.py       clip_grad_norm, grad_norm

Gradient accumulation needs no extra code: backward() adds into `.grad`, so calling backward on
k micro-batch losses each divided by k, then step(), equals one step on the whole batch.
"""
from minifm.optim import schedules
from minifm.optim.adam import Adam, AdamW, param_groups_for_weight_decay
from minifm.optim.clip import clip_grad_norm, grad_norm
from minifm.optim.optimizer import Optimizer
from minifm.optim.schedules import set_lr
from minifm.optim.sgd import SGD

__all__ = ["Adam", "AdamW", "Optimizer", "SGD", "clip_grad_norm", "grad_norm", "param_groups_for_weight_decay",
           "schedules", "set_lr"]
