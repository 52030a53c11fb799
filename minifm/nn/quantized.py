"""Frozen layers whose weights stay in a GGUF block format: QuantizedLinear and QuantizedEmbedding.

    QuantizedLinear     y = x @ dequantize(W)^T + b      W (out, in) kept as Q8_0 / Q4_0 / Q4_1 blocks
    QuantizedEmbedding  weight[ids], one looked-up row dequantized at a time; as a tied output head,
                        logits = h @ dequantize(weight)^T through the same quantized product

The packed block bytes are the layer's `weight` buffer: uint8 (rows, bytes per row), the stored form
of minifm/pretrained/quants.py (row r's blocks are weight[r]), with the format in `weight_type`. A
buffer, not a Parameter: it is in state_dict() under the usual name ("blocks.0.attn.q_proj.weight"),
so a checkpoint writes and reads the blocks as they are, but no optimizer ever sees it, and no
float32 copy of it is kept anywhere (memory: 34 / 18 / 20 bytes per 32 weights instead of 128).

Products go through minifm.kernels.quantized (a fused dequantize-and-dot for a few rows, a
dequantize-per-tile product for prefill; the NumPy reference is x @ dequantize(W)^T). Inputs must be
float32: the quantized kernels run in float32, so a quantized model's compute dtype is float32.

Training: the weights are frozen. Autograd gives the gradient with respect to the input,
grad_x = grad_y @ dequantize(W) (computed a slice of rows at a time, so backward holds one slice of
float32 weights, not the matrix), and for the bias when it requires grad. So adapters placed around
or before these layers (LoRA-style float32 branches, prompt tuning) train through them, the QLoRA
recipe. There is no weight gradient: `requires_grad_(True)` on these layers raises, and a GPT with
quantized weights has every parameter frozen (models/gpt.py), so a full fine-tune of it stops at
once with "no trainable parameters" instead of silently training only the norms. To fine-tune
every weight, load the model in float32 (dtype="float32").

Int8 activations (`quantize_input`, off by default): the input of every product is first rounded to
8 bits per block of 32 values, as llama.cpp does for its Q4/Q8 dot products; the decoding kernel then
multiplies integers (a SmolLM2 decoding step's products about 1.5x faster, its whole decode 1.25x) at the
cost of a rounding error in every product (minifm/kernels/quantized.py). `set_int8_activations(model, True)` switches every quantized layer of a
model; GPTConfig.int8_activations does it for a GPT.

Simplifications: no weight gradient (see above); an embedding lookup carries no gradient either; the
embedding dequantizes the rows it looks up on every call (cheap: one row per token).
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.function import Context, Function
from minifm.autograd.ops.linalg import column_sums
from minifm.autograd.tensor import Tensor, data_of
from minifm.kernels.quantized import quantized_matmul
from minifm.nn.layers import Embedding, Linear
from minifm.nn.module import Module, Parameter
from minifm.pretrained.quants import QUANTIZED_TYPES, QuantizedTensor, dequantize, quantize, stored_row_bytes

# backward dequantizes the weight this many rows at a time (576 x 1536 of SmolLM2's down_proj is
# 3.5 MB of float32 in one slice; its 49152-row tied head takes 12 slices of 16 MB)
BACKWARD_ROWS = 4096


def check_weight_type(type_name, argument: str = "weight_type") -> str:
    """The GGML spelling ("Q4_1") of a quantized type given in any case; a ValueError naming `argument`."""
    name = str(type_name).upper()
    if name not in QUANTIZED_TYPES:
        raise ValueError(f"{argument} must be one of {[t.lower() for t in QUANTIZED_TYPES]}, got {type_name!r}")
    return name


def _frozen_error(layer: Module) -> RuntimeError:
    return RuntimeError(f"{type(layer).__name__} holds frozen {layer.weight_type} weights: they have no gradient "
                        f"and cannot be trained. Train adapters on top (LoRA), or load the model with "
                        f"dtype='float32' to fine-tune every weight")


class QuantizedLinearFunction(Function):
    """y = x @ dequantize(weight)^T + bias; x (..., in) float32, weight a QuantizedTensor (out, in) given
    as an option (it is not an input: it has no gradient), bias (out,) or None."""

    @staticmethod
    def forward(ctx, x, bias=None, *, weight: QuantizedTensor, quantize_input: bool = False):
        out_features, in_features = weight.shape
        if x.shape[-1] != in_features:
            raise ValueError(f"quantized linear {weight.name!r}: input's last dimension {x.shape[-1]} (shape "
                             f"{x.shape}) does not match in_features {in_features}")
        if x.dtype != np.float32:
            raise TypeError(f"quantized linear {weight.name!r}: input must be float32 (quantized weights compute "
                            f"in float32), got {x.dtype}")
        ctx.weight, ctx.x_shape, ctx.has_bias = weight, x.shape, bias is not None
        out = quantized_matmul(x.reshape(-1, in_features), weight, quantize_input=quantize_input)  # (N, out)
        out = out.reshape(*x.shape[:-1], out_features)  # (..., out)
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def backward(ctx, grad):
        weight = ctx.weight
        out_features, in_features = weight.shape
        grad_2d = grad.reshape(-1, out_features)  # (N, out)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = np.zeros((grad_2d.shape[0], in_features), dtype=np.float32)  # (N, in)
            for start in range(0, out_features, BACKWARD_ROWS):
                stop = min(start + BACKWARD_ROWS, out_features)
                rows = dequantize(weight.data[start:stop], weight.type, weight.name)  # (rows, in) float32
                grad_x += grad_2d[:, start:stop] @ rows
            grad_x = grad_x.reshape(ctx.x_shape)
        if not ctx.has_bias:
            return grad_x
        return grad_x, column_sums(grad_2d) if ctx.needs_input_grad[1] else None  # (out,)


def quantized_linear(x, weight: QuantizedTensor, bias=None, quantize_input: bool = False):
    """x @ dequantize(weight)^T + bias as an autograd node (gradient for x and bias, none for weight).
    quantize_input: round x to int8 per block of 32 first (the module docstring); the gradient is the
    straight-through one, computed as if x had not been rounded."""
    inputs = (x,) if bias is None else (x, bias)
    return QuantizedLinearFunction.apply(*inputs, weight=weight, quantize_input=quantize_input)


class _QuantizedWeightMixin:
    """The packed `weight` buffer and its QuantizedTensor view, shared by both layers."""

    quantize_input = False  # int8 activations (module docstring); set per layer by set_int8_activations

    def _set_packed(self, type_name: str, rows: int, columns: int, data: np.ndarray | None) -> None:
        self.weight_type = check_weight_type(type_name)
        row_bytes = stored_row_bytes(self.weight_type, columns, "weight")
        if data is None:
            data = np.zeros((rows, row_bytes), dtype=np.uint8)  # zero pages: no memory until written
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.shape != (rows, row_bytes):
            raise ValueError(f"{type(self).__name__}: {self.weight_type} weight of shape ({rows}, {columns}) needs "
                             f"uint8 blocks of shape {(rows, row_bytes)}, got {data.dtype} {data.shape}")
        self.logical_shape = (rows, columns)
        self.register_buffer("weight", data)
        self._view = None

    @property
    def quantized_weight(self) -> QuantizedTensor:
        """The weight as a QuantizedTensor (logical shape (rows, columns)), sharing the buffer's bytes."""
        view = self._view
        if view is None or view.data is not self.weight:  # the buffer was replaced (load_state_dict copies in place)
            view = QuantizedTensor(self.weight_type, self.logical_shape, self.weight, self._name)
            object.__setattr__(self, "_view", view)
        return view

    @property
    def _name(self) -> str:
        """The weight's name in errors: the checkpoint tensor it came from, else the layer's class."""
        return getattr(self, "tensor_name", None) or type(self).__name__

    def load_blocks(self, tensor: QuantizedTensor, where: str = "weight") -> None:
        """Take a copy of `tensor`'s blocks as the weight: its type and logical shape must be the layer's."""
        if tensor.type != self.weight_type or tuple(tensor.shape) != self.logical_shape:
            raise ValueError(f"{where}: {tensor.type} of shape {tuple(tensor.shape)} cannot fill a {self.weight_type} "
                             f"{type(self).__name__} of shape {self.logical_shape}")
        self.weight = np.array(tensor.data, dtype=np.uint8, order="C")  # a copy: the file may close
        self.tensor_name = tensor.name

    def dequantized_weight(self) -> np.ndarray:
        """The float32 values (rows, columns) of the weight: a new array."""
        return self.quantized_weight.dequantize()

    def requires_grad_(self, requires_grad: bool = True):
        if requires_grad:
            raise _frozen_error(self)
        return super().requires_grad_(False)


