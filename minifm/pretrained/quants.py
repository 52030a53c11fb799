"""GGML tensor formats (the storage types of GGUF files): float32 to blocks and back, in NumPy.

A GGUF tensor of logical shape (..., n) is stored row by row; a row of n values is n / block_size
consecutive blocks, and a block is the unit that shares one scale. All numbers are little-endian;
`d` and `m` are IEEE half floats (f16), converted exactly to float32 before any arithmetic.

    type  values  bytes  layout of one block                               value i of the block
    F32        1      4  one float32                                       x = the float32
    F16        1      2  one f16                                           x = float32(the f16)
    BF16       1      2  the top 16 bits of a float32                      x = float32 with bits << 16
    Q8_0      32     34  d (f16) | q[0..31] (int8)                         x[i] = d * q[i]
    Q4_0      32     18  d (f16) | 16 bytes of 4-bit q (0..15)             x[i] = d * (q[i] - 8)
    Q4_1      32     20  d (f16) | m (f16) | 16 bytes of 4-bit q (0..15)   x[i] = d * q[i] + m

The 4-bit formats pack two values per byte: byte j (j = 0..15) holds q[j] in its low nibble and
q[j + 16] in its high nibble, so the low nibbles are elements 0..15 and the high nibbles 16..31
(not the interleaved order one might guess).

Arithmetic is float32 in the order written above: Q4_1 multiplies, rounds, then adds m (no fused
multiply-add). That gives exactly the bits of the `gguf` package's reference `gguf.quants.dequantize`,
which the tests check on every tensor of a real file and on drawn blocks.

Non-finite scales (a damaged file) follow IEEE arithmetic and are not refused here: a NaN `d` makes
its block NaN; an infinite `d` makes +-inf values, and NaN where q (or q - 8) is 0, as inf * 0 is;
an infinite m makes the block +-inf (NaN where d*q is the opposite infinity). The bits equal the
reference's, and no floating-point warning is raised. The checkpoint readers refuse any non-finite
weight they return (minifm/pretrained/pretrained_checkpoint.py), naming the tensor; blocks kept in their
stored form are checked by `check_finite_scales` (models/pretrained.py calls it on every one it keeps). Subnormal f16
scales are ordinary numbers here: f16 -> float32 conversion is exact for them.

Quantizing (`quantize(values, type_name)`, float32 -> blocks) follows ggml's reference quantizers
(quantize_row_*_ref in ggml-quants.c), as the `gguf` package's `gguf.quants.quantize` writes them in
NumPy, and gives the same bytes (the tests compare them on drawn arrays). For one block of 32 values x:

    Q8_0   d = max|x| / 127            q[i] = round(x[i] / d), halves away from zero      (-127..127)
    Q4_0   d = x[j] / -8, x[j] the value of largest magnitude (its sign kept)
                                       q[i] = min(15, trunc(x[i] / d + 8.5))              (0..15)
    Q4_1   d = (max x - min x) / 15, m = min x
                                       q[i] = min(15, trunc((x[i] - m) / d + 0.5))        (0..15)

"/ d" is a product with the float32 reciprocal 1/d (0 when d == 0, so an all-zero block is exact),
computed from the float32 d before d is rounded to f16 for storage; that rounding (relative 2^-11)
is why a value can come back one rounding step away from the nearest grid point. Round trip bounds,
per block: Q8_0 |x - x'| <= d/2 + 128 |d - d16|, Q4_0 |x - x'| <= d + 8 |d - d16| (the grid point of
trunc(. + 8.5) is within one step, and the q = 15 clamp keeps the largest value within one step),
Q4_1 |x - x'| <= d/2 + 15 |d - d16| + |m - m16| (tests/pretrained/test_quantize.py checks them with
a small float32 slack). Each block's scale must fit an f16 (|d| <= 65504, so |x| up to about 8.3e6
for Q8_0, 5.2e5 for Q4_0, and |min x| <= 65504 for Q4_1): a block that would store an infinite
scale, or any NaN or infinite input, is refused with a ValueError naming the tensor.

Also here: `QuantizedTensor`, a tensor kept in its stored form (block bytes, type, logical shape), so
a caller can hold weights quantized and dequantize them when needed.

Simplifications: only the six formats above are decoded and only Q8_0, Q4_0 and Q4_1 are encoded
(F32/F16/BF16 are stored float types, not quantized); the K-quants (Q2_K..Q6_K), Q5_0/Q5_1, the
i-quants and others raise UnsupportedTensorTypeError naming the tensor and its type. No importance
matrix (llama.cpp's imatrix) and no search for a better scale: the plain reference quantizers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class UnsupportedTensorTypeError(ValueError):
    """A tensor stored in a GGML type that minifm cannot dequantize."""


# ---------------------------------------------------------------------------- decoding one format
# Each decoder turns `blocks` (n_blocks, block_bytes) uint8 into float32 values written to `out`
# (n_blocks, block_size). `out` is preallocated, so a large tensor is decoded a slice at a time.
def _decode_f32(blocks: np.ndarray, out: np.ndarray) -> None:
    out[:] = blocks.view("<f4")  # (n, 1)


def _decode_f16(blocks: np.ndarray, out: np.ndarray) -> None:
    out[:] = blocks.view("<f2")  # (n, 1); the assignment converts f16 -> float32 exactly


def _decode_bf16(blocks: np.ndarray, out: np.ndarray) -> None:
    top_bits = blocks.view("<u2").astype(np.uint32)  # (n, 1): a bfloat16 is the top half of a float32
    out[:] = (top_bits << 16).view(np.float32)


def _f16_column(blocks: np.ndarray, start: int) -> np.ndarray:
    """The f16 stored at byte `start` of every block, as a float32 column (n_blocks, 1)."""
    return blocks[:, start:start + 2].view("<f2").astype(np.float32)


def _unpack_nibbles(packed: np.ndarray, out: np.ndarray) -> None:
    """4-bit values of `packed` (n, 16) into `out` (n, 32): low nibbles -> 0..15, high nibbles -> 16..31."""
    out[:, :16] = packed & 0x0F
    out[:, 16:] = packed >> 4


def _decode_q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    d = _f16_column(blocks, 0)  # (n, 1)
    q = blocks[:, 2:34].view(np.int8)  # (n, 32)
    out[:] = q
    out *= d  # x = d * q


def _decode_q4_0(blocks: np.ndarray, out: np.ndarray) -> None:
    d = _f16_column(blocks, 0)  # (n, 1)
    _unpack_nibbles(blocks[:, 2:18], out)  # (n, 32) q in 0..15
    out -= 8
    out *= d  # x = d * (q - 8)


def _decode_q4_1(blocks: np.ndarray, out: np.ndarray) -> None:
    d = _f16_column(blocks, 0)  # (n, 1)
    m = _f16_column(blocks, 2)  # (n, 1)
    _unpack_nibbles(blocks[:, 4:20], out)  # (n, 32) q in 0..15
    out *= d
    out += m  # x = d * q + m, rounded after the product


# ---------------------------------------------------------------------------- encoding one format
# Each encoder turns `values` (n_blocks, 32) float32 into the blocks' bytes (n_blocks, block_bytes)
# uint8, with the same float32 operations in the same order as gguf.quants (module docstring).
def _f16_bytes(column: np.ndarray) -> np.ndarray:
    """A float32 column (n, 1) rounded to f16 (nearest, ties to even) as its 2 little-endian bytes (n, 2)."""
    return column.astype("<f2").view(np.uint8)


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """1 / d, and 0 where d == 0 (an all-equal block then quantizes to q = the offset, exactly)."""
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d)


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, halves away from zero (C's roundf), as ggml and gguf.quants do it."""
    magnitude = np.abs(values)
    floor = np.floor(magnitude)
    return np.sign(values) * (floor + np.floor(2 * (magnitude - floor)))


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """4-bit values (n, 32) uint8 into (n, 16) bytes: q[j] in the low nibble, q[j + 16] in the high one."""
    return q[:, :16] | (q[:, 16:] << np.uint8(4))


