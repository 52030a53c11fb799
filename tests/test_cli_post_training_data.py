"""`minifm sft --data` and `minifm dpo --data` end to end: sft then dpo on the sft output, on a minifm run
(minifm's tokenizer and chat template) and on a Hugging Face model (a tiny random Llama with a ChatML
tokenizer.json, and SmolLM2 itself); what the output holds (run, metrics.jsonl, summary.json, DIR/hf/ that
transformers loads with the same logits, PEFT adapter files); a Ctrl-C'd run resumed bit for bit; and the
errors that stop a run before any training, each one line on stderr with exit code 2."""
import contextlib
import io
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifm import cli
from minifm.models import GPT, GPTConfig
from minifm.runs import load_any, save_run
from minifm.tokenizer import BPETokenizer, from_pretrained
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS
from minifm.train import sft
from minifm.train.loop import read_metrics
from oracles import require

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
FAST = ["--max-steps", "3", "--learning-rate", "3e-3", "--per-device-train-batch-size", "4", "--max-length", "96",
        "--eval-steps", "2", "--disable-tqdm"]


def byte_tokenizer(extra=()):
    return BPETokenizer(np.zeros((0, 2), dtype=np.int64), special_tokens=DEFAULT_SPECIAL_TOKENS + tuple(extra))


def tiny_llama(vocab_size):
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=128, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                         pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, seed=0))


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A Hugging Face directory: a tiny random Llama and a byte-level tokenizer.json with SmolLM2's ChatML."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    byte_tokenizer(("<|im_start|>", "<|im_end|>")).save_pretrained(directory)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(eos_token="<|im_end|>", chat_template=CHATML)
    config_file.write_text(json.dumps(config))
    tiny_llama(from_pretrained(directory).vocab_size).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def minifm_run(tmp_path_factory):
    """A minifm run directory: a tiny GPT-2-style model with minifm's tokenizer (minifm's chat template)."""
    directory = tmp_path_factory.mktemp("minifm-run")
    tokenizer = byte_tokenizer()
    save_run(GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=16)),
             tokenizer, directory)
    return directory


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows),
                    encoding="utf-8")
    return path


def chat(question, answer):
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    questions = [(f"What is {i} plus one?", f"It is {i + 1}.") for i in range(12)]
    return {
        "messages": write_jsonl(folder / "sft.jsonl", [{"messages": chat(q, a)} for q, a in questions]),
        "standard": write_jsonl(folder / "standard.jsonl",
                                [{"prompt": q, "completion": " " + a} for q, a in questions]),
        # TRL's implicit prompt: chosen and rejected are whole conversations sharing the user turn
        "pairs": write_jsonl(folder / "dpo.jsonl", [{"chosen": chat(q, a), "rejected": chat(q, "I do not know!")}
                                                   for q, a in questions]),
    }


def run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def logits_of(model, ids):
    return model(np.asarray([ids])).data[0]