class QuantizedLinear(_QuantizedWeightMixin, Module):
    """A frozen Linear whose weight (out_features, in_features) is stored as `weight_type` blocks.

    QuantizedLinear(in, out, bias, weight_type) makes an all-zero layer (for a checkpoint to fill);
    QuantizedLinear.from_linear(linear, type) quantizes a Linear's float weight;
    QuantizedLinear.from_quantized(tensor, bias) keeps a stored QuantizedTensor as it is.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_type: str = "Q8_0",
                 data: np.ndarray | None = None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._set_packed(weight_type, self.out_features, self.in_features, data)
        if bias:
            self.bias = Parameter(np.zeros((self.out_features,), dtype=np.float32), requires_grad=False)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_quantized(cls, weight: QuantizedTensor, bias: np.ndarray | None = None) -> "QuantizedLinear":
        """A layer holding `weight` (logical (out, in), a Q8_0/Q4_0/Q4_1 QuantizedTensor) without a copy."""
        out_features, in_features = weight.shape
        layer = cls(in_features, out_features, bias=bias is not None, weight_type=weight.type,
                    data=np.ascontiguousarray(weight.data))
        layer.tensor_name = weight.name
        if bias is not None:
            layer.bias.data = np.asarray(bias, dtype=np.float32).reshape(out_features).copy()
        return layer

    @classmethod
    def from_linear(cls, linear: Linear, weight_type: str, name: str = "weight") -> "QuantizedLinear":
        """`linear` with its weight quantized to `weight_type` (its bias kept in float32)."""
        weight = quantize(data_of(linear.weight), check_weight_type(weight_type), name)
        bias = None if linear.bias is None else data_of(linear.bias)
        return cls.from_quantized(weight, bias)

    def to_linear(self) -> Linear:
        """A float32 Linear holding this layer's dequantized weight (and a copy of its bias)."""
        linear = Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight.data = self.dequantized_weight()
        if self.bias is not None:
            linear.bias.data = self.bias.data.copy()
        return linear

    def forward(self, x):
        return quantized_linear(x, self.quantized_weight, self.bias, self.quantize_input)

    def forward_array(self, x: np.ndarray) -> np.ndarray:
        """forward on a raw float32 array (..., in) -> (..., out), no autograd (the block's fast path)."""
        bias = None if self.bias is None else self.bias.data
        return QuantizedLinearFunction.forward(Context(), x, bias, weight=self.quantized_weight,
                                               quantize_input=self.quantize_input)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weight_type={self.weight_type}")


