"""`TunerLayer`: what every PEFT wrapper of a Linear layer shares (LoRA, IA3, bottleneck adapters).

A tuner layer keeps the original layer as `base_layer` (frozen) and holds one set of extra
parameters per named adapter in `AdapterDict` containers, so several adapters can live side by
side and `set_adapter(name)` picks the one that runs and trains (PEFT's multi-adapter model).

Merging (LoRA and IA3 only: their change to the layer is linear in the input) writes the adapter
into base_layer.weight/bias in place. Simplification that makes `unmerge()` exact: the first merge
keeps a copy of the pre-merge weights and `unmerge()` restores that copy bit for bit, where PEFT
subtracts the delta again (which leaves rounding error of order eps * |W|). The price is one extra
copy of each merged weight while merged.

Quantized base layers (QLoRA-style training, Dettmers et al. 2023, with GGUF's Q8_0 / Q4_0 / Q4_1 blocks
instead of NF4): a wrapper also takes a frozen `QuantizedLinear` (minifm/nn/quantized.py). The packed
blocks stay as they are; the base product runs through the quantized kernels and its backward gives
only the input gradient (through the dequantized weight), while the adapter's own parameters are
float32 and train as usual. Merging into such a layer cannot be exact (the sum W + delta has to be
rounded to the block format again), so `merge()` refuses it with an error naming the layer unless
asked for `requantize=True`: dequantize W, fold the adapter in, quantize the result to the layer's
own format (the merged layer then differs from base + adapter by that rounding). `unmerge()` still
restores the original blocks bit for bit (the backup is the packed bytes, 18-34 bytes per 32 weights).
"""
from __future__ import annotations

import numpy as np

from minifm.nn import Module
from minifm.nn.quantized import QuantizedLinear
from minifm.pretrained.quants import quantize


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
        if self.base_is_quantized:
            return self.base_layer.in_features  # its `weight` holds packed bytes, not (out, in) values
        return self.base_layer.weight.shape[1]

    @property
    def out_features(self) -> int:
        if self.base_is_quantized:
            return self.base_layer.out_features
        return self.base_layer.weight.shape[0]

    @property
    def base_is_quantized(self) -> bool:
        """True when the base layer keeps its weight in a GGUF block format (a frozen QuantizedLinear)."""
        return isinstance(self.base_layer, QuantizedLinear)

    @property
    def compute_dtype(self) -> np.dtype:
        """The dtype the adapter's parameters get: the base weight's, float32 over a quantized base."""
        return np.dtype(np.float32) if self.base_is_quantized else self.base_layer.weight.dtype

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

    def merge(self, adapter_names=None, requantize: bool = False, layer_name: str | None = None) -> None:
        """Fold the active adapters (or `adapter_names`) into base_layer.weight/bias in place.

        A quantized base layer needs requantize=True (see the module docstring); without it the
        ValueError names the layer (`layer_name`, else the weight's tensor name)."""
        if not self.can_merge:
            raise NotImplementedError(f"{type(self).__name__} is non-linear in its input and cannot be merged")
        names = list(self.active_adapters if adapter_names is None else adapter_names)
        if self.base_is_quantized:
            self._merge_requantized(names, requantize, layer_name)
            return
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

    def _merge_requantized(self, names: list[str], requantize: bool, layer_name: str | None) -> None:
        """merge() on a QuantizedLinear base: dequantize, fold the adapters in, quantize to the same format."""
        base = self.base_layer
        names = [name for name in names if name not in self.merged_adapters]
        if not names:
            return
        if not requantize:
            where = layer_name or base._name
            raise ValueError(f"cannot merge adapter(s) {names} into {where!r}: its weight is frozen {base.weight_type} "
                             f"blocks, and W + delta would have to be rounded to {base.weight_type} again. Keep the "
                             f"adapter apart (save it and load it onto the base), merge with requantize=True to "
                             f"accept that rounding, or load the base with dtype='float32' to merge exactly")
        if self._merge_backup is None:
            self._merge_backup = (base.weight.copy(), None if base.bias is None else base.bias.data.copy())
        weight = base.dequantized_weight()  # (out, in) float32
        bias = None if base.bias is None else base.bias.data.copy()
        for name in names:
            weight, new_bias = self.merged_weight_and_bias(name, weight, bias)
            bias = bias if new_bias is None else new_bias
        if not np.all(np.isfinite(weight)):
            raise FloatingPointError(f"merging adapter(s) {names} produced non-finite weights")
        base.weight[...] = quantize(weight, base.weight_type, base._name).data  # in place: same (out, bytes) blocks
        if bias is not None:
            base.bias.data[...] = bias
        self.merged_adapters.extend(names)  # only once the layer holds them

    def unmerge(self) -> None:
        """Restore the exact pre-merge base weights (see the module docstring)."""
        if not self.merged:
            return
        saved_weight, saved_bias = self._merge_backup
        if self.base_is_quantized:
            self.base_layer.weight[...] = saved_weight  # the packed bytes (a buffer, not a Parameter)
        else:
            self.base_layer.weight.data[...] = saved_weight
        if saved_bias is not None:
            self.base_layer.bias.data[...] = saved_bias
        self._merge_backup = None
        self.merged_adapters.clear()

    def base_forward(self, x):
        return self.base_layer(x)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, adapters={self.adapter_names()}, active={self.active_adapters}"
