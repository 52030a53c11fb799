"""Lab structured: validity checks and grading on hand-computed cases, the ratio's clustered standard error,
every constrained sample valid (a small random model, budgets the formats always fit), and the tiny preset
end to end."""
import json
import math

import numpy as np
import pytest

from minifm.data import tinyworld
from minifm.lab import run_experiment
from minifm.lab import structured_outputs as lab
from minifm.lab.questions import QUESTIONS, grade_answer
from minifm.lab.subjects import Subject
from minifm.models import GPT, GPTConfig
from minifm.tokenizer import DEFAULT_SPECIAL_TOKENS, BPETokenizer

INTEGER = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
           "additionalProperties": False}


# ---------------------------------------------------------------------------------- what is valid
def test_conforms_on_hand_cases():
    assert lab.conforms({"answer": 12}, INTEGER)
    assert lab.conforms({"answer": 12.0}, INTEGER)  # JSON Schema: a whole number is an integer
    assert not lab.conforms({"answer": 12.5}, INTEGER)
    assert not lab.conforms({"answer": True}, INTEGER)  # a boolean is not an integer
    assert not lab.conforms({"answer": "12"}, INTEGER)
    assert not lab.conforms({}, INTEGER)  # required
    assert not lab.conforms({"answer": 1, "why": "x"}, INTEGER)  # additionalProperties false
    assert not lab.conforms([12], INTEGER)
    string = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 3}}}
    assert lab.conforms({"answer": "abc"}, string) and not lab.conforms({"answer": "abcd"}, string)
    assert lab.conforms({}, string) and lab.conforms({"answer": "a", "extra": 1}, string)  # nothing required
    assert lab.conforms("b", {"enum": ["a", "b"]}) and not lab.conforms("c", {"enum": ["a", "b"]})
    assert lab.conforms(False, {"type": "boolean"}) and not lab.conforms(0, {"type": "boolean"})
    assert lab.conforms(2.5, {"type": "number"}) and not lab.conforms(None, {"type": "number"})
    with pytest.raises(ValueError, match="array"):
        lab.conforms([], {"type": "array"})


@pytest.mark.parametrize("reply, valid", [
    ("Mara lives in Tollby.", True), ("gato", True), ("Tilda's drum is orange.", True),
    ("Sure! Mara lives in Tollby.", False),            # the polite prefix is a second sentence
    ("Let me see. Mara lives in Tollby.", False), ("Mara lives in Tollby. That is all.", False),
    (" Mara lives in Tollby.", False), ("", False), ("Mara lives in Tollby..", False), ("a" * 80 + ".", True),
    ("a" * 81, False), ("Mara\nlives", False),
])
def test_the_sentence_format(reply, valid):
    assert lab.SENTENCE.parse(reply) == ((True, reply) if valid else (False, None))


@pytest.mark.parametrize("reply, parsed", [
    ('{"answer": 12}', (True, "12")), ('{"answer":12}', (True, "12")),  # any JSON spelling parses
    (' {"answer": 12} ', (True, "12")), ('{"answer": 12.0}', (True, "12")),
    ('{"answer": "12"}', (False, None)), ('{"answer": 12', (False, None)), ("12", (False, None)),
    ('```json\n{"answer": 12}\n```', (False, None)), ('{"answer": 12, "unit": "cm"}', (False, None)),
    ('The answer is {"answer": 12}', (False, None)),
])
def test_the_integer_json_format(reply, parsed):
    assert lab.SMOLLM2_INTEGER.parse(reply) == parsed


def test_the_string_json_formats():
    assert lab.SMOLLM2_STRING.parse('{"answer": "Paris"}') == (True, "Paris")
    assert lab.SMOLLM2_STRING.parse('{"answer": "' + "x" * 41 + '"}') == (False, None)
    assert lab.SMOLLM2_STRING.parse('{"answer": 7}') == (False, None)
    assert lab.OWN_JSON.parse('{"answer": "Mara lives in Tollby."}') == (True, "Mara lives in Tollby.")


