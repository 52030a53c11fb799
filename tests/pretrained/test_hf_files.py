"""hf_files.py and checkpoint_files.py: Hugging Face directories of safetensors files, and which reader a path gets.

Small directories written in tmp dirs: one model.safetensors or an index with shards, every dtype the
reader converts (F32 kept, F16/F64 to float32, BF16 through its raw bits, checked against torch;
integers kept), the stored (byte) form, and every refusal: no config.json, a pickle instead of
safetensors (never unpickled: the test's pickle would leave a file behind if it were), an index naming a
missing shard or a tensor its shard lacks, a file cut short (named with the tensor cut off), a name the
checkpoint lacks (with similar names), a non-finite weight. The real all-MiniLM-L6-v2 directory reads
back exactly as the safetensors library loads it.
"""
import json
import pickle
import struct
import weakref

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from oracles import require
from minifm.pretrained import checkpoint_files
from minifm.pretrained.checkpoint_files import read_checkpoint
from minifm.pretrained.gguf import GGUFCheckpoint
from minifm.pretrained.hf_files import HFCheckpoint, SafetensorsError
from minifm.pretrained.quants import QuantizedTensor
from test_gguf import hf_weights, write_gguf

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "vocab_size": 5}


def write_directory(directory, tensors: dict, config=CONFIG, shards: list[list[str]] | None = None):
    """config.json + model.safetensors, or (shards: the names of each shard) an index and its shards."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if shards is None:
        save_file(tensors, str(directory / "model.safetensors"))
        return directory
    weight_map = {}
    for number, names in enumerate(shards, start=1):
        shard = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file({name: tensors[name] for name in names}, str(directory / shard))
        weight_map.update({name: shard for name in names})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def data_order(path) -> list[str]:
    """The tensor names of a safetensors file in the order of their bytes (read from its header)."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return sorted(header, key=lambda name: header[name]["data_offsets"][0])


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture
def tensors(rng):
    return {
        "model.embed_tokens.weight": rng.standard_normal((5, 8)).astype(np.float32),
        "model.norm.weight": rng.standard_normal(8).astype(np.float16),
        "lm_head.weight": rng.standard_normal((5, 8)),  # float64
        "model.position_ids": np.arange(5, dtype=np.int64)[None],
    }


@pytest.fixture
def model_dir(tmp_path, tensors):
    return write_directory(tmp_path / "model", tensors)


# ---------------------------------------------------------------------------- reading
def test_a_single_file_directory(model_dir, tensors):
    with HFCheckpoint(model_dir) as checkpoint:
        assert checkpoint.config == CONFIG and checkpoint.format == "safetensors"
        assert sorted(checkpoint.names()) == sorted(tensors)
        assert checkpoint.names() == data_order(model_dir / "model.safetensors")  # file order
        assert [checkpoint.stored_type(name) for name in tensors] == ["F32", "F16", "F64", "I64"]
        for name, array in tensors.items():
            assert checkpoint.shape(name) == array.shape
            assert checkpoint.file_of(name) == model_dir / "model.safetensors"
        embedding = checkpoint.tensor("model.embed_tokens.weight")
        np.testing.assert_array_equal(embedding, tensors["model.embed_tokens.weight"])
        norm = checkpoint.tensor("model.norm.weight")
        assert same_bits(norm, tensors["model.norm.weight"].astype(np.float32))  # f16 -> f32 is exact
        assert same_bits(checkpoint.tensor("lm_head.weight"), tensors["lm_head.weight"].astype(np.float32))
        position_ids = checkpoint.tensor("model.position_ids")
        assert position_ids.dtype == np.int64 and position_ids.tolist() == [[0, 1, 2, 3, 4]]


