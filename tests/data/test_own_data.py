"""Your own JSONL rows (minifm.data.sources.read_jsonl_records / hold_out and
minifm.data.conversations.encode_sft_rows / encode_preference_rows): every TRL format read and encoded
through the model's own chat template, the labels exactly on the reply and its end token (checked
against the template's own rendering and against TRL's mask formulas), templates that are not
prefix-stable refused by line, malformed lines (hand-picked and hypothesis-drawn) named by line and
field, the held-out split, and truncation."""
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifm.data import conversations as conv
from minifm.data import sources
from minifm.data.batches import IGNORE_INDEX
from minifm.tokenizer import BPETokenizer, from_pretrained
from minifm.tokenizer.chat import apply_chat_template
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

# SmolLM2's ChatML template (a default system prompt when the conversation does not start with one)
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def byte_tokenizer(extra=()):
    """A BPETokenizer with no merges (one id per byte) and minifm's special tokens: instant to build."""
    return BPETokenizer(np.zeros((0, 2), dtype=np.int64), special_tokens=DEFAULT_SPECIAL_TOKENS + tuple(extra))


def hf_tokenizer(directory, chat_template=CHATML, eos_token="<|im_end|>"):
    """A Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json) with a Jinja chat template,
    read back by minifm.tokenizer.from_pretrained: a real-template tokenizer without a model download."""
    byte_tokenizer(("<|im_start|>", "<|im_end|>")).save_pretrained(directory)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(eos_token=eos_token, chat_template=chat_template)
    if chat_template is None:
        del config["chat_template"]
    config_file.write_text(json.dumps(config))
    return from_pretrained(directory)


@pytest.fixture(scope="module")
def minifm_tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    return hf_tokenizer(tmp_path_factory.mktemp("chatml"))


def write_rows(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows),
                    encoding="utf-8")
    return path


def read(tmp_path, rows, name="data.jsonl", formats=None):
    return sources.read_jsonl_records(write_rows(tmp_path / name, rows), formats)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def trained_text(tokenizer, ids, labels):
    ids, labels = np.asarray(ids), np.asarray(labels)
    return tokenizer.decode(ids[labels != IGNORE_INDEX].tolist())


def trained_runs(labels):
    """[(start, stop)] of the runs of trained positions."""
    trained = np.concatenate([[False], np.asarray(labels) != IGNORE_INDEX, [False]])
    edges = np.flatnonzero(trained[1:] != trained[:-1])
    return list(zip(edges[::2], edges[1::2]))


# ---------------------------------------------------------------------------- SFT rows through a real template
def test_conversational_prompt_completion_trains_exactly_the_reply_and_its_end_token(tmp_path, chatml):
    rows = [{"prompt": [user("Where does Mara live?")], "completion": [assistant("In Tollby.")]},
            {"prompt": [{"role": "system", "content": "Be brief."}, user("Hi")], "completion": [assistant("Hello!")]}]
    examples, report = conv.encode_sft_rows(chatml, read(tmp_path, rows), max_length=512)
    assert report.to_dict()["kept"] == 2
    for row, (ids, labels) in zip(rows, examples):
        full = chatml.apply_chat_template(row["prompt"] + row["completion"])
        np.testing.assert_array_equal(ids, full)  # the ids are the template's own rendering
        assert trained_text(chatml, ids, labels) == row["completion"][0]["content"] + "<|im_end|>"
        # TRL (completion_only_loss): 0 on the prompt rendered with the generation prompt, 1 after it
        prompt_ids = chatml.apply_chat_template(row["prompt"], add_generation_prompt=True)
        trl_mask = np.array([0] * len(prompt_ids) + [1] * (len(full) - len(prompt_ids)), dtype=bool)
        ours = labels != IGNORE_INDEX
        differs = np.flatnonzero(ours != trl_mask)
        # the one difference: the newline SmolLM2's template writes after <|im_end|>, which TRL also trains
        assert chatml.decode(np.asarray(full)[differs].tolist()) == "\n"
        assert differs.tolist() == [len(full) - 1] and not ours[differs].any()


