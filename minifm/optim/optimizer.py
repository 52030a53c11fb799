"""`Optimizer`: the base class shared by SGD, Adam and AdamW (torch.optim's structure).

An optimizer holds `param_groups`, a list of dicts each with "params" (a list of Parameters) and
its hyper-parameters ("lr", "weight_decay", ...), and `state`, a dict Parameter -> dict of arrays
(momentum buffers, Adam moments) plus the per-parameter "step" count. `step()` updates every
parameter whose `.grad` is set, in place; parameters with grad None are skipped.

state_dict() uses torch's layout: {"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}
where a parameter's index is its position across the groups in order; load_state_dict() checks that
the groups and shapes match before copying anything.
"""
from __future__ import annotations

import copy

import numpy as np


class Optimizer:
    defaults: dict

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = {}
        self.param_groups: list[dict] = []
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"a parameter group must be a dict with a 'params' list, got {group!r:.80}")
        params = group["params"]
        params = [params] if hasattr(params, "data") and hasattr(params, "grad") else list(params)
        for param in params:
            if not (hasattr(param, "data") and hasattr(param, "grad")):
                raise TypeError(f"optimizers take Parameters/Tensors, got {type(param).__name__}")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for {type(self).__name__}; valid: {sorted(self.defaults)}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("a parameter appears in more than one parameter group")
        full = dict(self.defaults)
        full.update({key: value for key, value in group.items() if key != "params"})
        full["params"] = params
        self._check_group(full)
        self.param_groups.append(full)

    def _check_group(self, group: dict) -> None:
        if group["lr"] < 0:
            raise ValueError(f"lr must be >= 0, got {group['lr']}")
        if group.get("weight_decay", 0.0) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {group['weight_decay']}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none or param.grad is None:
                    param.grad = None
                else:
                    param.grad[...] = 0

    def step(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.shape != param.data.shape:
                    raise ValueError(f"gradient shape {grad.shape} does not match parameter shape {param.data.shape}")
                state = self.state.setdefault(param, {})
                self._update(param.data, grad, state, group)

    def _update(self, weight: np.ndarray, grad: np.ndarray, state: dict, group: dict) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def _all_params(self) -> list:
        return [param for group in self.param_groups for param in group["params"]]

    def state_dict(self) -> dict:
        index = {id(param): i for i, param in enumerate(self._all_params())}
        state = {}
        for param, values in self.state.items():
            state[index[id(param)]] = {
                key: (value.copy() if isinstance(value, np.ndarray) else value) for key, value in values.items()
            }
        groups = []
        for group in self.param_groups:
            saved = {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}
            saved["params"] = [index[id(param)] for param in group["params"]]
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"optimizer state has {len(groups)} parameter groups, this optimizer has {len(self.param_groups)}"
            )
        for number, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"parameter group {number}: state has {len(saved['params'])} parameters, "
                    f"optimizer has {len(group['params'])}"
                )
        params = self._all_params()
        new_state = {}
        for key, values in state_dict["state"].items():
            index = int(key)
            if not 0 <= index < len(params):
                raise ValueError(f"optimizer state refers to parameter {index}, but there are {len(params)}")
            param = params[index]
            restored = {}
            for name, value in values.items():
                if isinstance(value, np.ndarray) and value.ndim > 0:
                    if value.shape != param.data.shape:
                        raise ValueError(
                            f"optimizer state {name!r} of parameter {index} has shape {value.shape}, "
                            f"the parameter has {param.data.shape}"
                        )
                    value = value.astype(param.data.dtype, copy=True)
                elif isinstance(value, np.ndarray):
                    value = value.item()
                restored[name] = value
            new_state[param] = restored
        for saved, group in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = copy.deepcopy(value)
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for number, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {number}: {len(group['params'])} params, {options}")
        return "\n".join(lines) + "\n)"