def test_bf16_reads_as_torch_converts_it(tmp_path):
    torch = require("torch")
    from safetensors.torch import save_file as save_torch

    generator = torch.Generator().manual_seed(0)
    finite = torch.cat([torch.randn(60, generator=generator), torch.tensor([0.0, -0.0, 1e-40, 3e38])])
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
    weights = {"w": finite.reshape(8, 8).to(torch.bfloat16), "special": special.to(torch.bfloat16)}
    directory = tmp_path / "bf16"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(CONFIG))
    save_torch(weights, str(directory / "model.safetensors"))
    with HFCheckpoint(directory) as checkpoint:
        assert checkpoint.stored_type("w") == "BF16"
        assert same_bits(checkpoint.tensor("w"), weights["w"].float().numpy())
        stored = checkpoint.tensor("special", dequantize=False)
        assert (stored.type, stored.shape) == ("BF16", (4,))
        assert same_bits(stored.dequantize(), weights["special"].float().numpy())  # NaN bits too
        with pytest.raises(ValueError, match=r"'special'.*3 non-finite"):
            checkpoint.tensor("special")


def test_the_stored_form_is_the_file_bytes(model_dir, tensors):
    with HFCheckpoint(model_dir) as checkpoint:
        stored = checkpoint.tensor("model.norm.weight", dequantize=False)
        assert isinstance(stored, QuantizedTensor) and (stored.type, stored.shape) == ("F16", (8,))
        assert stored.data.tobytes() == tensors["model.norm.weight"].tobytes()
        embedding = checkpoint.tensor("model.embed_tokens.weight", dequantize=False)
        assert embedding.data.shape == (5, 32)  # (rows, bytes per row)
        np.testing.assert_array_equal(embedding.dequantize(), tensors["model.embed_tokens.weight"])
        with pytest.raises(ValueError, match=r"'model\.position_ids'.*I64"):
            checkpoint.tensor("model.position_ids", dequantize=False)


def test_a_sharded_directory(tmp_path, tensors):
    shards = [["model.embed_tokens.weight", "lm_head.weight"], ["model.norm.weight", "model.position_ids"]]
    directory = write_directory(tmp_path / "sharded", tensors, shards=shards)
    with HFCheckpoint(directory) as checkpoint:
        assert sorted(checkpoint.names()) == sorted(tensors)
        assert set(checkpoint.names()[:2]) == set(shards[0])  # shard by shard
        assert checkpoint.file_of("model.norm.weight").name == "model-00002-of-00002.safetensors"
        for name, array in tensors.items():
            np.testing.assert_array_equal(checkpoint.tensor(name), array.astype(np.float32) if array.dtype.kind == "f"
                                          else array)


def test_tensors_are_read_on_access_and_never_kept(model_dir):
    with HFCheckpoint(model_dir) as checkpoint:
        tensors = checkpoint.tensors
        assert list(tensors) == checkpoint.names() and "lm_head.weight" in tensors and "x" not in tensors
        first = tensors["model.embed_tokens.weight"]
        assert first is not tensors["model.embed_tokens.weight"]
        reference = weakref.ref(first)
        del first
        assert reference() is None


def test_the_real_minilm_directory_reads_as_safetensors_loads_it(minilm_dir):
    reference = load_file(str(minilm_dir / "model.safetensors"))
    with HFCheckpoint(minilm_dir) as checkpoint:
        assert checkpoint.config["architectures"] == ["BertModel"] and checkpoint.config["model_type"] == "bert"
        assert sorted(checkpoint.names()) == sorted(reference)
        for name, array in checkpoint.items():
            assert array.dtype == reference[name].dtype and np.array_equal(array, reference[name]), name