def test_messages_train_every_assistant_turn_and_nothing_else(tmp_path, chatml, minifm_tok):
    messages = [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hello!"), user("More?"),
                assistant("Sure, more."), user("Bye")]
    rows = read(tmp_path, [{"messages": messages}])
    [(ids, labels)], _ = conv.encode_sft_rows(chatml, rows, max_length=512)
    runs = trained_runs(labels)
    assert [chatml.decode(ids[start:stop].tolist()) for start, stop in runs] == ["Hello!<|im_end|>",
                                                                               "Sure, more.<|im_end|>"]
    np.testing.assert_array_equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])
    # minifm's own template: the prefix rendering finds exactly the assistant mask the template itself gives
    [(ids, labels)], _ = conv.encode_sft_rows(minifm_tok, rows, max_length=512)
    template_ids, assistant_mask = apply_chat_template(messages, minifm_tok)
    np.testing.assert_array_equal(ids, template_ids)
    np.testing.assert_array_equal(labels != IGNORE_INDEX, np.asarray(assistant_mask, dtype=bool))


def test_a_one_turn_conversation_gives_the_same_ids_as_messages_or_prompt_completion(tmp_path, chatml, minifm_tok):
    as_pair = {"prompt": [user("Where does Mara live?")], "completion": [assistant("In Tollby.")]}
    as_messages = {"messages": as_pair["prompt"] + as_pair["completion"]}
    for tokenizer in (chatml, minifm_tok):
        [a], _ = conv.encode_sft_rows(tokenizer, read(tmp_path, [as_pair], "a.jsonl"), 512)
        [b], _ = conv.encode_sft_rows(tokenizer, read(tmp_path, [as_messages], "b.jsonl"), 512)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_standard_rows_are_prompt_plus_completion_plus_eos_as_trl(tmp_path, chatml, minifm_tok):
    rows = read(tmp_path, [{"prompt": "Where does Mara live?", "completion": " In Tollby."},
                           {"prompt": "Q", "completion": " A<|im_end|>"}])   # already ends in eos: not added twice
    [(ids, labels), (ids2, labels2)], report = conv.encode_sft_rows(chatml, rows, 512)
    np.testing.assert_array_equal(ids, chatml.encode("Where does Mara live? In Tollby.<|im_end|>"))
    prompt_length = len(chatml.encode("Where does Mara live?"))     # TRL: mask len(tokenized prompt)
    assert (labels[:prompt_length] == IGNORE_INDEX).all() and (labels[prompt_length:] == ids[prompt_length:]).all()
    assert trained_text(chatml, ids, labels) == " In Tollby.<|im_end|>"
    assert trained_text(chatml, ids2, labels2) == " A<|im_end|>" and report.prompt_not_prefix == []
    # minifm's tokenizer: special-token text in a row is ordinary text, the sequence ends with <|endoftext|>
    [(ids, labels), _], _ = conv.encode_sft_rows(minifm_tok, rows, 512)
    eos = minifm_tok.special_tokens["<|endoftext|>"]
    np.testing.assert_array_equal(ids, minifm_tok.encode("Where does Mara live? In Tollby.") + [eos])
    assert trained_text(minifm_tok, ids, labels) == " In Tollby.<|endoftext|>"


def test_text_rows_train_every_token(tmp_path, chatml):
    [(ids, labels)], _ = conv.encode_sft_rows(chatml, read(tmp_path, [{"text": "Mara lives in Tollby."}]), 512)
    np.testing.assert_array_equal(ids, chatml.encode("Mara lives in Tollby.<|im_end|>"))
    np.testing.assert_array_equal(labels, ids)


# ---------------------------------------------------------------------------- templates that cannot be masked
def test_a_template_that_is_not_prefix_stable_is_refused_naming_the_line(tmp_path):
    # the first line counts the messages: rendering a prefix of the conversation changes the start
    counting = "{{ messages|length }}\n" + CHATML
    (tmp_path / "counting").mkdir()
    tokenizer = hf_tokenizer(tmp_path / "counting", chat_template=counting)
    rows = read(tmp_path, [{"messages": [user("Hi"), assistant("Hello")]}] * 2)
    with pytest.raises(sources.DataFormatError) as error:
        conv.encode_sft_rows(tokenizer, rows, 512, source="chat.jsonl")
    message = str(error.value)
    assert message.startswith("chat.jsonl:1: the chat template is not prefix-stable")
    assert "messages[:1] with the generation prompt" in message and "(and 1 more malformed line: 2)" in message
    assert "\n" not in message