def _encode_q8_0(values: np.ndarray) -> np.ndarray:
    d = np.abs(values).max(axis=1, keepdims=True) / np.float32(127)  # (n, 1)
    q = _round_half_away(values * _reciprocal(d))  # (n, 32) in -127..127
    return np.concatenate([_f16_bytes(d), q.astype(np.int8).view(np.uint8)], axis=1)


def _encode_q4_0(values: np.ndarray) -> np.ndarray:
    largest = np.abs(values).argmax(axis=1)[:, None]  # (n, 1): index of the largest magnitude
    d = np.take_along_axis(values, largest, axis=1) / np.float32(-8)  # (n, 1), sign of that value kept
    q = np.trunc(values * _reciprocal(d) + np.float32(8.5)).astype(np.uint8).clip(0, 15)  # (n, 32)
    return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1)


def _encode_q4_1(values: np.ndarray) -> np.ndarray:
    low = values.min(axis=1, keepdims=True)  # (n, 1)
    d = (values.max(axis=1, keepdims=True) - low) / np.float32(15)  # (n, 1)
    q = np.trunc((values - low) * _reciprocal(d) + np.float32(0.5)).astype(np.uint8).clip(0, 15)  # (n, 32)
    return np.concatenate([_f16_bytes(d), _f16_bytes(low), _pack_nibbles(q)], axis=1)