def test_smollm2_schemas_type_the_answer():
    kinds = {q.text: lab.smollm2_schema(q)["properties"]["answer"]["type"] for q in QUESTIONS}
    assert kinds["What is 7 plus 5?"] == "integer" and kinds["How many legs does a spider have?"] == "integer"
    assert kinds["What is the capital of France?"] == "string" and kinds["What is the chemical formula of water?"] \
        == "string"
    assert all(kinds[q.text] == "integer" for q in QUESTIONS if q.kind == "arithmetic")
    assert lab.smollm2_format("What is 7 plus 5?") is lab.SMOLLM2_INTEGER
    for question in QUESTIONS:  # a right answer written in its format is valid and graded right
        schema_type = kinds[question.text]
        value = int(question.answers[0]) if schema_type == "integer" else question.answers[0]
        valid, answer = lab.smollm2_format(question.text).parse(json.dumps({"answer": value}))
        assert valid and grade_answer(question.text, answer), question


# ---------------------------------------------------------------------------------- grading and figures
def test_judge_counts_an_invalid_reply_as_wrong_even_when_it_states_the_answer():
    prompts = ["What is 7 plus 5?", "What is the capital of France?"]
    replies = [['{"answer": 12}', "7 + 5 = 12", '{"answer": 15}'],
               ['{"answer": "Paris"}', '{"answer": "paris, France"}', '{"answer": "Lyon"}']]
    valid, correct = lab.judge([lab.smollm2_format(p) for p in prompts], prompts, replies, grade_answer)
    assert valid.tolist() == [[True, False, True], [True, True, True]]
    assert correct.tolist() == [[True, False, False], [True, True, False]]


def test_judge_with_tinyworld_grading():
    prompt = next(task["prompt"] for task in tinyworld.instructions("test", seed=0)
                  if task["prompt"].startswith("Where does"))
    reference = tinyworld.reference_answer(prompt)  # "X lives in Y."
    assert reference.endswith(".") and len(reference) <= 40
    replies = [[reference, "Sure! " + reference, json.dumps({"answer": reference}), reference[:-6] + "Nowhere."]]
    valid, correct = lab.judge([lab.SENTENCE], [prompt], replies, tinyworld.grade)
    assert valid.tolist() == [[True, False, False, True]]
    assert correct.tolist() == [[True, False, False, False]]  # "Sure! ..." is right, but not in the format
    valid, correct = lab.judge([lab.OWN_JSON], [prompt], replies, tinyworld.grade)
    assert valid.tolist() == [[False, False, True, False]] and correct.tolist() == valid.tolist()


def test_ratio_and_its_clustered_standard_error_by_hand():
    # prompts: 2 of 3 valid right, 0 of 1, 1 of 2: R = 3 / 6 = 0.5
    # residuals a - R n: 2 - 1.5 = 0.5, 0 - 0.5 = -0.5, 1 - 1 = 0; sum of squares 0.5
    # s.e. = sqrt(3 / 2 * 0.5) / 6 = sqrt(0.75) / 6
    ratio, stderr = lab.ratio_and_stderr([2, 0, 1], [3, 1, 2])
    assert ratio == pytest.approx(0.5) and stderr == pytest.approx(math.sqrt(0.75) / 6)
    assert all(math.isnan(x) for x in lab.ratio_and_stderr([0, 0], [0, 0]))
    assert lab.ratio_and_stderr([1], [2]) == (0.5, 0.0)
    # equal denominators: the ratio's s.e. is the usual s.e. of the per-prompt shares
    shares = np.array([0.25, 0.5, 1.0, 0.0])
    assert lab.ratio_and_stderr(shares * 4, [4, 4, 4, 4])[1] == pytest.approx(shares.std(ddof=1) / 2)


def test_summarise_a_hand_made_cell():
    valid = np.array([[True, True], [False, True], [False, False]])
    correct = np.array([[True, False], [False, True], [False, False]])
    logprob = np.array([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]])
    length = np.array([[2, 2], [3, 3], [4, 4]])
    cut = np.array([[False, False], [True, False], [False, True]])
    raw = np.array([[True, True], [True, True], [False, False]])
    r = lab.summarise(valid, correct, logprob, length, cut, raw)
    assert r["validity"] == pytest.approx(0.5) and r["accuracy"] == pytest.approx(1 / 3)
    assert r["validity_se"] == pytest.approx(np.std([1, 0.5, 0], ddof=1) / math.sqrt(3))
    assert r["accuracy_valid"] == pytest.approx(2 / 3) and r["n_valid"] == 3 and r["n"] == 6
    assert r["invalid_not_cut"] == 1  # prompt 3's first sample
    assert r["cut"] == pytest.approx(2 / 6)
    assert r["loglik_per_token"] == pytest.approx(-21 / 18) and r["loglik_per_reply"] == pytest.approx(-3.5)
    assert r["accuracy_ignoring_format"] == pytest.approx(2 / 3)
    mean, stderr = lab.paired_difference(r["per_prompt_accuracy"], r["per_prompt_accuracy_ignoring_format"])
    assert mean == pytest.approx((-0.5 - 0.5 + 0) / 3)