def test_a_conversation_opening_with_the_assistant_and_a_default_system_prompt_is_refused(tmp_path, chatml):
    rows = read(tmp_path, [{"messages": [user("Hi"), assistant("Hello")]},
                           {"messages": [assistant("I start."), user("Ok")]}])
    with pytest.raises(sources.DataFormatError, match=r"^x:2: the chat template is not prefix-stable: messages\[:0\]"):
        conv.encode_sft_rows(chatml, rows, 512, source="x")


def test_a_template_error_and_a_missing_template_name_the_row(tmp_path):
    strict = ("{% for message in messages %}{% if 'forbidden' in message['content'] %}"
              "{{ raise_exception('no forbidden words') }}{% endif %}{% endfor %}" + CHATML)
    (tmp_path / "strict").mkdir()
    tokenizer = hf_tokenizer(tmp_path / "strict", chat_template=strict)
    rows = read(tmp_path, [{"messages": [user("Hi"), assistant("Hello")]},
                           {"messages": [user("a forbidden word"), assistant("Hello")]}])
    with pytest.raises(sources.DataFormatError, match=r"^d:2: the chat template cannot render .*no forbidden words"):
        conv.encode_sft_rows(tokenizer, rows, 512, source="d")
    (tmp_path / "plain").mkdir()
    no_template = hf_tokenizer(tmp_path / "plain", chat_template=None)
    with pytest.raises(sources.DataFormatError, match="has no chat template; give the rows as strings"):
        conv.encode_sft_rows(no_template, rows, 512, source="d")
    # the standard format needs no template
    standard = read(tmp_path, [{"prompt": "Q", "completion": "A"}], "standard.jsonl")
    conv.encode_sft_rows(no_template, standard, 512)


# ---------------------------------------------------------------------------- truncation
def test_sft_truncation_keeps_the_start_and_drops_rows_with_nothing_left(tmp_path, chatml):
    long_prompt = "word " * 40
    rows = read(tmp_path, [{"prompt": "Q", "completion": " " + "a" * 60},          # cut inside the completion
                           {"prompt": long_prompt, "completion": " late answer"},  # cut before the completion
                           {"prompt": "Q", "completion": " A"}])
    with pytest.warns(UserWarning) as caught:
        examples, report = conv.encode_sft_rows(chatml, rows, max_length=20, source="f.jsonl")
    texts = [str(w.message) for w in caught]
    assert any("2 of 3 rows are longer than max_length 20" in t and "lines 1, 2" in t for t in texts)
    assert any("1 row lost every trained token" in t and "line 2" in t for t in texts)
    assert report.truncated == [1, 2] and report.dropped == [2] and len(examples) == 2
    ids, labels = examples[0]
    full = chatml.encode("Q " + "a" * 60 + "<|im_end|>")
    np.testing.assert_array_equal(ids, full[:20])    # TRL's keep_start
    with pytest.raises(sources.DataFormatError, match="every row lost its trained tokens"), pytest.warns(UserWarning):
        conv.encode_sft_rows(chatml, rows[1:2], max_length=20, source="f.jsonl")


@settings(max_examples=60)
@given(prompt=st.integers(0, 40), chosen=st.integers(1, 40), rejected=st.integers(1, 40),
       max_length=st.integers(2, 50), max_prompt=st.one_of(st.none(), st.integers(1, 30)))