# ---------------------------------------------------------------------------- refusals
def test_a_directory_without_config_json(tmp_path, tensors):
    directory = write_directory(tmp_path / "noconfig", tensors)
    (directory / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"noconfig has no config\.json"):
        HFCheckpoint(directory)
    write_gguf(directory / "model.gguf", hf_weights(np.random.default_rng(0)))
    with pytest.raises(FileNotFoundError, match=r"model\.gguf.*pass that \.gguf file"):
        HFCheckpoint(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        HFCheckpoint(directory)


class LeavesAFileWhenUnpickled:
    """Unpickling this object opens (creates) a file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_refused_and_never_unpickled(tmp_path):
    directory = tmp_path / "pickled"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(CONFIG))
    marker = tmp_path / "unpickled"
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps(LeavesAFileWhenUnpickled(marker)))
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*only safetensors.*never unpickles"):
        read_checkpoint(directory)
    with pytest.raises(ValueError, match=r"looks like a pickle.*never unpickles"):
        read_checkpoint(directory / "pytorch_model.bin")
    assert not marker.exists()


def test_a_directory_with_no_weights_lists_what_it_holds(tmp_path):
    directory = tmp_path / "empty"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(FileNotFoundError, match=r"neither model\.safetensors nor .*index.*config\.json"):
        HFCheckpoint(directory)


def test_index_errors_name_the_shard_and_the_tensor(tmp_path, tensors):
    directory = write_directory(tmp_path / "sharded", tensors, shards=[["model.embed_tokens.weight"],
                                                                       ["model.norm.weight"]])
    index = directory / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]

    index.write_text(json.dumps({"weight_map": {**weight_map, "lm_head.weight": "model-00003-of-00003.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"'lm_head\.weight' in shard 'model-00003-of-00003\.safetensors'"):
        HFCheckpoint(directory)
    index.write_text(json.dumps({"weight_map": {**weight_map, "lm_head.weight": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(SafetensorsError, match=r"'lm_head\.weight' in model-00001-of-00002\.safetensors.*no such"):
        HFCheckpoint(directory)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match=r"index\.json.*weight_map"):
        HFCheckpoint(directory)


def test_a_truncated_file_names_the_file_and_the_tensor_cut_off(model_dir):
    path = model_dir / "model.safetensors"
    last = data_order(path)[-1]
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])
    with pytest.raises(SafetensorsError, match=rf"model\.safetensors: truncated.*'{last}'.*3 bytes short"):
        HFCheckpoint(model_dir)
    path.write_bytes(whole[:20])  # inside the header
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: truncated.*header"):
        HFCheckpoint(model_dir)
    path.write_bytes(whole[:5])
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: truncated.*5 bytes"):
        HFCheckpoint(model_dir)


def test_a_truncated_shard_is_named(tmp_path, tensors):
    directory = write_directory(tmp_path / "sharded", tensors, shards=[["model.embed_tokens.weight"],
                                                                       ["model.norm.weight"]])
    shard = directory / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(SafetensorsError, match=r"model-00002-of-00002\.safetensors: truncated.*'model\.norm\.weight'"):
        HFCheckpoint(directory)


def test_unknown_names_say_what_is_close(model_dir):
    with HFCheckpoint(model_dir) as checkpoint:
        with pytest.raises(KeyError, match=r"'model\.embed_token\.weight'.*similar names.*embed_tokens"):
            checkpoint.tensors["model.embed_token.weight"]


def test_non_finite_weights_are_refused(tmp_path, tensors):
    tensors["model.embed_tokens.weight"][1, 2] = -np.inf
    with HFCheckpoint(write_directory(tmp_path / "inf", tensors)) as checkpoint:
        with pytest.raises(ValueError, match=r"'model\.embed_tokens\.weight'.*1 non-finite.*\(1, 2\)"):
            checkpoint.tensor("model.embed_tokens.weight")


# ---------------------------------------------------------------------------- read_checkpoint: which reader
def test_read_checkpoint_picks_the_reader(tmp_path, model_dir):
    assert isinstance(read_checkpoint(model_dir), HFCheckpoint)
    gguf_file = write_gguf(tmp_path / "tiny.gguf", hf_weights(np.random.default_rng(0)))
    assert isinstance(read_checkpoint(gguf_file), GGUFCheckpoint)
    without_suffix = tmp_path / "tiny-model"
    without_suffix.write_bytes(gguf_file.read_bytes())
    assert isinstance(read_checkpoint(without_suffix), GGUFCheckpoint)  # by its magic bytes


def test_read_checkpoint_refuses_a_lone_safetensors_file(tmp_path, model_dir):
    with pytest.raises(ValueError, match=r"lone safetensors file.*config\.json.*pass its directory"):
        read_checkpoint(model_dir / "model.safetensors")
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((model_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"lone safetensors file.*put it in a directory with its config\.json"):
        read_checkpoint(alone)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt.*neither a Hugging Face model directory.*nor a GGUF"):
        read_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_checkpoint(tmp_path / "nowhere")


def test_read_checkpoint_resolves_short_names(monkeypatch, smollm2_gguf):
    opened = []
    monkeypatch.setattr(checkpoint_files, "GGUFCheckpoint", opened.append)
    read_checkpoint("smollm2-135m-instruct")
    assert opened == [smollm2_gguf]
