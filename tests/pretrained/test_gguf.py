"""gguf.py: GGUF files read as Hugging Face checkpoints (names, torch shapes, q/k rows, config, errors).

Small synthetic files, written with gguf.GGUFWriter from known "Hugging Face" weights the way
convert_hf_to_gguf.py writes them (q/k rows permuted for Llama), must read back as those weights: exactly
for F32, and for quantized types exactly as the gguf package's quantize + dequantize give them (a row
permutation commutes with a row-wise quantizer). The permutation's meaning is checked with RoPE itself:
llama.cpp's adjacent-pair rotation of the permuted rows is Hugging Face's rotate-half of the original.

The real SmolLM2-135M file: every tensor dequantizes to the bits of gguf.quants.dequantize, and every
tensor under its Hugging Face name equals, bit for bit, what transformers' own GGUF loading pipeline
makes of it (llama.cpp's name table as gguf-py has it, which transformers consults, and transformers'
LlamaTensorProcessor, which reverses the permutation); the config agrees with transformers'
load_gguf_checkpoint. These replace a full AutoModelForCausalLM.from_pretrained(gguf_file=...) load
(~2 minutes), which runs the same steps.
"""
import weakref

import numpy as np
import pytest

from oracles import require
from minifm.pretrained import quants
from minifm.pretrained.gguf import (GGUFCheckpoint, PlainArrayGGUFReader, open_reader, read_metadata,
                                    undo_rope_permutation)
from minifm.pretrained.quants import QuantizedTensor, UnsupportedTensorTypeError

gguf = require("gguf")

VOCAB, HIDDEN, FFN, N_LAYER, N_HEAD, N_KV_HEAD = 10, 64, 96, 2, 4, 2
HEAD_DIM = HIDDEN // N_HEAD

# The name correspondence, restated from llama.cpp's and transformers' conventions ({N} = layer).
MODEL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
BIAS_NAMES = {"attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
              "attn_v.bias": "self_attn.v_proj.bias"}