@dataclass(frozen=True)
class BlockFormat:
    name: str  # the GGML type name, as gguf.GGMLQuantizationType spells it
    ggml_type: int  # its number in GGUF files
    block_size: int  # values per block
    block_bytes: int  # bytes per block
    decode: Callable[[np.ndarray, np.ndarray], None]
    encode: Callable[[np.ndarray], np.ndarray] | None = None  # None: a float type, not quantized here


FORMATS: dict[str, BlockFormat] = {
    fmt.name: fmt for fmt in (
        BlockFormat("F32", 0, 1, 4, _decode_f32),
        BlockFormat("F16", 1, 1, 2, _decode_f16),
        BlockFormat("Q4_0", 2, 32, 18, _decode_q4_0, _encode_q4_0),
        BlockFormat("Q4_1", 3, 32, 20, _decode_q4_1, _encode_q4_1),
        BlockFormat("Q8_0", 8, 32, 34, _decode_q8_0, _encode_q8_0),
        BlockFormat("BF16", 30, 1, 2, _decode_bf16),
    )
}

# Blocks decoded per slice: 32768 blocks of 32 values are 4 MB of float32, small enough to stay in
# cache between the few passes a decoder makes.
BLOCKS_PER_SLICE = 32768


def block_format(type_name: str, name: str = "<unnamed>") -> BlockFormat:
    """The BlockFormat of `type_name`, or UnsupportedTensorTypeError naming the tensor and its type."""
    fmt = FORMATS.get(type_name)
    if fmt is None:
        raise UnsupportedTensorTypeError(
            f"tensor {name!r} is stored as {type_name}, which minifm cannot dequantize "
            f"(it reads {', '.join(FORMATS)})")
    return fmt


def stored_row_bytes(type_name: str, row_values: int, name: str = "<unnamed>") -> int:
    """Bytes that one row of `row_values` values takes in `type_name` (a whole number of blocks)."""
    fmt = block_format(type_name, name)
    if row_values % fmt.block_size:
        raise ValueError(f"tensor {name!r}: a row of {row_values} values is not a whole number of "
                         f"{type_name} blocks ({fmt.block_size} values each)")
    return row_values // fmt.block_size * fmt.block_bytes


def dequantize(data: np.ndarray, type_name: str, name: str = "<unnamed>") -> np.ndarray:
    """float32 values of stored rows: `data` uint8 (..., row_bytes) in `type_name` -> (..., row_values).

    `data` holds whole blocks along its last axis (the layout gguf.GGUFReader gives quantized
    tensors; for F32/F16/BF16 view the values as uint8 first). The result is a new, writable array.
    """
    fmt = block_format(type_name, name)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise TypeError(f"tensor {name!r}: dequantize takes the stored bytes (uint8), got dtype {data.dtype}")
    if data.ndim == 0 or data.shape[-1] % fmt.block_bytes:
        raise ValueError(f"tensor {name!r}: stored rows of shape {data.shape} are not whole {type_name} blocks "
                         f"({fmt.block_bytes} bytes each) along the last axis")
    row_values = data.shape[-1] // fmt.block_bytes * fmt.block_size
    blocks = np.ascontiguousarray(data).reshape(-1, fmt.block_bytes)  # (n_blocks, block_bytes)
    values = np.empty((blocks.shape[0], fmt.block_size), dtype=np.float32)  # (n_blocks, block_size)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite scales: see the module docstring
        for start in range(0, blocks.shape[0], BLOCKS_PER_SLICE):
            stop = start + BLOCKS_PER_SLICE
            fmt.decode(blocks[start:stop], values[start:stop])
    return values.reshape(*data.shape[:-1], row_values)


QUANTIZED_TYPES = tuple(name for name, fmt in FORMATS.items() if fmt.encode is not None)  # Q4_0, Q4_1, Q8_0