class QuantizedEmbedding(_QuantizedWeightMixin, Module):
    """A frozen lookup table (num_embeddings, embedding_dim) stored as `weight_type` blocks.

    forward(ids) dequantizes only the rows looked up: (...,) -> (..., embedding_dim) float32, no
    gradient. `logits(hidden)` uses the table as a tied output head: hidden (..., dim) -> (..., num).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, weight_type: str = "Q8_0",
                 data: np.ndarray | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self._set_packed(weight_type, self.num_embeddings, self.embedding_dim, data)

    @classmethod
    def from_quantized(cls, weight: QuantizedTensor) -> "QuantizedEmbedding":
        rows, columns = weight.shape
        table = cls(rows, columns, weight_type=weight.type, data=np.ascontiguousarray(weight.data))
        table.tensor_name = weight.name
        return table

    @classmethod
    def from_embedding(cls, embedding: Embedding, weight_type: str, name: str = "weight") -> "QuantizedEmbedding":
        return cls.from_quantized(quantize(data_of(embedding.weight), check_weight_type(weight_type), name))

    def to_embedding(self) -> Embedding:
        """A float32 Embedding holding this table's dequantized values."""
        embedding = Embedding(self.num_embeddings, self.embedding_dim)
        embedding.weight.data = self.dequantized_weight()
        return embedding

    def forward(self, ids):
        ids = np.asarray(data_of(ids))
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise IndexError(f"embedding ids must be in [0, {self.num_embeddings}), got values from "
                             f"{ids.min()} to {ids.max()}")
        rows = dequantize(self.weight[ids.reshape(-1)], self.weight_type, self._name)  # (n, dim)
        return Tensor._from_array(rows.reshape(*ids.shape, self.embedding_dim))

    def logits(self, hidden):
        """hidden (..., embedding_dim) @ dequantize(weight)^T -> (..., num_embeddings): the tied output head."""
        return quantized_linear(hidden, self.quantized_weight, quantize_input=self.quantize_input)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weight_type={self.weight_type}"