# ---------------------------------------------------------------------------- end to end
def test_sft_then_dpo_on_a_minifm_run(tmp_path, minifm_run, data, capsys):
    out = tmp_path / "sft"
    code, stdout, err = run(["sft", "--model", str(minifm_run), "--data", str(data["messages"]), "--out", str(out)]
                            + FAST, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_rows"] == 11 and summary["eval_rows"] == 1  # 10% of 12, rounded, at least one
    assert json.loads(stdout[stdout.index("{"):])["eval"] == summary["eval"]
    assert [row["step"] for row in read_metrics(out / "metrics.jsonl") if "eval_loss" in row] == [2, 3]
    assert not (out / "hf").exists() and not (out / "sft").exists()  # minifm's tokenizer: no Hugging Face copy
    model, tokenizer = load_any(out)
    assert isinstance(tokenizer, BPETokenizer)
    code, _, err = run(["dpo", "--model", str(out), "--data", str(data["pairs"]), "--out", str(tmp_path / "dpo"),
                        "--eval-fraction", "0.25"] + FAST, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
    assert summary["train_pairs"] == 9 and summary["eval_pairs"] == 3
    assert summary["eval_before"]["eval_loss"] == pytest.approx(np.log(2), abs=1e-6)
    rows = [row for row in read_metrics(tmp_path / "dpo" / "metrics.jsonl") if "eval_loss" in row]
    assert {"eval_rewards_accuracy", "eval_rewards_margin"} <= set(rows[-1])
    # the standard format (strings: plain text + <|endoftext|>, no template) runs on the same model
    code, _, err = run(["sft", "--model", str(minifm_run), "--data", str(data["standard"]),
                        "--out", str(tmp_path / "standard")] + FAST, capsys)
    assert code == 0, err


def test_sft_then_dpo_on_a_hugging_face_model_leaves_hugging_face_files(tmp_path, hf_model, data, capsys):
    out = tmp_path / "sft"
    code, stdout, err = run(["sft", "--model", str(hf_model), "--data", str(data["messages"]), "--out", str(out)]
                            + FAST, capsys)
    assert code == 0, err
    assert f"wrote {out / 'hf'}" in stdout
    trained, tokenizer = load_any(out)
    exported, exported_tokenizer = load_any(out / "hf")
    ids = tokenizer.apply_chat_template(chat("What is 3 plus one?", "It is 4."))
    assert exported_tokenizer.apply_chat_template(chat("What is 3 plus one?", "It is 4.")) == ids
    np.testing.assert_array_equal(logits_of(trained, ids), logits_of(exported, ids))
    assert not np.array_equal(logits_of(trained, ids), logits_of(load_any(hf_model)[0], ids))  # it trained

    # dpo with LoRA on the sft output: the adapter alone (what TRL's save_model writes with PEFT), no hf/
    code, _, err = run(["dpo", "--model", str(out), "--data", str(data["pairs"]), "--out", str(tmp_path / "lora"),
                        "--peft", "lora", "--lora-r", "2"] + FAST, capsys)
    assert code == 0, err
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "lora" / "hf").exists()
    # --save-hf with LoRA: the merged model as a Hugging Face directory too
    code, _, err = run(["dpo", "--model", str(out), "--data", str(data["pairs"]), "--out", str(tmp_path / "merged"),
                        "--peft", "lora", "--lora-r", "2", "--save-hf"] + FAST, capsys)
    assert code == 0, err
    merged, _ = load_any(tmp_path / "merged")
    np.testing.assert_array_equal(logits_of(merged, ids), logits_of(load_any(tmp_path / "merged" / "hf")[0], ids))


def test_transformers_loads_the_hf_directory_with_the_same_logits(tmp_path, hf_model, data, capsys):
    torch = require("torch")
    transformers = require("transformers")
    out = tmp_path / "sft"
    code, _, err = run(["sft", "--model", str(hf_model), "--data", str(data["standard"]), "--out", str(out)] + FAST,
                       capsys)
    assert code == 0, err
    model, tokenizer = load_any(out)
    ids = tokenizer.encode("What is 7 plus one? It is 8.")
    reference = transformers.AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = reference(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(logits_of(model, ids), theirs, atol=2e-5, rtol=0)
    assert transformers.AutoTokenizer.from_pretrained(out / "hf")("What is 7 plus one? It is 8.")["input_ids"] == ids


def test_a_ctrl_c_then_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, hf_model, data, capsys, monkeypatch):
    steps = ["--max-steps", "4", "--learning-rate", "3e-3", "--per-device-train-batch-size", "3", "--max-length", "96",
             "--eval-steps", "2", "--save-steps", "1", "--disable-tqdm"]
    base = ["sft", "--model", str(hf_model), "--data", str(data["messages"])]
    code, _, err = run(base + ["--out", str(tmp_path / "full")] + steps, capsys)
    assert code == 0, err
    real_loss, calls = sft.sft_loss, []

    def ctrl_c_in_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(sft, "sft_loss", ctrl_c_in_step_3)
    code, _, err = run(base + ["--out", str(tmp_path / "cut")] + steps, capsys)
    assert code == 130 and "checkpoint of step 2 saved" in err
    assert (tmp_path / "cut" / "sft" / "train_state.json").is_file()
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    monkeypatch.setattr(sft, "sft_loss", real_loss)
    code, _, err = run(base + ["--out", str(tmp_path / "cut")] + steps, capsys)
    assert code == 2 and "--resume" in err  # the interrupted run is not silently restarted
    code, _, err = run(base + ["--out", str(tmp_path / "cut"), "--resume"] + steps, capsys)
    assert code == 0, err
    full, cut = load_any(tmp_path / "full")[0], load_any(tmp_path / "cut")[0]
    for name, value in full.state_dict().items():
        np.testing.assert_array_equal(cut.state_dict()[name], value, err_msg=name)
    for name in ("full", "cut"):
        assert (tmp_path / name / "hf" / "model.safetensors").is_file()
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("full", "cut")]
    assert summaries[0]["eval"] == summaries[1]["eval"] and summaries[0]["eval_before"] == summaries[1]["eval_before"]
    losses = [[row["loss"] for row in read_metrics(tmp_path / name / "metrics.jsonl") if "loss" in row]
              for name in ("full", "cut")]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_settings_and_data_files_from_a_config_file(tmp_path, hf_model, data, capsys):
    held = write_jsonl(tmp_path / "held.jsonl", [{"messages": chat("What is 40 plus one?", "It is 41.")}])
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{data["messages"]}"\neval-data = "{held}"\nmax_steps = 2\nsave_hf = false\n'
                      'learning_rate = 1e-3\ndisable_tqdm = true\n')
    code, _, err = run(["sft", "--model", str(hf_model), "--out", str(tmp_path / "out"), "--config", str(config)],
                       capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["train_rows"], summary["eval_rows"], summary["steps"]) == (12, 1, 2)
    assert summary["config"]["learning_rate"] == 1e-3 and summary["config"]["lr_scheduler_type"] == "linear"
    assert not (tmp_path / "out" / "hf").exists()