def test_dpo_truncation_cuts_the_prompt_from_the_left_and_replies_from_the_right(prompt, chosen, rejected,
                                                                                 max_length, max_prompt):
    prompt_ids, chosen_ids, rejected_ids = list(range(prompt)), list(range(100, 100 + chosen)), list(
        range(200, 200 + rejected))
    p, c, r, cut = conv.truncate_pair(prompt_ids, chosen_ids, rejected_ids, max_length, max_prompt)
    assert p == prompt_ids[len(prompt_ids) - len(p):]                       # the prompt's end is kept
    assert c == chosen_ids[:len(c)] and r == rejected_ids[:len(r)]          # the replies' start is kept
    assert len(p) + max(len(c), len(r)) <= max(max_length, len(p) + 1)
    assert len(c) >= 1 and len(r) >= 1
    capped = prompt if max_prompt is None else min(prompt, max_prompt)
    assert len(p) >= min(capped, max_length // 2)                          # at least half of max_length
    fits = capped + max(chosen, rejected) <= max_length
    assert cut == (not fits or capped < prompt)
    if fits:
        assert (c, r) == (chosen_ids, rejected_ids) and len(p) == capped


# ---------------------------------------------------------------------------- preference rows
def test_preference_rows_explicit_and_implicit_prompts_give_the_same_pair(tmp_path, chatml, minifm_tok):
    prompt = [{"role": "system", "content": "Be brief."}, user("Where does Mara live?")]
    explicit = {"prompt": prompt, "chosen": [assistant("In Tollby.")], "rejected": [assistant("No idea.")]}
    implicit = {"chosen": prompt + explicit["chosen"], "rejected": prompt + explicit["rejected"]}
    for tokenizer, end in ((chatml, "<|im_end|>"), (minifm_tok, "<|end|>")):
        [a], _ = conv.encode_preference_rows(tokenizer, read(tmp_path, [explicit], "e.jsonl"), 512)
        [b], _ = conv.encode_preference_rows(tokenizer, read(tmp_path, [implicit], "i.jsonl"), 512)
        assert {k: a[k] for k in ("chosen", "rejected", "prompt_length")} == {
            k: b[k] for k in ("chosen", "rejected", "prompt_length")}
        n = a["prompt_length"]
        prompt_ids = conv.chat_ids(tokenizer, prompt, add_generation_prompt=True)
        assert a["chosen"][:n] == prompt_ids == a["rejected"][:n]
        assert tokenizer.decode(a["chosen"][n:]) == "In Tollby." + end
        assert tokenizer.decode(a["rejected"][n:]) == "No idea." + end


def test_standard_preference_rows_follow_trl_tokenize_row(tmp_path, chatml):
    rows = read(tmp_path, [{"prompt": "Where does Mara live?", "chosen": " In Tollby.", "rejected": " In Oslo."},
                           {"prompt": "Q", "chosen": " same", "rejected": " same"}])
    with pytest.warns(UserWarning, match=r"1 pair has the same chosen and rejected tokens .*line 2"):
        [pair, _], report = conv.encode_preference_rows(chatml, rows, 512, source="p.jsonl")
    prompt_ids = chatml.encode("Where does Mara live?")
    eos = chatml.eos_token_id
    assert pair["prompt_length"] == len(prompt_ids) and pair["line"] == 1
    assert pair["chosen"] == prompt_ids + chatml.encode(" In Tollby.", add_special_tokens=False) + [eos]
    assert pair["rejected"] == prompt_ids + chatml.encode(" In Oslo.", add_special_tokens=False) + [eos]
    assert report.identical == [2]


# ---------------------------------------------------------------------------- reading and validating lines
VALID_SFT = [{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}]


@pytest.mark.parametrize("bad_row, pattern", [
    ({"prompt": "Q", "completion": ""}, r"field 'completion' is empty"),
    ({"prompt": "Q", "completion": "   "}, r"field 'completion' is empty"),
    ({"prompt": "Q"}, r"missing field 'completion'"),
    ({"prompt": 3, "completion": "A"}, r"field 'prompt' must be a string"),
    ({"prompt": [user("Q")], "completion": "A"}, r"fields \['completion'\] are strings but \['prompt'\] are lists"),
    ({"prompt": [user("Q")], "completion": [user("A")]}, r"field completion\[0\]\.role must be 'assistant'"),
    ({"prompt": [user("Q")], "completion": [assistant(" ")]}, r"field completion\[0\]\.content is empty"),
    ({"prompt": [{"role": "robot", "content": "Q"}], "completion": [assistant("A")]}, r"prompt\[0\]\.role must be one"),
    ({"prompt": [{"role": "user"}], "completion": [assistant("A")]}, r"field prompt\[0\]\.content is missing"),
    ({"prompt": [{"content": "Q"}], "completion": [assistant("A")]}, r"field prompt\[0\]\.role is missing"),
    ({"messages": [user("Q"), user("again")]}, r"field 'messages' has no assistant message"),
    ({"messages": []}, r"field 'messages' must be a non-empty list"),
    ('{"prompt": "Q", "completion": "A"', r"invalid JSON"),
    ("[1, 2]", r"a record must be a JSON object"),
    ({"chosen": "a", "rejected": "b"}, r"missing field 'prompt'"),
    ({"chosen": [user("Q"), assistant("a")], "rejected": [user("other"), assistant("b")]}, r"share no leading"),
    ({"chosen": [user("Q"), assistant("a")], "rejected": [user("Q"), assistant("a")]}, r"no message after"),
])
def test_a_malformed_line_is_named_with_its_field(tmp_path, bad_row, pattern):
    path = write_rows(tmp_path / "data.jsonl", [VALID_SFT[0], "", bad_row, VALID_SFT[1]])  # line 2 blank
    with pytest.raises(sources.DataFormatError, match=r"data\.jsonl:3: .*" + pattern):
        sources.read_jsonl_records(path)


def test_every_line_is_checked_and_the_other_bad_lines_are_listed(tmp_path):
    rows = [VALID_SFT[0], {"prompt": "Q"}] + [VALID_SFT[1]] * 3 + ["not json"] * 7
    path = write_rows(tmp_path / "many.jsonl", rows)
    with pytest.raises(sources.DataFormatError) as error:
        sources.read_jsonl_records(path)
    message = str(error.value)
    assert re.match(r".*many\.jsonl:2: prompt-completion record is missing field 'completion' "
                    r"\(and 7 more malformed lines: 6, 7, 8, 9, 10, \.\.\.\)$", message), message
    path.write_bytes(b'{"prompt": "Q", "completion": "A"}\n{"prompt": "\xff", "completion": "A"}\n')
    with pytest.raises(sources.DataFormatError, match=r"many\.jsonl:2: not UTF-8 text"):
        sources.read_jsonl_records(path)


def test_formats_of_the_stage_and_of_the_file_must_agree(tmp_path):
    path = write_rows(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(sources.DataFormatError, match=r"pairs\.jsonl:1: expected a 'text' or 'prompt_completion' or "
                                                      r"'messages' record \(for sft\), got 'preference'"):
        sources.read_jsonl_records(path, sources.SFT_FORMATS, "for sft")
    mixed = write_rows(tmp_path / "mixed.jsonl", [{"prompt": "Q", "completion": "A"},
                                                  {"prompt": [user("Q")], "completion": [assistant("A")]}])
    with pytest.raises(sources.DataFormatError, match=r"mixed\.jsonl:2: record format 'prompt_completion "
                                                      r"\(conversational\)' differs from line 1's"):
        sources.read_jsonl_records(mixed)
    [record] = sources.read_jsonl_records(path)
    assert (record.line, record.format, record.conversational) == (1, "preference", False)


# corruptions of one valid row: (how, the field the error must name)
CORRUPTIONS = [
    (lambda row: {**row, "completion": ""}, "completion"),
    (lambda row: {key: value for key, value in row.items() if key != "completion"}, "completion"),
    (lambda row: {**row, "prompt": None}, "prompt"),
    (lambda row: {**row, "completion": 7}, "completion"),
    (lambda row: {**row, "prompt": [{"role": "tool", "content": "x"}]}, "prompt[0].role"),
    (lambda row: {**row, "prompt": [{"role": "user"}]}, "prompt[0].content"),
    (lambda row: json.dumps(row)[:-1], "invalid JSON"),
    (lambda row: json.dumps(row) + ",", "invalid JSON"),
    (lambda row: [row], "JSON object"),
]


@settings(max_examples=40)
@given(texts=st.lists(st.text(min_size=1, max_size=20).filter(str.strip), min_size=2, max_size=12),
       data=st.data())
def test_drawn_corruptions_of_a_valid_file_always_name_their_line(tmp_path_factory, texts, data):
    rows = [{"prompt": f"Question {i}?", "completion": text} for i, text in enumerate(texts)]
    bad = data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=3, unique=True), label="bad rows")
    kinds = [data.draw(st.sampled_from(range(len(CORRUPTIONS))), label="corruption") for _ in bad]
    lines = list(rows)
    for index, kind in zip(bad, kinds):
        lines[index] = CORRUPTIONS[kind][0](rows[index])
    path = write_rows(tmp_path_factory.mktemp("drawn") / "d.jsonl", lines)
    with pytest.raises(sources.DataFormatError) as error:
        sources.read_jsonl_records(path, sources.SFT_FORMATS)
    message = str(error.value)
    first = min(bad)
    assert "\n" not in message
    assert message.startswith(f"{path}:{first + 1}: ")
    assert CORRUPTIONS[kinds[bad.index(first)]][1] in message
    others = sorted(index + 1 for index in bad if index != first)
    if others:
        assert message.endswith(f"more malformed line{'s' if len(others) > 1 else ''}: "
                                f"{', '.join(map(str, others))})")