def test_timing_and_the_comparisons():
    cells = {"free greedy": {"wall_s": 2.0, "generated_tokens": 100, "mask_s": 0.0, "mask_rows": 0},
             "json greedy": {"wall_s": 1.0, "generated_tokens": 40, "mask_s": 0.1, "mask_rows": 50}}
    t = lab.timing(cells)
    assert t["free_ms_per_token"] == pytest.approx(20.0) and t["constrained_ms_per_token"] == pytest.approx(25.0)
    assert t["mask_ms_per_token"] == pytest.approx(2.0) and t["mask_share_of_constrained_wall"] == pytest.approx(0.1)
    rows = {("f", "greedy", False): {"validity": 0.0, "per_prompt_accuracy": [0.0, 0.0],
                                     "per_prompt_accuracy_ignoring_format": [1.0, 0.0]},
            ("f", "greedy", True): {"validity": 1.0, "per_prompt_accuracy": [1.0, 1.0]}}
    (item,) = lab.comparisons(rows)
    assert item["vs_strict"] == (1.0, 0.0) and item["vs_format_ignored"] == pytest.approx((0.5, 0.5))


def test_rules_and_the_table_order():
    assert lab.rules([0.0, 0.7]) == [("greedy", {"do_sample": False}),
                                     ("T=0.7", {"do_sample": True, "temperature": 0.7, "top_k": 0})]
    rows = {("b", "T=1", True): 1, ("b", "greedy", True): 2, ("a", "T=0.7", False): 3, ("b", "greedy", False): 4,
            ("b", "T=0.7", False): 5}
    assert list(lab.in_order(rows).values()) == [4, 2, 5, 1, 3]