# ---------------------------------------------------------------------------- refused before any training
def one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("bad_line, pattern", [
    ('{"messages": [{"role": "user", "content": "Q"}, {"role": "robot", "content": "A"}]}', r"messages\[1\]\.role"),
    ('{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant"}]}', r"messages\[1\]\.content is missing"),
    ('{"prompt": "Q", "completion": ""}', r"field 'completion' is empty"),
    ('{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]', "invalid JSON"),
    ('{"prompt": "Q", "chosen": "a", "rejected": "b"}', r"expected a 'text' or 'prompt_completion' or 'messages'"),
])
def test_a_malformed_line_stops_the_run_before_the_model_is_loaded(tmp_path, data, bad_line, pattern, capsys):
    lines = data["messages"].read_text().splitlines()
    lines.insert(4, bad_line)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # the model does not exist: the data error comes first, so no model was even loaded
    code, _, err = run(["sft", "--model", str(tmp_path / "no-model"), "--data", str(path),
                        "--out", str(tmp_path / "out")], capsys)
    line = one_line_error(code, err)
    assert f"{path}:5: " in line and re.search(pattern, line), line
    assert not (tmp_path / "out").exists()


# corruptions of one valid "messages" row, each with a word its error names
CORRUPTIONS = [
    (lambda row: json.dumps(row)[:-2], "invalid JSON"),
    (lambda row: json.dumps({"messages": row["messages"][:1]}), "no assistant message"),
    (lambda row: json.dumps({"messages": [row["messages"][0], {"role": "assistant"}]}), "content is missing"),
    (lambda row: json.dumps({"messages": [{"role": "bot", "content": "x"}] + row["messages"]}), "role must be"),
    (lambda row: json.dumps({"messages": row["messages"][:1] + [{"role": "assistant", "content": ""}]}), "is empty"),
    (lambda row: json.dumps({"prompt": "Q", "chosen": "a", "rejected": "b"}), "expected a"),
]


@settings(max_examples=15)
@given(bad=st.lists(st.tuples(st.integers(0, 11), st.integers(0, len(CORRUPTIONS) - 1)), min_size=1, max_size=3,
                    unique_by=lambda item: item[0]))