def quantize(values, type_name: str, name: str = "<unnamed>") -> "QuantizedTensor":
    """`values` (..., n) float32 (n a multiple of 32) stored as `type_name` ("Q8_0", "Q4_0" or "Q4_1",
    any case): a QuantizedTensor of the same logical shape whose bytes equal gguf.quants.quantize's.

    NaN or infinite values, and blocks whose f16 scale would overflow, are a ValueError naming the
    tensor (see the module docstring for the ranges).
    """
    type_name = str(type_name).upper()
    fmt = FORMATS.get(type_name)
    if fmt is None or fmt.encode is None:
        raise ValueError(f"tensor {name!r}: type_name must be one of {list(QUANTIZED_TYPES)}, got {type_name!r}")
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise TypeError(f"tensor {name!r}: quantize takes real numbers, got dtype {values.dtype}")
    if values.ndim == 0:
        raise ValueError(f"tensor {name!r}: quantize needs at least one axis, got a scalar")
    values = np.ascontiguousarray(values, dtype=np.float32)
    row_bytes = stored_row_bytes(type_name, values.shape[-1], name)  # checks whole blocks per row
    finite = np.isfinite(values)
    if not finite.all():
        first = np.unravel_index(int(np.argmin(finite)), values.shape)
        raise ValueError(f"tensor {name!r} has {values.size - np.count_nonzero(finite)} non-finite value(s), "
                         f"the first at {tuple(int(i) for i in first)}: {values[first]!r}; cannot quantize")
    blocks = values.reshape(-1, fmt.block_size)  # (n_blocks, 32)
    data = np.empty((blocks.shape[0], fmt.block_bytes), dtype=np.uint8)  # (n_blocks, block_bytes)
    # an f16 overflow is found and named just below; a block of float32 subnormals has 1/d = inf, which
    # makes NaN codes whose casts gguf.quants makes alike (they decode to 0: its f16 scale is 0)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, blocks.shape[0], BLOCKS_PER_SLICE):
            stop = start + BLOCKS_PER_SLICE
            data[start:stop] = fmt.encode(blocks[start:stop])
    scales = data[:, :4 if type_name == "Q4_1" else 2].copy().view("<f2")  # (n_blocks, 1 or 2): d [, m]
    if not np.isfinite(scales).all():
        block = int(np.argmin(np.isfinite(scales).all(axis=1)))
        raise ValueError(f"tensor {name!r}: block {block} (values {block * 32}..{block * 32 + 31} in row order) "
                         f"needs a scale beyond f16's range (largest magnitude "
                         f"{float(np.abs(blocks[block]).max()):.6g}); {type_name} cannot hold it")
    return QuantizedTensor(type_name, values.shape, data.reshape(*values.shape[:-1], row_bytes), name)


def check_finite_scales(tensor: "QuantizedTensor") -> None:
    """ValueError naming the tensor when a Q8_0 / Q4_0 / Q4_1 block stores a NaN or infinite scale (d, or
    Q4_1's m): a damaged file, whose blocks would give non-finite values (see above). Reads only the scales."""
    if tensor.type not in QUANTIZED_TYPES:
        return
    fmt = FORMATS[tensor.type]
    blocks = np.ascontiguousarray(tensor.data).reshape(-1, fmt.block_bytes)  # (n_blocks, block_bytes)
    scales = blocks[:, :4 if tensor.type == "Q4_1" else 2].copy().view("<f2")  # (n_blocks, 1 or 2)
    finite = np.isfinite(scales).all(axis=1)
    if not finite.all():
        raise ValueError(f"tensor {tensor.name!r} ({tensor.type}) has {int((~finite).sum())} block(s) with a NaN or "
                         f"infinite scale, the first is block {int(np.argmin(finite))}; the file is damaged")


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A tensor in its stored form: `data` holds the block bytes of each row, in `type`.

    shape: the logical shape, torch order (a Linear weight is (out, in)).
    data:  uint8 (*shape[:-1], row_bytes): row r's blocks are data[r]. A reader may give a read-only
           view of a memory-mapped file: copy it (np.array) to keep it past the file's lifetime.
    """
    type: str
    shape: tuple[int, ...]
    data: np.ndarray
    name: str = "<unnamed>"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(size) for size in self.shape))
        if self.type in FORMATS:  # an unsupported type is still a valid stored tensor
            expected = (*self.shape[:-1], stored_row_bytes(self.type, self.shape[-1], self.name))
            if self.data.dtype != np.uint8 or tuple(self.data.shape) != expected:
                raise ValueError(f"tensor {self.name!r}: {self.type} data of logical shape {self.shape} must be uint8 "
                                 f"of shape {expected}, got {self.data.dtype} {tuple(self.data.shape)}")

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def dequantize(self) -> np.ndarray:
        """The float32 values, shape `self.shape` (a new array)."""
        return dequantize(self.data, self.type, self.name).reshape(self.shape)