# ---------------------------------------------------------------------------------- every constrained sample valid
def toy_subject(max_new_tokens: int) -> Subject:
    """A random 1-layer GPT over a small byte-level BPE (nearly uniform logits: it writes anything it may)."""
    tokenizer = BPETokenizer.train(["Mara lives in Tollby. {\"answer\": 12} café 中文 😀"] * 4, 300,
                                   special_tokens=DEFAULT_SPECIAL_TOKENS)
    end = "<|endoftext|>"
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=max_new_tokens + 32, n_layer=1, n_head=2, n_embd=16))
    model.eval()
    end_id = tokenizer.special_tokens[end]
    return Subject("toy", lambda: (model, tokenizer), lambda tok, prompt: tok.encode(prompt),
                   lambda tok, ids: tok.decode([i for i in ids if i != end_id]),
                   grade=lambda prompt, reply: True, reward=lambda prompt, reply: 0.0,
                   answer_key=lambda prompt, reply: reply, end_token=end, pad_token=end, max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("fmt", [lab.SENTENCE, lab.OWN_JSON, lab.SMOLLM2_STRING])
def test_every_constrained_sample_is_valid(fmt):
    # the longest text of each format is at most 81 characters (the sentence) or 40 characters of at most
    # 6 bytes (a \\u escape) in 14 bytes of JSON: 330 tokens of at least one byte always reach the end
    subject = toy_subject(330)
    prompts = ["Where does Mara live?", "Say it."]
    cell = lab.answer(subject, prompts, [fmt] * 2, samples=3, seeds=2, max_new_tokens=330,
                      options={"do_sample": True, "temperature": 1.0, "top_k": 0})
    valid, _ = lab.judge([fmt] * 2, prompts, cell["replies"], lambda prompt, answer: True)
    assert valid.all(), [r for row, ok in zip(cell["replies"], valid) for r, v in zip(row, ok) if not v]
    assert not np.asarray(cell["cut"]).any() and np.asarray(cell["replies"]).shape == (2, 6)
    assert cell["mask_rows"] > 0 and cell["compile_s"] > 0 and cell["generated_tokens"] == sum(map(sum, cell["length"]))


def test_greedy_constrained_reply_is_one_per_prompt_and_valid():
    subject = toy_subject(120)
    cell = lab.answer(subject, ["Hi"], [lab.SENTENCE], samples=4, seeds=3, max_new_tokens=120,
                      options={"do_sample": False})
    assert len(cell["replies"][0]) == 1 and lab.SENTENCE.parse(cell["replies"][0][0])[0]


# ---------------------------------------------------------------------------------- end to end
def test_tiny_preset_end_to_end(tmp_path):
    run = run_experiment("structured", preset="tiny", out=tmp_path, log=lambda line: None)
    markdown = (run.directory / "report.md").read_text()
    report = json.loads((run.directory / "report.json").read_text())
    for heading in ("## Question", "## Setup", "## minifm SFT model", "## Cost", "## What it shows"):
        assert heading in markdown
    for image in ("validity.png", "accuracy.png", "cost.png"):
        assert (run.directory / image).stat().st_size > 0 and f"({image})" in markdown
    own = report["own"]
    assert {key.split(" | ")[2] for key in own} == {"free", "constrained"}
    for key, row in {**own, **report["smollm2"]}.items():
        assert 0 <= row["validity"] <= 1 and 0 <= row["accuracy"] <= row["validity"] + 1e-12
        if key.endswith("constrained"):  # a constrained reply is valid unless the budget cut it
            assert row["invalid_not_cut"] == 0, key
    subruns = json.loads((run.directory / "subruns.json").read_text())
    for key, cell in subruns.items():
        if key.startswith("own sentence"):
            valid, _ = lab.judge([lab.SENTENCE] * len(cell["replies"]), [""] * len(cell["replies"]), cell["replies"],
                                 lambda prompt, answer: True)
            assert (valid | np.asarray(cell["cut"])).all()
    assert report["cost"]["minifm SFT"]["mask_ms_per_token"] > 0
    assert report["compile"]["own"]["formats"][0]["dfa_states"] > 1


def test_a_formats_constraint_accepts_what_its_check_accepts_in_the_canonical_spelling():
    tokenizer = BPETokenizer.train(["Mara lives in Tollby."] * 2, 300, special_tokens=DEFAULT_SPECIAL_TOKENS)
    eos = tokenizer.special_tokens["<|endoftext|>"]
    cases = {lab.SENTENCE: ["Mara lives in Tollby.", "gato", "Sure! Mara.", "a. b", ""],
             lab.SMOLLM2_INTEGER: ['{"answer": 12}', '{"answer": -3}', '{"answer": "12"}', '{"answer": 1.5}'],
             lab.SMOLLM2_STRING: ['{"answer": "Paris"}', '{"answer": "' + "x" * 41 + '"}', '{"answer": 7}'],
             lab.OWN_JSON: ['{"answer": "Mara lives in Tollby."}', '{"answer": "a\\"b"}', '{"answer": null}']}
    for fmt, texts in cases.items():
        constraint = fmt.constraint(tokenizer, eos)
        for text in texts:
            assert constraint.matches(text) == fmt.parse(text)[0], (fmt.name, text)
    # the constraint writes one spelling of JSON (json.dumps' separators); the check accepts any that parses
    assert lab.SMOLLM2_INTEGER.parse('{"answer":12}')[0]
    assert not lab.SMOLLM2_INTEGER.constraint(tokenizer, eos).matches('{"answer":12}')


def test_smollm2_accuracy_by_question_kind():
    asked = ["What is 7 plus 5?", "What is 9 times 3?", "What is the capital of France?"]  # integer, integer, string
    rows = {("JSON", "greedy", False): {"per_prompt_accuracy": [0.0, 0.0, 0.0],
                                       "per_prompt_accuracy_ignoring_format": [1.0, 0.0, 1.0]},
            ("JSON", "greedy", True): {"per_prompt_accuracy": [0.0, 1.0, 1.0]}}
    integer, string = lab.by_kind(rows, asked)
    assert integer == ["integer answer", 2, "greedy", "0.500 ± 0.500", "0.000 ± 0.000", "0.500 ± 0.500"]
    assert string == ["string answer", 1, "greedy", "1.000 ± 0.000", "0.000 ± 0.000", "1.000 ± 0.000"]
