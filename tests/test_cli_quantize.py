"""`minifm quantize` and the --dtype flag of generate / chat: a run quantized into a new run directory that loads
back with the same blocks, default output names, one-line errors, and SmolLM2 chatting in its own Q4_1."""
import numpy as np
import pytest

import minifm as mf
from minifm import cli
from minifm.cli import generate as generate_command
from minifm.cli import quantize as quantize_command
from minifm.models import GPT, GPTConfig
from minifm.nn.quantized import QuantizedEmbedding, QuantizedLinear
from minifm.pretrained.gguf import GGUFCheckpoint
from minifm.pretrained.quants import quantize
from minifm.runs import load_any, load_run, save_run
from minifm.tokenizer import BPETokenizer


@pytest.fixture
def float_run(tmp_path):
    """A small Llama-shaped GPT run (widths multiples of 32, as the block formats need)."""
    tokenizer = BPETokenizer.train(["the cat sat on the mat. the dog ran."] * 8, 270)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=64,
                          mlp="swiglu", pos="rope", norm="rmsnorm", bias=False, mlp_hidden=64))
    return save_run(model, tokenizer, tmp_path / "float-run")


def _parser_error(argv, capsys) -> str:
    """The one line argparse prints (exit 2) for a bad flag value."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    return _error_line(capsys)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_quantize_a_run_and_load_it_back(float_run, tmp_path, capsys):
    out = tmp_path / "q8"
    assert cli.main(["quantize", str(float_run), "--dtype", "q8_0", "--out", str(out)]) == 0
    assert "q8_0 weights" in capsys.readouterr().out
    original, _ = load_run(float_run)
    model, tokenizer = load_run(out)
    assert (model.config.weight_dtype, model.config.embedding_dtype) == ("q8_0", "q8_0")
    assert type(model.blocks[0].mlp.down_proj) is QuantizedLinear and type(model.wte) is QuantizedEmbedding
    expected = original.state_dict()
    for name, array in model.state_dict().items():  # blocks = the float weights quantized, bit for bit
        wanted = quantize(expected[name], "q8_0").data if array.dtype == np.uint8 else expected[name]
        np.testing.assert_array_equal(array, wanted, err_msg=name)
    ids = np.array([tokenizer.encode("the cat")])
    with mf.no_grad():
        np.testing.assert_allclose(model(ids).data, original(ids).data, atol=0.02)
    again = tmp_path / "q8-again"  # a quantized run quantized to its own format keeps its blocks
    assert cli.main(["quantize", str(out), "--dtype", "q8_0", "--out", str(again)]) == 0
    for name, array in load_run(again)[0].state_dict().items():
        np.testing.assert_array_equal(array, model.state_dict()[name], err_msg=name)


def test_a_hugging_face_directory_source(float_run, tmp_path):
    model, tokenizer = load_run(float_run)
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    assert cli.main(["quantize", str(tmp_path / "hf"), "--dtype", "q4_1", "--out", str(tmp_path / "q41")]) == 0
    quantized, _ = load_run(tmp_path / "q41")
    assert (quantized.config.weight_dtype, quantized.config.embedding_dtype) == ("q4_1", "q8_0")
    np.testing.assert_array_equal(quantized.blocks[0].attn.q_proj.weight,
                                  quantize(model.blocks[0].attn.q_proj.weight.data, "q4_1").data)


def test_the_gguf_source_keeps_its_own_blocks(smollm2_gguf, tmp_path):
    """SmolLM2's Q4_1 file quantized to q4_1: its Linear blocks and its Q8_0 embedding are copied as they are
    (compared with the file's stored bytes, in Hugging Face row order), and the tokenizer comes along."""
    out = tmp_path / "smollm2-q4_1"
    assert cli.main(["quantize", "smollm2-135m-instruct", "--dtype", "q4_1", "--out", str(out)]) == 0
    saved, tokenizer = load_run(out)
    assert (saved.config.weight_dtype, saved.config.embedding_dtype) == ("q4_1", "q8_0")
    pairs = {"blocks.0.attn.q_proj.weight": "model.layers.0.self_attn.q_proj.weight",
             "blocks.29.mlp.down_proj.weight": "model.layers.29.mlp.down_proj.weight",
             "wte.weight": "model.embed_tokens.weight"}
    state = saved.state_dict()
    with GGUFCheckpoint(smollm2_gguf) as checkpoint:
        for name, hf_name in pairs.items():
            np.testing.assert_array_equal(state[name], checkpoint.tensor(hf_name, dequantize=False).data, err_msg=name)
    assert tokenizer.decode(tokenizer.encode("Hello, world")) == "Hello, world"


def test_default_output_is_beside_a_run_and_under_runs_for_real_models(float_run, tmp_path, monkeypatch):
    assert quantize_command.default_output(str(float_run), float_run, "q4_0") == float_run.parent / "float-run-q4_0"
    gguf = tmp_path / "Model.Q4_1.gguf"
    gguf.write_bytes(b"")
    assert quantize_command.default_output(str(gguf), gguf, "q8_0").as_posix() == "runs/Model.Q4_1-q8_0"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["quantize", str(float_run), "--dtype", "q4_1"]) == 0
    assert load_run(float_run.parent / "float-run-q4_1")[0].config.weight_dtype == "q4_1"


