"""`TunerLayer`: what every PEFT wrapper of a Linear layer shares (LoRA, IA3, bottleneck adapters).

A tuner layer keeps the original layer as `base_layer` (frozen) and holds one set of extra
parameters per named adapter in `AdapterDict` containers, so several adapters can live side by
side and `set_adapter(name)` picks the one that runs and trains (PEFT's multi-adapter model).

Merging (LoRA and IA3 only: their change to the layer is linear in the input) writes the adapter
into base_layer.weight/bias in place. Simplification that makes `unmerge()` exact: the first merge
keeps a copy of the pre-merge weights and `unmerge()` restores that copy bit for bit, where PEFT
subtracts the delta again (which leaves rounding error of order eps * |W|). The price is one extra
copy of each merged weight while merged.
"""
from __future__ import annotations

import numpy as np

from minifm.nn import Module


class AdapterDict(Module):
    """A dict of submodules keyed by adapter name, registered as attributes (state-dict key "<name>.*")."""

    def __init__(self):
        super().__init__()
        self._adapter_names = []

    def __setitem__(self, name: str, module: Module) -> None:
        if not name.isidentifier():
            raise ValueError(f"adapter name must be a Python identifier, got {name!r}")
        setattr(self, name, module)
        if name not in self._adapter_names:
            self._adapter_names.append(name)

    def __getitem__(self, name: str) -> Module:
        if name not in self._adapter_names:
            raise KeyError(f"no adapter named {name!r}; adapters: {self._adapter_names}")
        return getattr(self, name)

    def __delitem__(self, name: str) -> None:
        self[name]  # raises KeyError with the list when absent
        delattr(self, name)
        self._adapter_names.remove(name)

    def __contains__(self, name: str) -> bool:
        return name in self._adapter_names

    def keys(self) -> list[str]:
        return list(self._adapter_names)

    def forward(self, *args, **kwargs):
        raise RuntimeError("AdapterDict is a container; call one of its entries")


class TunerLayer(Module):
    """Base class of the wrappers around a Linear layer (see the module docstring)."""

    adapter_container_names: tuple[str, ...] = ()
    can_merge = True

    def __init__(self, base_layer: Module):
        super().__init__()
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.active_adapters = []
        self.merged_adapters = []
        self.disable_adapters = False
        self._merge_backup = None

    @property
    def in_features(self) -> int:
        return self.base_layer.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.base_layer.weight.shape[0]

    @property
    def weight(self):
        """The base layer's weight, so code that reads `layer.weight` keeps working on a wrapped layer."""
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    def adapter_names(self) -> list[str]:
        first = getattr(self, self.adapter_container_names[0])
        return first.keys()

    def set_adapter(self, names) -> None:
        """Make `names` (one name or a list) the adapters that run and train; the others are frozen."""
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            if name not in self.adapter_names():
                raise ValueError(f"unknown adapter {name!r}; this layer has {self.adapter_names()}")
        if self.merged:
            self.unmerge()
        for container_name in self.adapter_container_names:
            container = getattr(self, container_name)
            for name in container.keys():
                entry = container[name]  # a sub-module (LoRA's A, an adapter) or a bare Parameter (token rows)
                if isinstance(entry, Module):
                    entry.requires_grad_(name in names)
                else:
                    entry.requires_grad = name in names
        self.active_adapters[:] = names

    def delete_adapter(self, name: str) -> None:
        if self.merged:
            self.unmerge()
        for container_name in self.adapter_container_names:
            del getattr(self, container_name)[name]
        if name in self.active_adapters:
            self.active_adapters.remove(name)

    # ------------------------------------------------------------------ merging
    def merged_weight_and_bias(self, name: str, weight: np.ndarray, bias):
        """(weight, bias) of the base layer with adapter `name` folded in (subclasses)."""
        raise NotImplementedError

    def merge(self, adapter_names=None) -> None:
        """Fold the active adapters (or `adapter_names`) into base_layer.weight/bias in place."""
        if not self.can_merge:
            raise NotImplementedError(f"{type(self).__name__} is non-linear in its input and cannot be merged")
        names = list(self.active_adapters if adapter_names is None else adapter_names)
        weight = self.base_layer.weight
        bias = self.base_layer.bias
        if self._merge_backup is None:
            self._merge_backup = (weight.data.copy(), None if bias is None else bias.data.copy())
        for name in names:
            if name in self.merged_adapters:
                continue
            new_weight, new_bias = self.merged_weight_and_bias(name, weight.data, None if bias is None else bias.data)
            if not np.all(np.isfinite(new_weight)):
                raise FloatingPointError(f"merging adapter {name!r} produced non-finite weights")
            weight.data[...] = new_weight  # in place: optimizers keep pointing at the same array
            if bias is not None and new_bias is not None:
                bias.data[...] = new_bias
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Restore the exact pre-merge base weights (see the module docstring)."""
        if not self.merged:
            return
        saved_weight, saved_bias = self._merge_backup
        self.base_layer.weight.data[...] = saved_weight
        if saved_bias is not None:
            self.base_layer.bias.data[...] = saved_bias
        self._merge_backup = None
        self.merged_adapters.clear()

    def base_forward(self, x):
        return self.base_layer(x)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, adapters={self.adapter_names()}, active={self.active_adapters}"