# ---------------------------------------------------------------------------- held-out split
@settings(max_examples=40)
@given(n=st.integers(2, 300), fraction=st.floats(0.01, 0.9), seed=st.integers(0, 2**31))
def test_held_out_split_is_disjoint_deterministic_and_at_least_one(n, fraction, seed):
    items = list(range(n))
    expected = max(1, round(fraction * n))
    if expected >= n:
        with pytest.raises(ValueError, match="too few to hold"):
            sources.hold_out(items, fraction, seed)
        return
    train, held = sources.hold_out(items, fraction, seed)
    assert len(held) == expected and not set(train) & set(held) and sorted(train + held) == items
    assert train == sorted(train) and held == sorted(held)           # file order kept
    assert sources.hold_out(items, fraction, seed) == (train, held)  # same seed, same split


def test_held_out_split_edges():
    assert sources.hold_out([1, 2, 3], 0.0, 0) == ([1, 2, 3], [])
    with pytest.raises(ValueError, match=r"holds 1 record: too few"):
        sources.hold_out(["only"], 0.1, 0, what="--data x.jsonl")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        sources.hold_out([1, 2], 1.0, 0)
    splits = {tuple(sources.hold_out(list(range(50)), 0.2, seed)[1]) for seed in range(5)}
    assert len(splits) > 1  # the seed chooses


