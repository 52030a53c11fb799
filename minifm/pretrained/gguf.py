"""GGUF files (llama.cpp's single-file model format) read as Hugging Face checkpoints.

A GGUF file is a header of typed key/value metadata (architecture, sizes, the tokenizer's vocabulary,
merges and chat template), a table of named tensors, then the tensor data, each tensor stored as F32,
F16, BF16 or in a quantized block format (minifm/pretrained/quants.py documents the formats). The
container is parsed with the `gguf` package (gguf.GGUFReader); the dequantization is minifm's own.

    open_reader(path) -> gguf.GGUFReader          read_metadata(path or reader) -> {key: plain value}
    GGUFCheckpoint(path): a PretrainedCheckpoint (pretrained_checkpoint.py) that gives
        .config     a Hugging Face config.json dict built from the metadata (hf_config_from_gguf)
        .tensor(name) / .tensors[name]   float32 under Hugging Face names; tensor(name, dequantize=False)
                    is the stored form (quants.QuantizedTensor: block bytes, type, logical shape)
        .metadata   every metadata key (read_metadata), .reader the GGUFReader, .gguf_name(name)

Three translations turn llama.cpp's view into Hugging Face's:

1. Shapes. GGUF lists a tensor's dimensions innermost first: ne[0] is the length of a row (the axis
   that varies fastest in memory), the reverse of NumPy's and torch's order. A Linear weight of torch
   shape (out, in) is stored with ne = [in, out], as `out` rows of `in` values, and a quantized row is
   in / 32 consecutive blocks. Every shape minifm reports is the torch order, tuple(reversed(ne)).

2. Names: the table GGUF_TO_HF_NAMES below, one row per tensor kind ({N} = the layer index).

3. The q/k row order (Llama only). A head's rotary embedding rotates pairs of dimensions. Hugging Face
   Llama pairs dimension i with i + head_dim/2 ("rotate half"); llama.cpp's default RoPE pairs 2i with
   2i + 1. So that the file works with llama.cpp, convert_hf_to_gguf.py reorders the rows of q_proj and
   k_proj (weights and biases) within each head: Hugging Face row j*(head_dim/2) + i, with j in {0, 1}
   and i < head_dim/2, becomes GGUF row 2i + j. The pair (i, i + head_dim/2) then sits at rows
   (2i, 2i + 1): adjacent, as llama.cpp rotates them. Undoing it (undo_rope_permutation): view the
   GGUF rows as (n_heads, head_dim/2, 2, ...) indexed [h, i, j], swap the middle axes to [h, j, i],
   flatten back: row h*head_dim + j*(head_dim/2) + i again. q uses num_attention_heads, k
   num_key_value_heads. The permutation moves whole rows, so it is undone on the stored block bytes
   before dequantizing: tensor(name, dequantize=False) is already in Hugging Face row order.
   Qwen2 files are not permuted (llama.cpp runs Qwen2 with rotate-half RoPE, "NEOX" in its terms).

Config: hf_config_from_gguf documents which metadata key gives which config.json entry.

Time (SmolLM2-135M, 49152 tokens and 48900 merges; medians of 3 on a shared 2-core machine):
gguf.GGUFReader makes a NumPy view per metadata string, which over its np.memmap took 5.7 s to open;
over the plain ndarray view open_reader gives it (PlainArrayGGUFReader) 2.2 s. Dequantizing all 272
tensors then takes 0.65 s (the gguf package's own dequantize on the same reader: 1.9 s); peak RSS of
opening and dequantizing one tensor at a time: 293 MB (the stock reader and dequantize: 461 MB).

Simplifications: the architectures "llama" and "qwen2" only (another is a ValueError listing these);
little-endian files only; tensors outside the name table (Llama 3's rope_freqs, say) are refused when
the file is opened, naming them; metadata floats are float32 in GGUF and are given back as the
shortest decimal that rounds to the same float32 (1e-05, not 9.999999747378752e-06).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from minifm.pretrained.pretrained_checkpoint import PretrainedCheckpoint
from minifm.pretrained.quants import QuantizedTensor, UnsupportedTensorTypeError


class PlainArrayGGUFReader(gguf.GGUFReader):
    """gguf.GGUFReader slicing a plain ndarray view of its memory map instead of the np.memmap itself.

    The reader slices its map once or twice per metadata value: ~250 000 slices for SmolLM2's 49152
    tokens and 48900 merges. Each slice of an np.memmap runs np.memmap's Python-level __array_finalize__,
    most of the opening time; a slice of a plain ndarray view of the same map (same memory, still
    read-only, the map kept alive as the view's base) is made in C: SmolLM2-135M opens about 2.5x
    faster (module docstring). The reader keeps its map in `self.data`; this property stores the view.
    """

    @property
    def data(self) -> np.ndarray:
        return self._plain_data

    @data.setter
    def data(self, buffer: np.ndarray) -> None:
        self._plain_data = buffer.view(np.ndarray)


def open_reader(path: str | os.PathLike) -> gguf.GGUFReader:
    """A gguf.GGUFReader over `path` (memory-mapped, read-only); a clear error for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist")
    try:
        return PlainArrayGGUFReader(path, "r")
    except (ValueError, OSError, IndexError) as error:
        raise ValueError(f"{str(path)!r} is not a readable GGUF file: {error}") from error


def read_metadata(path_or_reader) -> dict:
    """Every metadata key of a GGUF file with its value as plain Python (str, int, float, bool, list)."""
    reader = path_or_reader if isinstance(path_or_reader, gguf.GGUFReader) else open_reader(path_or_reader)
    return {key: field.contents() for key, field in reader.fields.items()}


# ---------------------------------------------------------------------------- names
GGUF_TO_HF_NAMES = {
    # llama.cpp name                 Hugging Face name
    "token_embd.weight":             "model.embed_tokens.weight",
    "output_norm.weight":            "model.norm.weight",
    "output.weight":                 "lm_head.weight",  # absent when tied to the embedding
    "blk.{N}.attn_norm.weight":      "model.layers.{N}.input_layernorm.weight",
    "blk.{N}.attn_q.weight":         "model.layers.{N}.self_attn.q_proj.weight",
    "blk.{N}.attn_k.weight":         "model.layers.{N}.self_attn.k_proj.weight",
    "blk.{N}.attn_v.weight":         "model.layers.{N}.self_attn.v_proj.weight",
    "blk.{N}.attn_output.weight":    "model.layers.{N}.self_attn.o_proj.weight",
    "blk.{N}.attn_q.bias":           "model.layers.{N}.self_attn.q_proj.bias",  # Qwen2
    "blk.{N}.attn_k.bias":           "model.layers.{N}.self_attn.k_proj.bias",  # Qwen2
    "blk.{N}.attn_v.bias":           "model.layers.{N}.self_attn.v_proj.bias",  # Qwen2
    "blk.{N}.attn_output.bias":      "model.layers.{N}.self_attn.o_proj.bias",  # Llama, attention_bias
    "blk.{N}.ffn_norm.weight":       "model.layers.{N}.post_attention_layernorm.weight",
    "blk.{N}.ffn_gate.weight":       "model.layers.{N}.mlp.gate_proj.weight",
    "blk.{N}.ffn_up.weight":         "model.layers.{N}.mlp.up_proj.weight",
    "blk.{N}.ffn_down.weight":       "model.layers.{N}.mlp.down_proj.weight",
}

# Rows that convert_hf_to_gguf permuted for Llama, and the config entry giving their number of heads.
ROPE_PERMUTED = {
    "blk.{N}.attn_q.weight": "num_attention_heads",
    "blk.{N}.attn_q.bias": "num_attention_heads",
    "blk.{N}.attn_k.weight": "num_key_value_heads",
    "blk.{N}.attn_k.bias": "num_key_value_heads",
}

_LAYER_NAME = re.compile(r"blk\.(\d+)\.(.+)")


def name_template(gguf_name: str) -> tuple[str, str | None]:
    """("blk.{N}.attn_q.weight", "3") for "blk.3.attn_q.weight"; (name, None) outside the layers."""
    match = _LAYER_NAME.fullmatch(gguf_name)
    if match is None:
        return gguf_name, None
    return "blk.{N}." + match.group(2), match.group(1)


def hf_tensor_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a llama.cpp tensor name, or None when the table has no row for it."""
    template, layer = name_template(gguf_name)
    hf_template = GGUF_TO_HF_NAMES.get(template)
    if hf_template is None:
        return None
    return hf_template if layer is None else hf_template.replace("{N}", layer)


def undo_rope_permutation(rows: np.ndarray, n_heads: int, name: str = "<unnamed>") -> np.ndarray:
    """Hugging Face row order of a q or k projection that convert_hf_to_gguf permuted (module docstring, 3).

    rows: (n_heads * head_dim, ...) in GGUF order (weights, their block bytes, or a bias) -> the same
    shape in Hugging Face order, a new array.
    """
    n_rows = rows.shape[0]
    if n_heads <= 0 or n_rows % (2 * n_heads):
        raise ValueError(f"tensor {name!r}: {n_rows} rows cannot be {n_heads} heads of an even head size")
    head_dim = n_rows // n_heads
    pairs = rows.reshape(n_heads, head_dim // 2, 2, *rows.shape[1:])  # [h, i, j] = GGUF row h*head_dim + 2i + j
    halves = pairs.swapaxes(1, 2)  # [h, j, i] = Hugging Face row h*head_dim + j*head_dim/2 + i
    return halves.reshape(rows.shape)  # a copy: the swapped view is not contiguous


# ---------------------------------------------------------------------------- config.json
@dataclass(frozen=True)
class GGUFArchitecture:
    hf_class: str  # config.json "architectures"
    model_type: str  # config.json "model_type"
    rope_permuted: bool  # convert_hf_to_gguf permuted the q/k rows (module docstring, 3)


ARCHITECTURES = {
    # general.architecture    Hugging Face class, model_type, q/k rows permuted
    "llama": GGUFArchitecture("LlamaForCausalLM", "llama", True),
    "qwen2": GGUFArchitecture("Qwen2ForCausalLM", "qwen2", False),
}

_MISSING = object()


def _field_value(reader: gguf.GGUFReader, key: str, default=_MISSING, where: str = "GGUF file"):
    if key in reader.fields:
        return reader.fields[key].contents()
    if default is _MISSING:
        raise KeyError(f"{where} has no metadata key {key!r}, which a {key.split('.')[0]} model needs")
    return default


def float32_decimal(value: float) -> float:
    """The shortest decimal that rounds to the same float32: GGUF stores 1e-05 as 9.999999747378752e-06."""
    return float(str(np.float32(value)))


def hf_config_from_gguf(reader: gguf.GGUFReader, where: str = "GGUF file") -> dict:
    """A Hugging Face config.json dict for a GGUF file of a supported architecture (ARCHITECTURES).

    "{arch}." keys (arch = general.architecture)  ->  config.json
        embedding_length -> hidden_size               feed_forward_length -> intermediate_size
        block_count -> num_hidden_layers              context_length -> max_position_embeddings
        attention.head_count -> num_attention_heads   attention.head_count_kv -> num_key_value_heads
        attention.layer_norm_rms_epsilon -> rms_norm_eps                 (default: head_count)
        rope.freq_base -> rope_theta (default 10000.0, llama.cpp's)
        attention.key_length -> head_dim (default hidden_size / num_attention_heads)
        rope.scaling.type/.factor/.original_context_length -> rope_scaling (when the type is not "none")
        vocab_size -> vocab_size (default: the length of tokenizer.ggml.tokens)
    tokenizer.ggml.bos_token_id / eos_token_id / padding_token_id -> bos/eos/pad_token_id
    tie_word_embeddings: true when the file has no output.weight (the head reuses the embedding)
    fixed: architectures, model_type, hidden_act "silu", torch_dtype "float32"; Llama's
    attention_bias (true when the file has q biases) and mlp_bias false.
    """
    architecture = _field_value(reader, "general.architecture", where=where)
    spec = ARCHITECTURES.get(architecture)
    if spec is None:
        raise ValueError(f"{where}: general.architecture={architecture!r} cannot be read by minifm "
                         f"(supported: {sorted(ARCHITECTURES)})")

    def value(key, default=_MISSING):
        return _field_value(reader, f"{architecture}.{key}", default, where)

    tensor_names = {tensor.name for tensor in reader.tensors}
    hidden_size = value("embedding_length")
    n_head = value("attention.head_count")
    n_kv_head = value("attention.head_count_kv", n_head)
    for key, count in (("attention.head_count", n_head), ("attention.head_count_kv", n_kv_head)):
        if not isinstance(count, int):
            raise ValueError(f"{where}: {architecture}.{key} is {count!r}; minifm reads one head count for "
                             f"all layers")
    config = {
        "architectures": [spec.hf_class],
        "model_type": spec.model_type,
        "vocab_size": value("vocab_size", None) or _vocab_size(reader, where),
        "hidden_size": hidden_size,
        "intermediate_size": value("feed_forward_length"),
        "num_hidden_layers": value("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv_head,
        "head_dim": value("attention.key_length", hidden_size // n_head),
        "max_position_embeddings": value("context_length"),
        "rms_norm_eps": float32_decimal(value("attention.layer_norm_rms_epsilon")),
        "rope_theta": float32_decimal(value("rope.freq_base", 10000.0)),
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "torch_dtype": "float32",
    }
    if spec.model_type == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
        config["mlp_bias"] = False
    scaling = value("rope.scaling.type", "none")
    if scaling != "none":
        config["rope_scaling"] = {"rope_type": scaling, "factor": float32_decimal(value("rope.scaling.factor", 1.0))}
        original = value("rope.scaling.original_context_length", None)
        if original is not None:
            config["rope_scaling"]["original_max_position_embeddings"] = original
    for gguf_key, hf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                             ("padding_token_id", "pad_token_id")):
        token_id = _field_value(reader, f"tokenizer.ggml.{gguf_key}", None)
        if token_id is not None:
            config[hf_key] = token_id
    return config


def _vocab_size(reader: gguf.GGUFReader, where: str) -> int:
    """The number of tokens of tokenizer.ggml.tokens, counted without decoding them."""
    field = reader.fields.get("tokenizer.ggml.tokens")
    if field is None:
        raise KeyError(f"{where} has neither a vocab_size key nor tokenizer.ggml.tokens")
    return len(field.data)


# ---------------------------------------------------------------------------- the checkpoint
@dataclass(frozen=True)
class _Entry:
    gguf_name: str
    reader_tensor: object  # gguf.ReaderTensor
    shape: tuple[int, ...]  # torch order
    type: str  # GGML type name
    rope_heads: int | None  # heads of the q/k permutation to undo, or None


class GGUFCheckpoint(PretrainedCheckpoint):
    """A GGUF file as a PretrainedCheckpoint under Hugging Face names (see the module docstring)."""

    format = "gguf"

    def __init__(self, path: str | os.PathLike, reader: gguf.GGUFReader | None = None):
        path = Path(path)
        self.reader = open_reader(path) if reader is None else reader
        if self.reader.endianess != gguf.GGUFEndian.LITTLE:
            raise ValueError(f"{path}: a big-endian GGUF file; minifm reads little-endian files only")
        config = hf_config_from_gguf(self.reader, str(path))
        self.architecture = ARCHITECTURES[_field_value(self.reader, "general.architecture")]
        self._entries: dict[str, _Entry] = {}
        unknown = []
        for tensor in self.reader.tensors:
            hf_name = hf_tensor_name(tensor.name)
            if hf_name is None:
                unknown.append(tensor.name)
                continue
            template, _ = name_template(tensor.name)
            heads_key = ROPE_PERMUTED.get(template) if self.architecture.rope_permuted else None
            self._entries[hf_name] = _Entry(
                gguf_name=tensor.name, reader_tensor=tensor,
                shape=tuple(int(size) for size in reversed(tensor.shape.tolist())),
                type=tensor.tensor_type.name, rope_heads=None if heads_key is None else config[heads_key])
        if unknown:
            raise ValueError(f"{path}: {len(unknown)} tensor(s) have no Hugging Face name in minifm's table "
                             f"(gguf.GGUF_TO_HF_NAMES), e.g. {unknown[:5]}; known: {sorted(GGUF_TO_HF_NAMES)}")
        super().__init__(path, config, list(self._entries))

    @functools.cached_property
    def metadata(self) -> dict:
        """Every metadata key with a plain Python value (read_metadata), read once on first use."""
        return read_metadata(self.reader)

    def gguf_name(self, name: str) -> str:
        """The llama.cpp name of the tensor with Hugging Face name `name`."""
        self._require(name)
        return self._entries[name].gguf_name

    def _shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def _stored_type(self, name: str) -> str:
        return self._entries[name].type

    def _file_rows(self, entry: _Entry) -> np.ndarray:
        """The stored bytes in the file's row order: uint8 (*shape[:-1], bytes per row), a read-only view."""
        stored = np.asarray(entry.reader_tensor.data).view(np.uint8)
        return stored.reshape(*entry.shape[:-1], -1)

    def _read_stored(self, name: str) -> QuantizedTensor:
        entry = self._entries[name]
        rows = self._file_rows(entry)
        if entry.rope_heads is not None and len(entry.shape) >= 2:
            rows = undo_rope_permutation(rows, entry.rope_heads, name)  # whole rows of blocks move
        elif entry.rope_heads is not None:  # a q/k bias: each value is a row of its own
            value_bytes = rows.size // entry.shape[0]
            if entry.type not in ("F32", "F16", "BF16"):
                raise ValueError(f"tensor {name!r} is a 1-D q/k tensor stored as {entry.type}: its values share "
                                 f"blocks, so there is no stored form in Hugging Face order; read it dequantized")
            values = rows.reshape(entry.shape[0], value_bytes)  # (n, bytes per value)
            rows = undo_rope_permutation(values, entry.rope_heads, name).reshape(-1)
        return QuantizedTensor(entry.type, entry.shape, rows, name)

    def _read_float32(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        try:
            values = QuantizedTensor(entry.type, entry.shape, self._file_rows(entry), name).dequantize()
        except UnsupportedTensorTypeError as error:
            raise UnsupportedTensorTypeError(f"{error}; in {self.path} as {entry.gguf_name!r}") from None
        if entry.rope_heads is not None:
            values = undo_rope_permutation(values, entry.rope_heads, name)
        return values

    def close(self) -> None:
        """Drop the reader and its memory map; names and shapes stay, tensors can no longer be read.
        Arrays tensor() returned stay valid (a QuantizedTensor's data keeps its part of the map alive)."""
        super().close()
        self._entries = {name: dataclasses.replace(entry, reader_tensor=None) for name, entry in self._entries.items()}
        self.reader = None