def test_drawn_corruptions_exit_2_naming_the_first_bad_line_and_train_nothing(tmp_path_factory, data, bad):
    folder = tmp_path_factory.mktemp("drawn")
    rows = [json.loads(line) for line in data["messages"].read_text().splitlines()]
    lines = [json.dumps(row) for row in rows]
    for index, kind in bad:
        lines[index] = CORRUPTIONS[kind][0](rows[index])
    path = folder / "drawn.jsonl"
    path.write_text("\n".join(lines) + "\n")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        # the model does not exist: a data error first means the model was never loaded
        code = cli.main(["sft", "--model", str(folder / "no-model"), "--data", str(path),
                         "--out", str(folder / "out")])
    line = one_line_error(code, stderr.getvalue())
    first_index, first_kind = min(bad)
    assert line.startswith(f"minifm sft: error: {path}:{first_index + 1}: ") and CORRUPTIONS[first_kind][1] in line
    others = sorted(index + 1 for index, _ in bad if index != first_index)
    assert (f"more malformed line{'s' if len(others) > 1 else ''}: {', '.join(map(str, others))})" in line) == bool(
        others)
    assert not (folder / "out").exists()


def test_a_row_the_template_cannot_mask_stops_the_run_before_training(tmp_path, hf_model, data, capsys):
    assistant_first = [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "Ok"}]
    path = write_jsonl(tmp_path / "first.jsonl", [{"messages": chat("Q", "A")}] * 3 + [{"messages": assistant_first}])
    code, _, err = run(["sft", "--model", str(hf_model), "--data", str(path), "--out", str(tmp_path / "out"),
                        "--eval-fraction", "0"], capsys)
    assert f"{path}:4: the chat template is not prefix-stable" in one_line_error(code, err)
    assert not (tmp_path / "out" / "sft").exists()


@pytest.mark.parametrize("extra, message", [
    (["--eval-data", "{data}", "--eval-fraction", "0.2"], "give --eval-data FILE or --eval-fraction, not both"),
    (["--peft", "prompt", "--save-hf"], "--save-hf: a prompt adapter cannot be merged"),
    (["--eval-fraction", "1.5"], "eval_fraction must be in [0.0, 1.0)"),
])
def test_impossible_requests_are_refused_before_training(tmp_path, hf_model, data, extra, message, capsys):
    extra = [item.replace("{data}", str(data["messages"])) for item in extra]
    code, _, err = run(["sft", "--model", str(hf_model), "--data", str(data["messages"]),
                        "--out", str(tmp_path / "out")] + extra, capsys)
    assert message in one_line_error(code, err)
    assert not (tmp_path / "out" / "sft").exists()


def test_without_data_a_real_model_is_refused_and_one_row_cannot_be_split(tmp_path, hf_model, data, capsys):
    code, _, err = run(["sft", "--model", str(hf_model), "--out", str(tmp_path / "out")], capsys)
    assert "give --data FILE.jsonl" in one_line_error(code, err)
    code, _, err = run(["dpo", "--model", str(hf_model), "--out", str(tmp_path / "out"), "--eval-fraction", "0.1"],
                       capsys)
    assert "--eval-data and --eval-fraction need --data" in one_line_error(code, err)
    single = write_jsonl(tmp_path / "one.jsonl", [{"messages": chat("Q", "A")}])
    code, _, err = run(["sft", "--model", str(hf_model), "--data", str(single), "--out", str(tmp_path / "out")],
                       capsys)
    assert "holds 1 record: too few to hold 1 out" in one_line_error(code, err)


# ---------------------------------------------------------------------------- the real model
def test_smollm2_lora_sft_from_its_short_name(tmp_path, smollm2_gguf, capsys):
    rows = [{"messages": chat(f"Say the number {i} in words.", word)}
            for i, word in enumerate(["zero", "one", "two", "three", "four", "five"])]
    path = write_jsonl(tmp_path / "numbers.jsonl", rows)
    code, stdout, err = run(["sft", "--model", "smollm2-135m-instruct", "--data", str(path), "--out",
                             str(tmp_path / "out"), "--peft", "lora", "--max-steps", "2",
                             "--per-device-train-batch-size", "2", "--max-length", "64", "--learning-rate", "1e-4",
                             "--disable-tqdm"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["train_rows"], summary["eval_rows"], summary["steps"]) == (5, 1, 2)
    assert summary["eval"]["eval_loss"] < 10 and (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "out" / "hf").exists()