def set_int8_activations(module: Module, enabled: bool) -> int:
    """Round the inputs of every quantized layer inside `module` to int8 per block of 32 (enabled=True,
    llama.cpp's products) or multiply them in float32 (False, the exact definition). Returns how many
    layers it set: 0 for a model without quantized weights."""
    layers = [layer for layer in module.modules() if isinstance(layer, _QuantizedWeightMixin)]
    for layer in layers:
        layer.quantize_input = bool(enabled)
    return len(layers)


def convert_linears(module: Module, weight_type: str | None) -> list[str]:
    """Store every Linear inside `module` as `weight_type` in place: "q8_0" | "q4_0" | "q4_1" replaces each
    stock Linear by a QuantizedLinear of its values (and requantizes a QuantizedLinear of another format
    from its float32 values; one already in that format keeps its blocks); None turns every
    QuantizedLinear back into a float32 Linear of its dequantized values. Returns the names replaced."""
    weight_type = None if weight_type is None else check_weight_type(weight_type)
    replaced = []
    for name, child in list(module.named_modules()):
        if not name or type(child) not in (Linear, QuantizedLinear):
            continue
        current = child.weight_type if type(child) is QuantizedLinear else None
        if current == weight_type:
            continue
        linear = child.to_linear() if type(child) is QuantizedLinear else child
        new = linear if weight_type is None else QuantizedLinear.from_linear(linear, weight_type, f"{name}.weight")
        module.set_submodule(name, new)
        replaced.append(name)
    return replaced


def empty_quantized_linears(module: Module, weight_type: str, skip=()) -> list[str]:
    """Like quantize_linears, but the new layers hold zero blocks (a checkpoint fills them): nothing is
    quantized, so the float layers' np.empty memory is never read."""
    weight_type = check_weight_type(weight_type)
    replaced = []
    for name, child in list(module.named_modules()):
        if type(child) is Linear and name and name not in skip:
            module.set_submodule(name, QuantizedLinear(child.in_features, child.out_features,
                                                       bias=child.bias is not None, weight_type=weight_type))
            replaced.append(name)
    return replaced


def packed_nbytes(module: Module) -> int:
    """Bytes of the packed weights of every QuantizedLinear / QuantizedEmbedding inside `module`."""
    return sum(int(m.weight.nbytes) for m in module.modules() if isinstance(m, _QuantizedWeightMixin))


__all__ = ["QuantizedEmbedding", "QuantizedLinear", "QuantizedLinearFunction", "check_weight_type", "convert_linears",
           "empty_quantized_linears", "packed_nbytes", "quantized_linear"]