def test_bad_input_is_one_line_and_exit_2(float_run, tmp_path, capsys):
    assert "invalid choice" in _parser_error(["quantize", str(float_run), "--dtype", "q5_1"], capsys)
    assert cli.main(["quantize", str(tmp_path / "missing"), "--dtype", "q8_0"]) == 2
    assert "neither an existing path" in _error_line(capsys)
    assert cli.main(["quantize", str(float_run), "--dtype", "q8_0", "--out", str(float_run)]) == 2
    assert "already holds a model" in _error_line(capsys)
    assert cli.main(["quantize", str(float_run), "--dtype", "q8_0", "--out", str(float_run), "--overwrite"]) == 2
    assert "SRC itself" in _error_line(capsys)
    narrow = GPT(GPTConfig(vocab_size=load_run(float_run)[0].config.vocab_size, block_size=8, n_layer=1, n_head=2,
                           n_embd=48))
    save_run(narrow, load_run(float_run)[1], tmp_path / "narrow")
    assert cli.main(["quantize", str(tmp_path / "narrow"), "--dtype", "q8_0", "--out", str(tmp_path / "n8")]) == 2
    assert "not a whole number of Q8_0 blocks" in _error_line(capsys)


def test_generate_takes_a_dtype(float_run, capsys):
    args = ["generate", "--model", str(float_run), "--prompt", "the", "--max-new-tokens", "3", "--seed", "0"]
    assert cli.main(args + ["--dtype", "q4_0"]) == 0
    assert capsys.readouterr().out.startswith("the")
    assert "invalid choice" in _parser_error(args + ["--dtype", "int4"], capsys)


def test_generate_with_int8_activations_needs_quantized_weights(float_run, monkeypatch, capsys):
    loaded = []
    real_load_any = generate_command.load_any
    monkeypatch.setattr(generate_command, "load_any",
                        lambda name, dtype: loaded.append(real_load_any(name, dtype=dtype)) or loaded[-1])
    args = ["generate", "--model", str(float_run), "--prompt", "the", "--max-new-tokens", "3", "--seed", "0"]
    assert cli.main(args + ["--dtype", "q8_0", "--int8-activations"]) == 0
    assert capsys.readouterr().out.startswith("the")
    model = loaded[-1][0]
    assert model.config.int8_activations and all(layer.quantize_input for layer in model.modules()
                                                 if isinstance(layer, (QuantizedLinear, QuantizedEmbedding)))
    assert cli.main(args + ["--dtype", "float32", "--int8-activations"]) == 2
    assert "--int8-activations rounds the inputs of quantized products" in _error_line(capsys)
    assert len(loaded) == 1  # refused before loading
    assert cli.main(args + ["--int8-activations"]) == 2  # a float run as saved
    assert "has no quantized weights" in _error_line(capsys)


def test_chat_runs_smollm2_in_its_own_q4_1_by_default(smollm2_gguf, monkeypatch, capsys):
    loaded = []
    real_load_any = generate_command.load_any  # chat loads through generate.load_for_generation

    def spy(name, dtype="float32"):
        model, tokenizer = real_load_any(name, dtype=dtype)
        loaded.append(model)
        return model, tokenizer

    monkeypatch.setattr(generate_command, "load_any", spy)
    monkeypatch.setattr("sys.stdin", _Lines("What is the capital of France?\n"))
    assert cli.main(["chat", "--model", "smollm2-135m-instruct", "--max-new-tokens", "12", "--seed", "0"]) == 0
    assert "Paris" in capsys.readouterr().out
    (model,) = loaded
    assert (model.config.weight_dtype, model.config.embedding_dtype) == ("q4_1", "q8_0")


class _Lines:
    """Piped stdin (not a terminal) holding `text`."""

    def __init__(self, text: str):
        self.lines = text.splitlines(keepends=True)

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        return self.lines.pop(0) if self.lines else ""
