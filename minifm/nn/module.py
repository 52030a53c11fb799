"""`Module` and `Parameter`: the containers every layer and model is built from, with PyTorch's API.

A `Module` registers what is assigned to it: `self.weight = Parameter(...)` records a parameter,
`self.fc = Linear(...)` records a submodule, so `parameters()`, `named_parameters()`,
`state_dict()` and `load_state_dict()` find them without any bookkeeping by the layer's author.
Names are dotted paths ("blocks.0.attn.q_proj.weight"), exactly as torch spells them.

Simplifications against torch: no hooks, no devices; a state dict maps names to `np.ndarray`s
(references to the live arrays unless `copy=True`); `to(dtype)` converts floating parameters
and buffers in place (the Parameter objects stay the same, so an optimizer keeps working).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, NamedTuple

import numpy as np

from minifm.autograd.tensor import Tensor, data_of


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module (requires_grad=True unless told otherwise).

    Wraps the given array without copying; integer arrays are refused (they cannot carry gradients).
    """

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        array = np.asarray(data_of(data))
        if array.dtype.kind != "f":
            raise TypeError(f"Parameter needs floating-point data, got dtype {array.dtype}")
        if array.dtype not in (np.float32, np.float64):
            array = array.astype(np.float32)
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of all layers and models (see the module docstring)."""

    def __init__(self):
        # the registries themselves are stored with object.__setattr__, past our __setattr__,
        # which needs them to exist before it can file anything
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        self.training = True

    # ------------------------------------------------------------------ registration
    # Assigning is registering: `self.x = value` files a Parameter under _parameters, a Module under
    # _modules and a value for a registered buffer name under _buffers; anything else (numbers,
    # lists, dicts, generators) is a plain attribute. Only the register_* methods and __setattr__
    # itself write with object.__setattr__, after filing the value.
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name!r}")
        params, modules, buffers = self._parameters, self._modules, self._buffers
        if isinstance(value, Parameter):
            modules.pop(name, None)
            buffers.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} (need a Parameter or None)")
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to submodule {name!r} (need a Module or None)")
            modules[name] = None
        elif name in buffers:
            buffers[name] = None if value is None else np.asarray(data_of(value))
            value = buffers[name]
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}) needs a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, array, persistent: bool = True) -> None:
        """A non-trainable array saved in the state dict (unless persistent=False), e.g. running statistics."""
        array = None if array is None else np.asarray(data_of(array))
        self._buffers[name] = array
        if not persistent:
            self._non_persistent.add(name)
        object.__setattr__(self, name, array)

    def add_module(self, name: str, module: "Module | None") -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}) needs a Module, got {type(module).__name__}")
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # ------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "", memo: set | None = None) -> Iterator[tuple[str, "Module"]]:
        """(dotted name, module) for this module and every descendant, each module once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator["Module"]:
        for _, child in self.named_children():
            yield child

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs; a parameter shared by two modules is listed once (first name)."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, param in module._parameters.items():
                if param is None or (remove_duplicate and id(param) in seen):
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buffer

    def num_parameters(self, trainable_only: bool = False) -> int:
        return int(sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only))

    def get_submodule(self, target: str) -> "Module":
        """The submodule at dotted path `target` ("" is this module)."""
        module = self
        if target == "":
            return module
        walked = []
        for part in target.split("."):
            child = module._modules.get(part)
            if child is None:
                where = ".".join(walked) or type(self).__name__
                raise AttributeError(
                    f"{where} has no submodule {part!r} (looking up {target!r}); children: {list(module._modules)}"
                )
            walked.append(part)
            module = child
        return module

    def set_submodule(self, target: str, module: "Module") -> None:
        """Replace the submodule at dotted path `target` (which must exist) by `module`."""
        if not isinstance(module, Module):
            raise TypeError(f"set_submodule({target!r}) needs a Module, got {type(module).__name__}")
        parent_name, _, child_name = target.rpartition(".")
        parent = self.get_submodule(parent_name)
        if child_name not in parent._modules:
            raise AttributeError(f"{parent_name or type(self).__name__} has no submodule {child_name!r} to replace")
        setattr(parent, child_name, module)

    def get_parameter(self, target: str) -> Parameter:
        module_name, _, param_name = target.rpartition(".")
        module = self.get_submodule(module_name)
        if module._parameters.get(param_name) is None:
            raise AttributeError(f"{module_name or type(self).__name__} has no parameter {param_name!r}")
        return module._parameters[param_name]

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    def apply(self, fn) -> "Module":
        """Call fn(module) on every descendant (children first) and on self, like torch."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, dtype) -> "Module":
        """Convert every floating parameter and buffer to `dtype` in place (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"Module.to supports float32 and float64, got {dtype}")
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.data = param.data.astype(dtype, copy=False)  # no copy when already `dtype`
                    param.grad = None if param.grad is None else param.grad.astype(dtype, copy=False)
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and buffer.dtype.kind == "f":
                    setattr(module, name, buffer.astype(dtype, copy=False))
        return self

    def float(self) -> "Module":
        return self.to(np.float32)

    def double(self) -> "Module":
        return self.to(np.float64)

    # ------------------------------------------------------------------ state
    def state_dict(self, copy: bool = False) -> "OrderedDict[str, np.ndarray]":
        """name -> array for every parameter and persistent buffer.

        The arrays are the live ones (an optimizer step changes them) unless `copy=True`.
        Shared parameters appear once, under their first name.
        """
        state = OrderedDict()
        for name, param in self.named_parameters():
            state[name] = param.data.copy() if copy else param.data
        for module_name, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is None or name in module._non_persistent:
                    continue
                key = f"{module_name}.{name}" if module_name else name
                state[key] = buffer.copy() if copy else buffer
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into the parameters/buffers with the same names (in place).

        Shapes must match exactly (error names the key and both shapes); values are cast to each
        parameter's dtype. With strict=True, missing or unexpected keys raise a KeyError listing them.
        """
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: missing keys {missing}, unexpected keys {unexpected} "
                f"(strict=True; pass strict=False to load the common keys)"
            )
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            value = np.asarray(data_of(value))
            if value.shape != target.shape:
                raise ValueError(
                    f"load_state_dict: shape mismatch for {key!r}: checkpoint has {value.shape}, model has {target.shape}"
                )
            if value.dtype.kind not in "fiub":
                raise TypeError(f"load_state_dict: {key!r} has non-numeric dtype {value.dtype}")
            np.copyto(target, value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self.named_children():
            child_lines = repr(child).split("\n")
            lines.append(f"  ({name}): " + "\n  ".join(child_lines))
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of submodules registered under the names "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(items[index])
        return items[index]

    def __setitem__(self, index: int, module: Module) -> None:
        name = list(self._modules)[index]
        setattr(self, name, module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))


class ModuleDict(Module):
    """A dict of submodules registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in (modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, name: str) -> Module:
        return self._modules[name]

    def __setitem__(self, name: str, module: Module) -> None:
        self.add_module(name, module)

    def __contains__(self, name: str) -> bool:
        return name in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def __iter__(self):
        return iter(self._modules)


class Sequential(Module):
    """Modules applied one after another."""

    def __init__(self, *modules: Module):
        super().__init__()
        for index, module in enumerate(modules):
            self.add_module(str(index), module)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