def llama_cpp_permute(rows: np.ndarray, n_heads: int) -> np.ndarray:
    """convert_hf_to_gguf's q/k reordering: Hugging Face row j*(head_dim/2) + i -> GGUF row 2i + j."""
    head_dim = rows.shape[0] // n_heads
    halves = rows.reshape(n_heads, 2, head_dim // 2, *rows.shape[1:])  # [h, j, i]
    return halves.swapaxes(1, 2).reshape(rows.shape)  # [h, i, j]


def hf_weights(rng, tied=True, biases=False) -> dict[str, np.ndarray]:
    """gguf name -> (Hugging Face name, float32 weight in torch layout) of a tiny Llama."""
    shapes = {"token_embd.weight": (VOCAB, HIDDEN), "output_norm.weight": (HIDDEN,)}
    if not tied:
        shapes["output.weight"] = (VOCAB, HIDDEN)
    layer_shapes = {
        "attn_norm.weight": (HIDDEN,), "attn_q.weight": (HIDDEN, HIDDEN),
        "attn_k.weight": (N_KV_HEAD * HEAD_DIM, HIDDEN), "attn_v.weight": (N_KV_HEAD * HEAD_DIM, HIDDEN),
        "attn_output.weight": (HIDDEN, HIDDEN), "ffn_norm.weight": (HIDDEN,), "ffn_gate.weight": (FFN, HIDDEN),
        "ffn_up.weight": (FFN, HIDDEN), "ffn_down.weight": (HIDDEN, FFN)}
    if biases:
        layer_shapes.update({"attn_q.bias": (HIDDEN,), "attn_k.bias": (N_KV_HEAD * HEAD_DIM,),
                             "attn_v.bias": (N_KV_HEAD * HEAD_DIM,)})
    for layer in range(N_LAYER):
        shapes.update({f"blk.{layer}.{name}": shape for name, shape in layer_shapes.items()})
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def hf_name(gguf_name: str) -> str:
    if gguf_name in MODEL_NAMES:
        return MODEL_NAMES[gguf_name]
    _, layer, rest = gguf_name.split(".", 2)
    return f"model.layers.{layer}." + {**LAYER_NAMES, **BIAS_NAMES}[rest]


def metadata(arch="llama") -> dict:
    return {f"{arch}.block_count": N_LAYER, f"{arch}.context_length": 128, f"{arch}.embedding_length": HIDDEN,
            f"{arch}.feed_forward_length": FFN, f"{arch}.attention.head_count": N_HEAD,
            f"{arch}.attention.head_count_kv": N_KV_HEAD,
            f"{arch}.attention.layer_norm_rms_epsilon": 1e-5, f"{arch}.rope.freq_base": 500.0,
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}


def write_gguf(path, weights: dict, types: dict | None = None, arch="llama", fields: dict | None = None,
               permute=None, raw: dict | None = None):
    """A GGUF file of `weights` (gguf name -> torch-layout float32), stored as types[name] (default F32).

    permute: whether q/k rows are reordered as convert_hf_to_gguf does (default: for Llama).
    raw: gguf name -> (uint8 stored rows, GGML type name), written as they are.
    """
    permute = arch == "llama" if permute is None else permute
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata(arch) if fields is None else fields).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)
    writer.add_token_list([f"token{index}" for index in range(VOCAB)])
    for name, weight in weights.items():
        if permute and (".attn_q." in name or ".attn_k." in name):
            weight = llama_cpp_permute(weight, N_HEAD if ".attn_q." in name else N_KV_HEAD)
        type_name = (types or {}).get(name, "F32")
        if type_name == "F32":
            writer.add_tensor(name, weight)
        elif type_name == "F16":
            writer.add_tensor(name, weight.astype(np.float16))
        else:
            qtype = gguf.GGMLQuantizationType[type_name]
            with np.errstate(invalid="ignore"):  # a test's deliberate inf makes the quantizer's q NaN
                writer.add_tensor(name, gguf.quants.quantize(weight, qtype), raw_dtype=qtype)
    for name, (stored, type_name) in (raw or {}).items():
        writer.add_tensor(name, stored, raw_dtype=gguf.GGMLQuantizationType[type_name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def quantized_round_trip(weight: np.ndarray, type_name: str) -> np.ndarray:
    qtype = gguf.GGMLQuantizationType[type_name]
    return gguf.quants.dequantize(gguf.quants.quantize(weight, qtype), qtype)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture
def weights(rng):
    return hf_weights(rng)


@pytest.fixture
def llama_file(tmp_path, weights):
    return write_gguf(tmp_path / "tiny.gguf", weights)


# ---------------------------------------------------------------------------- names, shapes, values
def test_tensors_come_under_hugging_face_names_in_torch_shapes(llama_file, weights):
    with GGUFCheckpoint(llama_file) as checkpoint:
        assert sorted(checkpoint.names()) == sorted(hf_name(name) for name in weights)
        for name, weight in weights.items():
            assert checkpoint.shape(hf_name(name)) == weight.shape
            assert checkpoint.gguf_name(hf_name(name)) == name
        assert checkpoint.shape("model.layers.1.mlp.down_proj.weight") == (HIDDEN, FFN)  # (out, in)
        assert checkpoint.shape("model.layers.0.self_attn.k_proj.weight") == (N_KV_HEAD * HEAD_DIM, HIDDEN)


def test_f32_tensors_are_the_original_weights_with_q_and_k_rows_restored(llama_file, weights):
    with GGUFCheckpoint(llama_file) as checkpoint:
        for name, weight in weights.items():
            array = checkpoint.tensor(hf_name(name))
            assert array.dtype == np.float32 and array.flags.writeable
            np.testing.assert_array_equal(array, weight, err_msg=name)


def test_the_permutation_is_there_to_undo():
    rows = np.arange(N_HEAD * HEAD_DIM * 3, dtype=np.float32).reshape(N_HEAD * HEAD_DIM, 3)
    assert not np.array_equal(llama_cpp_permute(rows, N_HEAD), rows)
    for n_heads in (1, 2, N_HEAD):
        np.testing.assert_array_equal(undo_rope_permutation(llama_cpp_permute(rows, n_heads), n_heads), rows)
        bias = rows[:, 0]
        np.testing.assert_array_equal(undo_rope_permutation(llama_cpp_permute(bias, n_heads), n_heads), bias)
    with pytest.raises(ValueError, match=r"'w'.*6 rows.*4 heads"):
        undo_rope_permutation(np.zeros((6, 2)), 4, "w")


def rotate_half_rope(q, positions, base):
    """Hugging Face Llama's RoPE: dimension i turns with i + head_dim/2. q (T, heads, head_dim)."""
    half = q.shape[-1] // 2
    angles = positions[:, None, None] * base ** (-np.arange(half) / half)  # (T, 1, half)
    first, second = q[..., :half], q[..., half:]
    return np.concatenate([first * np.cos(angles) - second * np.sin(angles),
                           second * np.cos(angles) + first * np.sin(angles)], axis=-1)


def adjacent_pair_rope(q, positions, base):
    """llama.cpp's default RoPE: dimension 2i turns with 2i + 1, at the frequency of pair i."""
    half = q.shape[-1] // 2
    angles = positions[:, None, None] * base ** (-np.arange(half) / half)  # (T, 1, half)
    even, odd = q[..., 0::2], q[..., 1::2]
    out = np.empty_like(q)
    out[..., 0::2] = even * np.cos(angles) - odd * np.sin(angles)
    out[..., 1::2] = odd * np.cos(angles) + even * np.sin(angles)
    return out


def test_llama_cpp_rope_on_permuted_rows_is_hugging_face_rope_on_the_originals(rng):
    w_hf = rng.standard_normal((N_HEAD * HEAD_DIM, HIDDEN))  # q_proj, (out, in)
    x = rng.standard_normal((5, HIDDEN))  # (T, in)
    positions = np.arange(5, dtype=np.float64)
    q_hf = (x @ w_hf.T).reshape(5, N_HEAD, HEAD_DIM)
    q_gguf = (x @ llama_cpp_permute(w_hf, N_HEAD).T).reshape(5, N_HEAD, HEAD_DIM)
    rotated_gguf = adjacent_pair_rope(q_gguf, positions, 500.0).reshape(5, N_HEAD * HEAD_DIM)
    restored = undo_rope_permutation(rotated_gguf.T, N_HEAD).T.reshape(5, N_HEAD, HEAD_DIM)
    np.testing.assert_allclose(restored, rotate_half_rope(q_hf, positions, 500.0), rtol=1e-12, atol=1e-12)


TYPES = {"token_embd.weight": "Q8_0", "blk.0.attn_q.weight": "Q4_0", "blk.0.attn_k.weight": "Q4_1",
         "blk.1.attn_q.weight": "Q8_0", "blk.1.attn_k.weight": "BF16", "blk.0.attn_v.weight": "F16",
         "blk.0.attn_output.weight": "Q8_0", "blk.0.ffn_down.weight": "Q4_1", "blk.1.ffn_up.weight": "Q4_0"}


def test_quantized_tensors_dequantize_as_gguf_would_have_before_the_permutation(tmp_path, weights):
    path = write_gguf(tmp_path / "quantized.gguf", weights, TYPES)
    with GGUFCheckpoint(path) as checkpoint:
        for name, weight in weights.items():
            type_name = TYPES.get(name, "F32")
            assert checkpoint.stored_type(hf_name(name)) == type_name
            expected = weight if type_name == "F32" else quantized_round_trip(weight, type_name)
            assert same_bits(checkpoint.tensor(hf_name(name)), expected), name


def test_the_stored_form_is_the_block_bytes_in_hugging_face_row_order(tmp_path, weights):
    path = write_gguf(tmp_path / "quantized.gguf", weights, TYPES)
    with GGUFCheckpoint(path) as checkpoint:
        for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight", "token_embd.weight"):
            stored = checkpoint.tensor(hf_name(name), dequantize=False)
            assert isinstance(stored, QuantizedTensor)
            assert (stored.type, stored.shape, stored.name) == (TYPES[name], weights[name].shape, hf_name(name))
            expected_bytes = gguf.quants.quantize(weights[name], gguf.GGMLQuantizationType[TYPES[name]])
            np.testing.assert_array_equal(stored.data, expected_bytes)  # (rows, row_bytes), unpermuted
            assert same_bits(stored.dequantize(), checkpoint.tensor(hf_name(name)))
        norm = checkpoint.tensor("model.norm.weight", dequantize=False)
        assert (norm.type, norm.shape, norm.data.shape) == ("F32", (HIDDEN,), (4 * HIDDEN,))


def test_qwen2_biases_come_unpermuted_and_llama_biases_restored(tmp_path, rng):
    weights = hf_weights(rng, biases=True)
    for arch in ("qwen2", "llama"):
        path = write_gguf(tmp_path / f"{arch}.gguf", weights, arch=arch)
        with GGUFCheckpoint(path) as checkpoint:
            for name in ("blk.0.attn_q.bias", "blk.1.attn_k.bias", "blk.0.attn_q.weight", "blk.0.attn_v.bias"):
                np.testing.assert_array_equal(checkpoint.tensor(hf_name(name)), weights[name], err_msg=name)
                stored = checkpoint.tensor(hf_name(name), dequantize=False)
                np.testing.assert_array_equal(stored.dequantize(), weights[name], err_msg=name)


def test_a_quantized_q_bias_has_no_stored_form_in_hugging_face_order(tmp_path, rng):
    weights = hf_weights(rng, biases=True)
    path = write_gguf(tmp_path / "q8_bias.gguf", weights, {"blk.0.attn_q.bias": "Q8_0"})
    with GGUFCheckpoint(path) as checkpoint:
        name = "model.layers.0.self_attn.q_proj.bias"
        assert same_bits(checkpoint.tensor(name), quantized_round_trip(weights["blk.0.attn_q.bias"][None], "Q8_0")[0])
        with pytest.raises(ValueError, match=r"q_proj\.bias.*Q8_0.*read it dequantized"):
            checkpoint.tensor(name, dequantize=False)


# ---------------------------------------------------------------------------- config.json
def test_the_config_is_built_from_the_metadata(llama_file):
    with GGUFCheckpoint(llama_file) as checkpoint:
        assert checkpoint.config == {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
            "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": N_LAYER,
            "num_attention_heads": N_HEAD, "num_key_value_heads": N_KV_HEAD, "head_dim": HEAD_DIM,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 500.0, "hidden_act": "silu",
            "tie_word_embeddings": True, "torch_dtype": "float32", "attention_bias": False, "mlp_bias": False,
            "bos_token_id": 1, "eos_token_id": 2}


def test_config_variants(tmp_path, rng):
    fields = metadata() | {"llama.vocab_size": 12, "llama.attention.key_length": 16,
                           "llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0,
                           "tokenizer.ggml.padding_token_id": 0}
    del fields["llama.attention.head_count_kv"], fields["llama.rope.freq_base"]
    path = write_gguf(tmp_path / "untied.gguf", hf_weights(rng, tied=False), fields=fields, permute=False)
    with GGUFCheckpoint(path) as checkpoint:
        config = checkpoint.config
    assert config["tie_word_embeddings"] is False  # the file has output.weight
    assert (config["vocab_size"], config["head_dim"], config["pad_token_id"]) == (12, 16, 0)
    assert (config["num_key_value_heads"], config["rope_theta"]) == (N_HEAD, 10000.0)  # the defaults
    assert config["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}

    path = write_gguf(tmp_path / "qwen2.gguf", hf_weights(rng, biases=True), arch="qwen2")
    with GGUFCheckpoint(path) as checkpoint:
        assert (checkpoint.config["architectures"], checkpoint.config["model_type"]) == (["Qwen2ForCausalLM"], "qwen2")
        assert "attention_bias" not in checkpoint.config


def test_an_unknown_architecture_lists_the_supported_ones(tmp_path, weights):
    path = write_gguf(tmp_path / "gpt2.gguf", weights, arch="gpt2", permute=False)
    with pytest.raises(ValueError, match=r"general\.architecture='gpt2'.*\['llama', 'qwen2'\]"):
        GGUFCheckpoint(path)


def test_a_missing_size_key_is_named(tmp_path, weights):
    fields = metadata()
    del fields["llama.embedding_length"]
    with pytest.raises(KeyError, match=r"llama\.embedding_length"):
        GGUFCheckpoint(write_gguf(tmp_path / "bad.gguf", weights, fields=fields))


# ---------------------------------------------------------------------------- errors
def test_a_tensor_outside_the_name_table_is_refused_by_name(tmp_path, weights):
    weights["rope_freqs.weight"] = np.ones(HEAD_DIM // 2, np.float32)
    with pytest.raises(ValueError, match=r"1 tensor\(s\).*'rope_freqs\.weight'"):
        GGUFCheckpoint(write_gguf(tmp_path / "llama3.gguf", weights))


def test_an_unsupported_type_names_tensor_type_and_file_name(tmp_path, rng):
    weights = hf_weights(rng)
    del weights["blk.1.ffn_down.weight"]
    q4_k_rows = rng.integers(0, 256, size=(HIDDEN, 144), dtype=np.uint8)  # one 256-value Q4_K block per row
    path = write_gguf(tmp_path / "k.gguf", weights, raw={"blk.1.ffn_down.weight": (q4_k_rows, "Q4_K")})
    with GGUFCheckpoint(path) as checkpoint:
        name = "model.layers.1.mlp.down_proj.weight"
        assert checkpoint.stored_type(name) == "Q4_K" and checkpoint.shape(name) == (HIDDEN, 256)
        with pytest.raises(UnsupportedTensorTypeError, match=r"down_proj.*Q4_K.*'blk\.1\.ffn_down\.weight'"):
            checkpoint.tensor(name)
        stored = checkpoint.tensor(name, dequantize=False)  # the stored form is still there
        np.testing.assert_array_equal(stored.data, q4_k_rows)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, weights):
    weights["blk.1.ffn_norm.weight"][3] = np.nan
    weights["token_embd.weight"][2, 40] = np.inf
    path = write_gguf(tmp_path / "nan.gguf", weights, {"token_embd.weight": "Q8_0"})
    with GGUFCheckpoint(path) as checkpoint:
        with pytest.raises(ValueError, match=r"post_attention_layernorm.*1 non-finite.*\(3,\)"):
            checkpoint.tensor("model.layers.1.post_attention_layernorm.weight")
        with pytest.raises(ValueError, match=r"embed_tokens.*32 non-finite.*\(2, 32\)"):  # an infinite scale
            checkpoint.tensor("model.embed_tokens.weight")
        assert np.isnan(checkpoint.tensor("model.layers.1.post_attention_layernorm.weight", dequantize=False)
                        .dequantize()[3])  # the stored form says what is in the file


def test_unknown_names_say_what_is_close(llama_file):
    with GGUFCheckpoint(llama_file) as checkpoint:
        with pytest.raises(KeyError, match=r"'model\.layers\.0\.self_attn\.q\.weight'.*q_proj\.weight"):
            checkpoint.tensor("model.layers.0.self_attn.q.weight")
        with pytest.raises(KeyError, match="blk.0.attn_q.weight"):
            checkpoint.shape("blk.0.attn_q.weight")  # llama.cpp names are not the checkpoint's names


def test_missing_garbage_and_truncated_files(tmp_path, llama_file):
    with pytest.raises(FileNotFoundError, match="nowhere.gguf"):
        GGUFCheckpoint(tmp_path / "nowhere.gguf")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match=r"garbage\.gguf.*not a readable GGUF"):
        GGUFCheckpoint(garbage)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(llama_file.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"truncated\.gguf.*not a readable GGUF"):
        GGUFCheckpoint(truncated)


def test_a_closed_checkpoint_reads_no_more(llama_file):
    checkpoint = GGUFCheckpoint(llama_file)
    checkpoint.close()
    assert checkpoint.shape("model.norm.weight") == (HIDDEN,)
    with pytest.raises(ValueError, match="closed"):
        checkpoint.tensor("model.norm.weight")


# ---------------------------------------------------------------------------- laziness, the mapping, the reader
def test_tensors_are_read_on_access_and_never_kept(llama_file):
    with GGUFCheckpoint(llama_file) as checkpoint:
        tensors = checkpoint.tensors
        assert len(tensors) == len(checkpoint.names()) and list(tensors) == checkpoint.names()
        assert "model.norm.weight" in tensors and "output.weight" not in tensors
        first = tensors["model.embed_tokens.weight"]
        assert first is not tensors["model.embed_tokens.weight"]  # a fresh read each time
        reference = weakref.ref(first)
        del first
        assert reference() is None  # the checkpoint kept no copy
        assert [name for name, _ in checkpoint.items()] == checkpoint.names()


def test_the_plain_array_reader_reads_what_gguf_reader_reads(llama_file):
    ours, theirs = open_reader(llama_file), gguf.GGUFReader(llama_file, "r")
    assert isinstance(ours, PlainArrayGGUFReader) and type(ours.data) is np.ndarray
    assert not ours.data.flags.writeable
    assert read_metadata(ours) == read_metadata(theirs) == read_metadata(llama_file)
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, reference in zip(ours.tensors, theirs.tensors):
        np.testing.assert_array_equal(mine.data, reference.data)


# ---------------------------------------------------------------------------- the real SmolLM2-135M file
@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    with GGUFCheckpoint(smollm2_gguf) as checkpoint:
        yield checkpoint


def test_every_real_tensor_dequantizes_to_the_bits_of_gguf(smollm2):
    types = set()
    for tensor in smollm2.reader.tensors:
        ours = quants.dequantize(np.asarray(tensor.data).view(np.uint8), tensor.tensor_type.name, tensor.name)
        assert same_bits(ours, gguf.quants.dequantize(tensor.data, tensor.tensor_type)), tensor.name
        types.add(tensor.tensor_type.name)
    assert types == {"F32", "Q8_0", "Q4_1"}


@pytest.fixture(scope="module")
def transformers_config(smollm2):
    """transformers' config dict for the file (load_gguf_checkpoint), on the reader already open."""
    require("torch")
    require("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with pytest.MonkeyPatch.context() as patch:  # it opens the file with gguf.GGUFReader: reuse ours
        patch.setattr(gguf, "GGUFReader", lambda *args, **kwargs: smollm2.reader)
        return load_gguf_checkpoint(str(smollm2.path))["config"]


def test_the_real_config_agrees_with_transformers(smollm2, transformers_config):
    ours = smollm2.config
    shared = set(ours) & set(transformers_config)
    assert {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
            "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "model_type"} <= shared
    for key in shared:
        if isinstance(ours[key], float):  # GGUF holds float32: transformers gives its full double expansion
            assert np.float32(ours[key]) == np.float32(transformers_config[key]), key
        else:
            assert ours[key] == transformers_config[key], key
    assert ours["architectures"] == ["LlamaForCausalLM"] and ours["rms_norm_eps"] == 1e-05


def test_every_real_tensor_equals_transformers_gguf_pipeline(smollm2, transformers_config):
    require("torch")
    require("transformers")
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    # Names: llama.cpp's own table (gguf-py's TensorNameMap), which transformers' get_gguf_hf_weights_map
    # consults for every parameter (it rebuilds the table per submodule, ~16 s here; once is enough).
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, transformers_config["num_hidden_layers"])
    for name in smollm2.names():
        module, suffix = name.rsplit(".", 1)
        assert f"{name_map.get_name(module)}.{suffix}" == smollm2.gguf_name(name), name
    # Values: the reference dequantization, then transformers' LlamaTensorProcessor (the reverse permutation).
    processor = LlamaTensorProcessor(config=transformers_config)
    stored = {tensor.name: tensor for tensor in smollm2.reader.tensors}
    for name in smollm2.names():
        tensor = stored[smollm2.gguf_name(name)]
        theirs = processor.process(weights=gguf.quants.dequantize(tensor.data, tensor.tensor_type),
                                   name=tensor.name).weights
        assert same_bits(smollm2.tensor(name), np.ascontiguousarray(theirs)), name