# ---------------------------------------------------------------------------- SmolLM2's own template
@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf):
    return from_pretrained(smollm2_gguf)


def test_smollm2_template_masks_the_reply_and_refuses_an_assistant_first_conversation(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    pair = read(tmp_path, [{"prompt": [user("What is 2+2?")], "completion": [assistant("4.")]}], "pair.jsonl")
    chat = read(tmp_path, [{"messages": [user("Hi"), assistant("Hello!"), user("More"), assistant("Sure.")]}])
    [(ids, labels)], _ = conv.encode_sft_rows(tok, pair, 512)
    [(ids2, labels2)], _ = conv.encode_sft_rows(tok, chat, 512)
    assert tok.decode(ids.tolist()).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert trained_text(tok, ids, labels) == "4.<|im_end|>"
    assert [tok.decode(ids2[a:b].tolist()) for a, b in trained_runs(labels2)] == ["Hello!<|im_end|>",
                                                                                 "Sure.<|im_end|>"]
    assistant_first = read(tmp_path, [{"messages": [assistant("I speak first."), user("Ok")]}], "first.jsonl")
    with pytest.raises(sources.DataFormatError, match="first.jsonl:1: the chat template is not prefix-stable"):
        conv.encode_sft_rows(tok, assistant_first, 512, source="first.jsonl")


def test_smollm2_a_token_spanning_prompt_and_completion_is_counted_as_trl_warns(tmp_path, smollm2_tokenizer):
    rows = read(tmp_path, [{"prompt": "Hello ", "completion": "world"}, {"prompt": "Hello", "completion": " world"}])
    with pytest.warns(UserWarning, match=r"in 1 row the prompt's tokens are not the start .*line 1\)"):
        examples, report = conv.encode_sft_rows(smollm2_tokenizer, rows, 512, source="s.jsonl")
    assert report.prompt_not_prefix == [1]
    np.testing.assert_array_equal(examples[0][0], examples[1][0])  # the same text, the same ids
    assert trained_text(smollm2_tokenizer, *examples[1]) == " world<|im_end|>"
