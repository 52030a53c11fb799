"""Broadcasts from one rank: the initial weights and the optimizer state, so every rank starts equal.

Data-parallel training keeps one copy of the model per rank and relies on the copies staying
identical: every rank applies the same averaged gradient to the same weights. They must therefore
start identical, whatever each rank did before (another seed, a checkpoint that only rank 0 read):

    broadcast_parameters(model, world)          every parameter and persistent buffer of rank 0's
                                                 state_dict() into every rank's (in place)
    broadcast_optimizer_state(optimizer, world)  rank 0's optimizer.state_dict() (moments, step counts,
                                                 the groups' hyper-parameters) into every rank's

Arrays travel grouped by dtype, one flat message per dtype (`broadcast_arrays`). The optimizer
state's structure (which parameter has which moments of which shape, the scalars, the groups)
travels first as JSON bytes (`encode_state` / `decode_state`, also used by ZeRO to gather the
sharded state): nothing is pickled.
"""
from __future__ import annotations

import json

import numpy as np


def broadcast_arrays(arrays: list, world, root: int = 0, what: str = "a broadcast of arrays") -> None:
    """Overwrite every array of `arrays` with root's values, one message per dtype (in place; every rank
    passes arrays of the same shapes and dtypes in the same order)."""
    if world.size == 1 or not arrays:
        return
    by_dtype: dict = {}
    for array in arrays:
        by_dtype.setdefault(np.dtype(array.dtype), []).append(array)
    for dtype in sorted(by_dtype, key=str):
        group = by_dtype[dtype]
        if world.rank == root:
            flat = np.concatenate([np.ascontiguousarray(a).ravel() for a in group]) if group else np.zeros(0, dtype)
        else:
            flat = np.empty(sum(a.size for a in group), dtype=dtype)
        world.broadcast_(flat, root, what)
        if world.rank != root:
            start = 0
            for array in group:
                np.copyto(array, flat[start:start + array.size].reshape(array.shape))
                start += array.size


def broadcast_parameters(model_or_params, world, root: int = 0) -> None:
    """Every rank's parameters and persistent buffers := root's (a Module, or a list of Parameters)."""
    if hasattr(model_or_params, "state_dict"):
        arrays = list(model_or_params.state_dict().values())  # the live arrays (Module.state_dict does not copy)
    else:
        arrays = [param.data for param in model_or_params]
    broadcast_arrays(arrays, world, root, "the broadcast of the initial weights")


# ---------------------------------------------------------------------------- optimizer state
def encode_state(state: dict) -> tuple[bytes, list]:
    """{param index: {name: array or scalar}} -> (JSON bytes describing it, the arrays in that order)."""
    description, arrays = {}, []
    for index in sorted(state, key=int):
        entry = {}
        for name in sorted(state[index]):
            value = state[index][name]
            if isinstance(value, np.ndarray):
                entry[name] = {"dtype": value.dtype.str, "shape": list(value.shape)}
                arrays.append(value)
            else:
                entry[name] = {"value": value.item() if isinstance(value, np.generic) else value}
        description[str(int(index))] = entry
    return json.dumps(description, sort_keys=True).encode("utf-8"), arrays


def decode_state(data: bytes) -> tuple[dict, list]:
    """The inverse of encode_state, with empty arrays to be filled: ({index: {name: value}}, the arrays)."""
    state, arrays = {}, []
    description = json.loads(data.decode("utf-8"))
    for index in sorted(description, key=int):  # encode_state's order (JSON sorts the keys as text)
        entry = description[index]
        values = {}
        for name in sorted(entry):
            spec = entry[name]
            if "value" in spec:
                values[name] = spec["value"]
            else:
                array = np.empty(tuple(spec["shape"]), dtype=np.dtype(spec["dtype"]))
                values[name] = array
                arrays.append(array)
        state[int(index)] = values
    return state, arrays


def broadcast_optimizer_state(optimizer, world, root: int = 0) -> None:
    """Every rank's optimizer state := root's (torch's state_dict layout; see the module docstring)."""
    if world.size == 1:
        return
    what = "the broadcast of the optimizer state"
    if world.rank == root:
        saved = optimizer.state_dict()
        state_bytes, arrays = encode_state(saved["state"])
        groups_bytes = json.dumps(saved["param_groups"]).encode("utf-8")
    else:
        state_bytes = groups_bytes = None
    state_bytes = world.broadcast_bytes(state_bytes, root, what)
    groups_bytes = world.broadcast_bytes(groups_bytes, root, what)
    if world.rank != root:
        state, arrays = decode_state(state_bytes)
    broadcast_arrays(arrays, world, root, what)
    if world.rank != root:
        groups = json.loads(groups_bytes.decode("utf-8"))
        for saved_group, group in zip(groups, optimizer.param_groups):
            for key, value in saved_group.items():
                if isinstance(group.get(key), tuple) and isinstance(value, list):  # JSON has no tuples (betas)
                    saved_group[key] = tuple(value)
        optimizer.load_state_dict({"state": state, "param_groups": groups})


__all__ = ["broadcast_arrays", "broadcast_optimizer_state", "broadcast_parameters", "decode_state", "encode_state"]
