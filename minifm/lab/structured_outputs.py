"""Lab: structured. "Constrained decoding makes every output parse."

The question. A program that reads a model's answer needs it in a format: a JSON object with a
known field, one plain sentence, a number. Asking for the format in the prompt works only as well
as the model follows instructions. Constrained decoding (minifm/sampling/constraints.py) compiles
the format -- a regular expression or a JSON Schema -- into an automaton over the tokenizer's
vocabulary and sets every token that would leave the format to -inf before sampling, so the text
can only be a prefix of a valid answer and ends only where a valid answer ends. The chapter's claim
is that this makes outputs parse. Does it, how often did they parse without it, and what does it
cost: does forcing the format change which answer the model gives, and how much time does the mask
add per token?

The setup. Two chat models answer questions whose right answers are known:
  * minifm's own SFT model (minifm/lab/own_model.py) on held-out tinyworld instructions. It knows
    no instructions about formats, so its prompt is the plain question, and two formats are
    imposed from outside: SENTENCE_PATTERN, "the answer as one plain sentence" (no polite "Sure!",
    no second sentence such as "That is all.": the styles its SFT data mixed in), a format close to
    what it writes anyway; and OWN_JSON_SCHEMA, {"answer": "<string>"}, a format it has never seen.
  * SmolLM2-135M-Instruct (when installed) on the lab's 42 arithmetic and factual questions
    (minifm/lab/questions.py), asked in the system prompt (SMOLLM2_SYSTEM_PROMPT) for a JSON object
    {"answer": ...}; the schema (smollm2_schema) types the answer: an integer when the answer is a
    number (arithmetic, counts), a string of at most 40 characters otherwise.
Every prompt is answered greedily and by temperature sampling (top_k=0, several samples per
prompt), once without and once with the constraint, the same seeds and token budget both ways.

The measurement, per (model, format, decoding rule, with / without the constraint), standard
errors over prompts (the unit of independence):
    validity            the reply parses and validates: Python's `re.fullmatch` for the regex
                        (an independent check of the automaton), json.loads then a schema check
                        (`conforms`) for JSON; a reply cut by the token budget is invalid
    accuracy            the answer graded against the known one (tinyworld.grade on the sentence
                        or the JSON "answer" value; questions.grade_answer for SmolLM2); an invalid
                        reply counts as wrong
    accuracy | valid    the same among valid replies only (a ratio: its standard error is the
                        clustered one, prompts as clusters: `ratio_and_stderr`)
    format ignored      unconstrained replies only: the grader on the whole reply, whatever its
                        format: what the model knows when nothing is parsed
    log-likelihood      of the generated tokens under the unprocessed model (per token and per reply)
    cost                wall ms per generated token with and without the constraint; the mask's own
                        time inside generate (a timing wrapper around the logits processor) per
                        token; and the one-time compile: pattern -> byte DFA, the vocabulary's trie,
                        and the walk of every DFA state over the vocabulary (the token automaton)
The mask is compiled eagerly (every DFA state visited) before a constrained generation, so the
per-token cost measured during generation is the steady-state one, and the compile is timed apart.

Simplifications: one model size each; greedy replies are deterministic, so greedy is one sample
per prompt; the JSON constraint writes one spelling of JSON (json.dumps' separators), while the
validity check accepts any JSON text that parses; the own model's unconstrained replies cannot
follow a format nobody asked for (its validity under the JSON format is 0 by construction: the
question there is what the constraint alone does). Timings are taken on a shared machine: the
mask's own time is the reliable figure, the wall ms per token moves with the load.
"""
from __future__ import annotations

import functools
import json
import math
import re
import time
from dataclasses import dataclass

import numpy as np

from minifm.data import tinyworld
from minifm.lab import questions
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr, settings_fingerprint
from minifm.lab.own_model import TINY_OVERRIDES, OwnModels
from minifm.lab.questions import QUESTIONS
from minifm.lab.subjects import Draws, Subject, draw, smollm2_subject, tinyworld_prompts, tinyworld_subject
from minifm.sampling.constraints import TokenAutomaton, TokenConstraint, TokenVocabulary, token_byte_strings
from minifm.sampling.json_schema import schema_to_regex
from minifm.sampling.regex_automaton import ByteDFA, compile_regex
from minifm.train.plots import pyplot

NAME = "structured"
CLAIM = "constrained decoding makes every output parse"
SUMMARY = ("format validity and accuracy with / without a regex or JSON Schema constraint (own SFT model, SmolLM2); "
           "the mask's cost per token")
DEFAULT_MINUTES = 8  # 7 min of CPU at the default preset (37 min of wall time at load 6-10, niced)

# one plain sentence (or word): no white space first, no . ! ? inside, at most one final period
SENTENCE_PATTERN = r"[^\s.!?][^.!?\n]{0,79}\.?"
OWN_JSON_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 40}},
                   "required": ["answer"], "additionalProperties": False}
SMOLLM2_SYSTEM_PROMPT = 'Answer in JSON: {"answer": ...}. No other text.'

PRESETS = {
    "tiny": dict(lifecycle="tiny", lifecycle_overrides=TINY_OVERRIDES, n_prompts=4, samples=2, seeds=1,
                 temperatures=[0.0, 1.0], own_max_new_tokens=16, own_json_max_new_tokens=24,
                 smollm2_questions=1, smollm2_samples=1, smollm2_temperatures=[0.0], smollm2_max_new_tokens=8),
    "default": dict(lifecycle="default", lifecycle_overrides={}, n_prompts=None, samples=4, seeds=1,
                    temperatures=[0.0, 0.7, 1.0], own_max_new_tokens=24, own_json_max_new_tokens=56,
                    smollm2_questions=len(QUESTIONS), smollm2_samples=4, smollm2_temperatures=[0.0, 0.7, 1.0],
                    smollm2_max_new_tokens=24),
}


# ------------------------------------------------------------------ formats: what a valid reply is
def conforms(value, schema: dict) -> bool:
    """Whether a parsed JSON `value` is valid against `schema` (the keywords this lab's schemas use: type
    object / string / integer / number / boolean, properties, required, additionalProperties, enum,
    minLength, maxLength). An integer is a whole number that is not a boolean (JSON Schema's rule: 3.0 is one)."""
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return False
        properties = schema.get("properties", {})
        if any(name not in value for name in schema.get("required", ())):
            return False
        if schema.get("additionalProperties", True) is False and any(name not in properties for name in value):
            return False
        return all(conforms(value[name], sub) for name, sub in properties.items() if name in value)
    if kind == "string":
        return isinstance(value, str) and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float)
                                                                            and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind is None:
        return True
    raise ValueError(f"conforms: type {kind!r} is not one this lab checks")


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (a schema is a dict)
class AnswerFormat:
    """A required format: a regular expression (`pattern`) or a JSON Schema (`schema`) whose "answer"
    property holds the answer."""

    name: str
    pattern: str | None = None
    schema: dict | None = None

    def parse(self, reply: str) -> tuple[bool, str | None]:
        """(valid?, the answer's text): the whole reply for a regex, the "answer" value for JSON."""
        if self.schema is None:
            return (True, reply) if re.fullmatch(self.pattern, reply) is not None else (False, None)
        try:
            value = json.loads(reply)
        except ValueError:
            return False, None
        if not conforms(value, self.schema):
            return False, None
        answer = value["answer"]
        return True, (f"{answer:g}" if isinstance(answer, float) else str(answer))

    def constraint(self, tokenizer, eos_token_id: int) -> TokenConstraint:
        """A fresh logits processor for this format: what RegexConstraint(pattern) or JsonSchemaConstraint(schema)
        builds, from a byte DFA compiled once per pattern (`cached_dfa`)."""
        return TokenConstraint(cached_dfa(self.regex()), tokenizer, eos_token_id=eos_token_id)

    def regex(self) -> str:
        return self.pattern if self.schema is None else schema_to_regex(self.schema)


@functools.lru_cache(maxsize=16)
def cached_dfa(pattern: str) -> ByteDFA:
    """compile_regex(pattern), once per pattern (a ByteDFA is never modified: restricting it makes a new one)."""
    return compile_regex(pattern)


SENTENCE = AnswerFormat("one sentence (regex)", pattern=SENTENCE_PATTERN)
OWN_JSON = AnswerFormat('JSON {"answer": string}', schema=OWN_JSON_SCHEMA)


def smollm2_schema(question: questions.Question) -> dict:
    """{"answer": integer} when the question's answer is a number, else {"answer": string of <= 40 characters}."""
    answer = {"type": "integer"} if question.answers[0].isdigit() else {"type": "string", "maxLength": 40}
    return {"type": "object", "properties": {"answer": answer}, "required": ["answer"], "additionalProperties": False}


SMOLLM2_INTEGER = AnswerFormat('JSON {"answer": integer}', schema=smollm2_schema(QUESTIONS[0]))
SMOLLM2_STRING = AnswerFormat('JSON {"answer": string}', schema=smollm2_schema(QUESTIONS[20]))


def smollm2_format(question: str) -> AnswerFormat:
    return SMOLLM2_INTEGER if questions.BY_TEXT[question].answers[0].isdigit() else SMOLLM2_STRING


# ------------------------------------------------------------------ the measurements
def judge(formats: list[AnswerFormat], prompts: list[str], replies: list[list[str]], grade) -> tuple[np.ndarray, ...]:
    """(valid, correct) arrays (P, S): prompt p's replies checked against formats[p] and graded on the parsed
    answer with grade(prompt, answer); an invalid reply is wrong."""
    valid = np.zeros((len(prompts), len(replies[0])), dtype=bool)
    correct = np.zeros_like(valid)
    for p, (fmt, prompt, row) in enumerate(zip(formats, prompts, replies)):
        for s, reply in enumerate(row):
            ok, answer = fmt.parse(reply)
            valid[p, s] = ok
            correct[p, s] = ok and bool(grade(prompt, answer))
    return valid, correct


def ratio_and_stderr(numerators: np.ndarray, denominators: np.ndarray) -> tuple[float, float]:
    """sum(a) / sum(n) over prompts and its clustered (delta-method) standard error,
    sqrt(P / (P - 1) * sum((a_p - R n_p)^2)) / sum(n): samples of one prompt are not independent.
    (nan, nan) when sum(n) is 0; s.e. 0 for one prompt."""
    a, n = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    total = n.sum()
    if total == 0:
        return float("nan"), float("nan")
    ratio = a.sum() / total
    if a.size < 2:
        return float(ratio), 0.0
    return float(ratio), float(math.sqrt(a.size / (a.size - 1) * np.sum((a - ratio * n) ** 2)) / total)


def summarise(valid: np.ndarray, correct: np.ndarray, logprob: np.ndarray, length: np.ndarray, cut: np.ndarray,
              raw_correct: np.ndarray | None = None) -> dict:
    """The figures of one (format, rule, constrained?) cell from its (P, S) arrays."""
    validity = mean_and_stderr(valid.mean(axis=1))
    accuracy = mean_and_stderr(correct.mean(axis=1))
    among_valid = ratio_and_stderr(correct.sum(axis=1), valid.sum(axis=1))
    result = {"validity": validity[0], "validity_se": validity[1], "accuracy": accuracy[0], "accuracy_se": accuracy[1],
              "accuracy_valid": among_valid[0], "accuracy_valid_se": among_valid[1],
              "n_valid": int(valid.sum()), "n": int(valid.size), "cut": float(cut.mean()),
              "invalid_not_cut": int((~valid & ~cut).sum()),
              "loglik_per_token": float(logprob.sum() / max(length.sum(), 1)),
              "loglik_per_reply": float(logprob.mean()), "mean_length": float(length.mean()),
              "per_prompt_accuracy": correct.mean(axis=1).tolist()}
    if raw_correct is not None:
        raw = mean_and_stderr(raw_correct.mean(axis=1))
        result.update(accuracy_ignoring_format=raw[0], accuracy_ignoring_format_se=raw[1],
                      per_prompt_accuracy_ignoring_format=raw_correct.mean(axis=1).tolist())
    return result


def paired_difference(first: list[float], second: list[float]) -> tuple[float, float]:
    """Mean and standard error over prompts of first - second (per-prompt figures of the same prompts)."""
    return mean_and_stderr(np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64))


class TimedProcessor:
    """A logits processor around another that adds up the time spent inside it and the rows it masked
    (each row of a call is one token's mask). Passes the constraint's eos_token_id on to generate."""

    def __init__(self, inner):
        self.inner, self.seconds, self.rows, self.calls = inner, 0.0, 0, 0

    @property
    def eos_token_id(self):
        return self.inner.eos_token_id

    def __call__(self, input_ids, scores):
        started = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - started
        self.rows += len(scores)
        self.calls += 1
        return out


def compile_all_states(constraint) -> float:
    """Visit every DFA state of a constraint's token automaton now (the lazy work done up front); seconds."""
    started = time.perf_counter()
    for state in range(constraint.automaton.dfa.num_states):
        constraint.automaton.allowed(state)
    return time.perf_counter() - started


def compile_costs(formats: list[AnswerFormat], tokenizer, eos_token_id: int) -> dict:
    """The one-time cost of each format's mask: the vocabulary's trie (once per tokenizer, shared by every
    format), then per format pattern -> byte DFA and the walk of every DFA state over the vocabulary."""
    started = time.perf_counter()
    vocabulary = TokenVocabulary(token_byte_strings(tokenizer))
    trie_seconds = time.perf_counter() - started
    return {"trie_s": trie_seconds, "vocabulary": int(vocabulary.size), "trie_nodes": int(vocabulary.num_nodes),
            "formats": [compile_cost(fmt, vocabulary, eos_token_id) for fmt in formats]}


def compile_cost(fmt: AnswerFormat, vocabulary: TokenVocabulary, eos_token_id: int) -> dict:
    """Pattern -> byte DFA, then every DFA state walked over the vocabulary (the token automaton); seconds."""
    started = time.perf_counter()
    dfa = compile_regex(fmt.regex())
    dfa_seconds = time.perf_counter() - started
    started = time.perf_counter()
    automaton = TokenAutomaton(dfa, vocabulary, eos_token_id)
    for state in range(automaton.dfa.num_states):
        automaton.allowed(state)
    automaton_seconds = time.perf_counter() - started
    return {"format": fmt.name, "dfa_s": dfa_seconds, "automaton_s": automaton_seconds,
            "dfa_states": int(automaton.dfa.num_states), "total_s": dfa_seconds + automaton_seconds}


def answer(subject: Subject, prompts: list[str], formats: list[AnswerFormat] | None, samples: int, seeds: int,
           max_new_tokens: int, options: dict) -> dict:
    """Every prompt answered `samples` times x `seeds` (one reply for greedy), without a constraint
    (`formats` None) or with prompt p constrained to formats[p]; prompts of one format share one constraint
    (compiled in full first). Returns the replies and per-sample arrays as lists (JSON), with timings."""
    greedy = not options.get("do_sample", False)
    per_call = 1 if greedy else samples
    groups: dict[str, list[int]] = {}
    for index in range(len(prompts)):
        groups.setdefault("free" if formats is None else formats[index].name, []).append(index)
    subject.model  # loaded now (on first use), so that loading is not timed as generation
    replies = [[] for _ in prompts]
    columns = {name: [[] for _ in prompts] for name in ("raw_correct", "logprob", "length", "cut")}
    wall = mask_seconds = compile_seconds = 0.0
    mask_rows = 0
    for name, indices in groups.items():
        processors = None
        if formats is not None:
            constraint = formats[indices[0]].constraint(subject.tokenizer, subject.eos_token_id)
            compile_seconds += compile_all_states(constraint)
            processors = [TimedProcessor(constraint)]
        for seed in range(1 if greedy else seeds):
            started = time.perf_counter()
            draws: Draws = draw(subject, [prompts[i] for i in indices], per_call, seed=seed,
                                max_new_tokens=max_new_tokens, logits_processor=processors, **options)
            wall += time.perf_counter() - started
            for row, index in enumerate(indices):
                replies[index] += draws.replies[row]
                columns["raw_correct"][index] += [bool(value) for value in draws.correct[row]]
                columns["logprob"][index] += [float(value) for value in draws.logprob[row]]
                columns["length"][index] += [int(value) for value in draws.length[row]]
                columns["cut"][index] += [len(tokens) >= max_new_tokens for tokens in draws.tokens[row]]
        if processors:
            mask_seconds += processors[0].seconds
            mask_rows += processors[0].rows
    generated = int(sum(sum(row) for row in columns["length"]))
    return dict(columns, replies=replies, wall_s=wall, generated_tokens=generated, mask_s=mask_seconds,
                mask_rows=mask_rows, compile_s=compile_seconds)


def rules(temperatures: list[float]) -> list[tuple[str, dict]]:
    """(label, generate options): temperature 0 is greedy, the others pure temperature sampling (top_k=0)."""
    return [("greedy", {"do_sample": False}) if t == 0 else
            (f"T={t:g}", {"do_sample": True, "temperature": t, "top_k": 0}) for t in temperatures]


# ------------------------------------------------------------------ the models
def smollm2_json_question(tokenizer, question: str) -> list[int]:
    """SmolLM2's chat template with the JSON system prompt, ready for the reply."""
    messages = [{"role": "system", "content": SMOLLM2_SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return [int(i) for i in tokenizer.apply_chat_template(messages, add_generation_prompt=True)]


def smollm2_json_subject(lab: LabRun, max_new_tokens: int) -> Subject | None:
    """SmolLM2-135M-Instruct asked for JSON, or None (logged) when it is not installed; loaded on first use."""
    return smollm2_subject(lab, max_new_tokens, question=smollm2_json_question)


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    fingerprint = settings_fingerprint(s)
    models = OwnModels(lab, s["lifecycle"], s["lifecycle_overrides"])
    _, tokenizer = models.pretrained()
    own = tinyworld_subject("minifm SFT", models.sft(), tokenizer,
                            max_new_tokens=max(s["own_max_new_tokens"], s["own_json_max_new_tokens"]))
    prompts = tinyworld_prompts(own, s["n_prompts"])  # those leaving room for the longer budget
    tag = f"prompts={len(prompts)} samples={s['samples']} seeds={s['seeds']} {fingerprint}"
    own_cells: dict[str, dict] = {}
    for label, options in rules(s["temperatures"]):
        for mode, fmt, budget in (("free", None, s["own_max_new_tokens"]),
                                  ("sentence", SENTENCE, s["own_max_new_tokens"]),
                                  ("json", OWN_JSON, s["own_json_max_new_tokens"])):
            formats = None if fmt is None else [fmt] * len(prompts)
            own_cells[f"{mode} {label}"] = lab.sub_run(
                f"own {mode} {label} {tag}",
                lambda formats=formats, options=options, budget=budget: answer(
                    own, prompts, formats, s["samples"], s["seeds"], budget, options))
    own_compile = lab.sub_run(f"own compile {fingerprint}",
                              lambda: compile_costs([SENTENCE, OWN_JSON], tokenizer, own.eos_token_id))

    smol_cells, smol_compile, smol_questions = {}, None, []
    if s["smollm2_questions"] > 0:
        smol = smollm2_json_subject(lab, s["smollm2_max_new_tokens"])
        if smol is not None:
            smol_questions = [q.text for q in QUESTIONS[:s["smollm2_questions"]]]
            formats = [smollm2_format(q) for q in smol_questions]
            smol_tag = (f"questions={len(smol_questions)} samples={s['smollm2_samples']} seeds={s['seeds']} "
                        f"{fingerprint}")
            for label, options in rules(s["smollm2_temperatures"]):
                for mode, mode_formats in (("free", None), ("json", formats)):
                    smol_cells[f"{mode} {label}"] = lab.sub_run(
                        f"smollm2 {mode} {label} {smol_tag}",
                        lambda mode_formats=mode_formats, options=options: answer(
                            smol, smol_questions, mode_formats, s["smollm2_samples"], s["seeds"],
                            s["smollm2_max_new_tokens"], options))
            used = list({fmt.name: fmt for fmt in formats}.values())
            smol_compile = lab.sub_run(f"smollm2 compile {fingerprint}",
                                       lambda: compile_costs(used, smol.tokenizer, smol.eos_token_id))
    report(lab, models, prompts, own_cells, own_compile, smol_questions, smol_cells, smol_compile)


# ------------------------------------------------------------------ the report
def rule_order(label: str) -> float:
    """greedy first, then the temperatures in increasing order."""
    return 0.0 if label == "greedy" else float(label.removeprefix("T="))


def in_order(rows: dict) -> dict:
    """Rows sorted by format (first seen first), decoding rule, then without before with the constraint."""
    formats = list(dict.fromkeys(fmt for fmt, _, _ in rows))
    return {key: rows[key] for key in sorted(rows, key=lambda k: (formats.index(k[0]), rule_order(k[1]), k[2]))}


def evaluate_own(prompts: list[str], cells: dict) -> dict:
    """Every own-model row of the table: free replies judged under both formats, constrained ones under theirs."""
    rows = {}
    for key, cell in cells.items():
        mode, label = key.split(" ", 1)
        arrays = {name: np.asarray(cell[name]) for name in ("raw_correct", "logprob", "length", "cut")}
        judged = {"sentence": SENTENCE, "json": OWN_JSON}
        for fmt_mode, fmt in judged.items():
            if mode not in ("free", fmt_mode):
                continue
            valid, correct = judge([fmt] * len(prompts), prompts, cell["replies"], tinyworld.grade)
            rows[(fmt.name, label, mode != "free")] = summarise(
                valid, correct, arrays["logprob"], arrays["length"], arrays["cut"],
                arrays["raw_correct"] if mode == "free" else None)
    return in_order(rows)


def evaluate_smollm2(questions_asked: list[str], cells: dict) -> dict:
    rows = {}
    formats = [smollm2_format(q) for q in questions_asked]
    for key, cell in cells.items():
        mode, label = key.split(" ", 1)
        arrays = {name: np.asarray(cell[name]) for name in ("raw_correct", "logprob", "length", "cut")}
        valid, correct = judge(formats, questions_asked, cell["replies"], questions.grade_answer)
        rows[(SMOLLM2_ROWS, label, mode != "free")] = summarise(
            valid, correct, arrays["logprob"], arrays["length"], arrays["cut"],
            arrays["raw_correct"] if mode == "free" else None)
    return in_order(rows)


def timing(cells: dict) -> dict:
    """Wall ms per generated token without and with the constraint, and the mask's own ms per token."""
    free = [c for key, c in cells.items() if key.startswith("free ")]
    constrained = [c for key, c in cells.items() if not key.startswith("free ")]

    def per_token(group, seconds="wall_s", tokens="generated_tokens"):
        total = sum(c[tokens] for c in group)
        return 1e3 * sum(c[seconds] for c in group) / total if total else float("nan")

    return {"free_ms_per_token": per_token(free), "constrained_ms_per_token": per_token(constrained),
            "mask_ms_per_token": per_token(constrained, "mask_s", "mask_rows"),
            "mask_share_of_constrained_wall": (sum(c["mask_s"] for c in constrained)
                                               / max(sum(c["wall_s"] for c in constrained), 1e-12)),
            "generated_tokens_free": sum(c["generated_tokens"] for c in free),
            "generated_tokens_constrained": sum(c["generated_tokens"] for c in constrained)}


def pm(value: float, stderr: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f} ± {stderr:.3f}"


TABLE_HEADER = ["format", "rule", "constraint", "valid ± s.e.", "accuracy ± s.e.", "accuracy among valid",
                "accuracy, format ignored", "cut by budget", "log-lik / token", "log-lik / reply", "tokens"]


def table_rows(rows: dict) -> list[list]:
    out = []
    for (fmt, label, constrained), r in rows.items():
        ignoring = pm(r["accuracy_ignoring_format"], r["accuracy_ignoring_format_se"]) \
            if "accuracy_ignoring_format" in r else "-"
        out.append([fmt, label, "yes" if constrained else "no", pm(r["validity"], r["validity_se"]),
                    pm(r["accuracy"], r["accuracy_se"]),
                    f"{pm(r['accuracy_valid'], r['accuracy_valid_se'])} (n={r['n_valid']})", ignoring, r["cut"],
                    r["loglik_per_token"], r["loglik_per_reply"], r["mean_length"]])
    return out


def comparisons(rows: dict) -> list[dict]:
    """Per (format, rule): constrained accuracy minus unconstrained, paired over prompts, two ways: against
    the unconstrained replies parsed strictly (invalid = wrong) and graded with the format ignored."""
    out = []
    for (fmt, label, constrained), r in rows.items():
        if not constrained or (fmt, label, False) not in rows:
            continue
        free = rows[(fmt, label, False)]
        strict = paired_difference(r["per_prompt_accuracy"], free["per_prompt_accuracy"])
        loose = paired_difference(r["per_prompt_accuracy"], free["per_prompt_accuracy_ignoring_format"])
        out.append({"format": fmt, "rule": label, "validity_free": free["validity"],
                    "validity_constrained": r["validity"],
                    "vs_strict": strict, "vs_format_ignored": loose})
    return out


def by_kind(rows: dict, questions_asked: list[str]) -> list[list]:
    """SmolLM2 per question kind (integer answers: arithmetic and counts; string answers) and rule: accuracy
    without the constraint (format ignored, and strict) and with it, means over that kind's questions."""
    kinds = {"integer answer": [i for i, q in enumerate(questions_asked) if smollm2_format(q) is SMOLLM2_INTEGER],
             "string answer": [i for i, q in enumerate(questions_asked) if smollm2_format(q) is SMOLLM2_STRING]}
    out = []
    for (fmt, label, constrained), r in rows.items():
        if constrained or (fmt, label, True) not in rows:
            continue
        with_constraint = rows[(fmt, label, True)]
        for kind, indices in kinds.items():
            if not indices:
                continue

            def part(values, indices=indices):
                return pm(*mean_and_stderr([values[i] for i in indices]))

            out.append([kind, len(indices), label, part(r["per_prompt_accuracy_ignoring_format"]),
                        part(r["per_prompt_accuracy"]), part(with_constraint["per_prompt_accuracy"])])
    return out


def comparison_rows(items: list[dict]) -> list[list]:
    return [[c["format"], c["rule"], f"{c['validity_free']:.3f} -> {c['validity_constrained']:.3f}",
             pm(*c["vs_strict"]), pm(*c["vs_format_ignored"])] for c in items]


SMOLLM2_ROWS = "JSON (integer or string)"
SHORT_NAMES = {SENTENCE.name: "sentence", OWN_JSON.name: "JSON", SMOLLM2_ROWS: "JSON"}  # tick labels


def plot_cells(panels: list[tuple[str, dict]], path, metric: str, ylabel: str, title: str,
               also_ignoring_format: bool = False) -> None:
    """Grouped bars, one panel per model: per (format, rule) a bar without and one with the constraint,
    with standard-error bars (and first, with also_ignoring_format, the unconstrained replies graded with the
    format ignored)."""
    plt = pyplot()
    figure, axes_list = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.4), dpi=100, squeeze=False)
    for axes, (name, rows) in zip(axes_list[0], panels):
        formats = list(dict.fromkeys(fmt for fmt, _, _ in rows))
        labels = list(dict.fromkeys(label for _, label, _ in rows))
        groups = [(fmt, label) for fmt in formats for label in labels if (fmt, label, False) in rows
                  or (fmt, label, True) in rows]
        xs = np.arange(len(groups))
        series = [(metric, False, "tab:grey", "without (invalid = wrong)" if also_ignoring_format else "without"),
                  (metric, True, "tab:blue", "with the constraint")]
        if also_ignoring_format:
            series.insert(0, ("accuracy_ignoring_format", False, "silver", "without, format ignored"))
        width = 0.8 / len(series)
        for index, (key, constrained, colour, legend) in enumerate(series):
            values = [rows.get((fmt, label, constrained), {}) for fmt, label in groups]
            offset = (index - (len(series) - 1) / 2) * width
            bars = axes.bar(xs + offset, [v.get(key, np.nan) for v in values], width,
                            yerr=[v.get(key + "_se", 0.0) for v in values], capsize=3, color=colour, label=legend)
            axes.bar_label(bars, fmt="%.2f", fontsize="x-small", padding=2)
        axes.set_xticks(xs)
        axes.set_xticklabels([f"{SHORT_NAMES.get(fmt, fmt)}\n{label}" for fmt, label in groups], fontsize="small")
        axes.set_ylim(0, 1.3 if also_ignoring_format else 1.25)  # room for the legend above the bars
        axes.set_ylabel(ylabel)
        axes.set_xlabel("format and decoding rule")
        axes.set_title(name)
        axes.grid(alpha=0.3, axis="y")
        axes.legend(fontsize="small", loc="upper right")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_cost(costs: dict[str, dict], path) -> None:
    """Wall ms per generated token without / with the constraint and the mask's own share, per model."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    names = list(costs)
    xs = np.arange(len(names))
    axes.bar(xs - 0.27, [costs[n]["free_ms_per_token"] for n in names], 0.27, label="generate, no constraint",
             color="tab:grey")
    axes.bar(xs, [costs[n]["constrained_ms_per_token"] for n in names], 0.27, label="generate, with the constraint",
             color="tab:blue")
    axes.bar(xs + 0.27, [costs[n]["mask_ms_per_token"] for n in names], 0.27, label="the mask alone",
             color="tab:orange")
    axes.set_xticks(xs)
    axes.set_xticklabels(names)
    axes.set_yscale("log")
    axes.set_ylabel("ms per generated token (log scale)")
    axes.set_xlabel("model")
    axes.set_title("The cost of constrained decoding per token")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def cost_rows(name: str, compiled: dict) -> list[list]:
    rows = [[name, "(vocabulary trie, once per tokenizer)", f"{compiled['vocabulary']} tokens, "
             f"{compiled['trie_nodes']} nodes", "", f"{1e3 * compiled['trie_s']:.0f}", ""]]
    for c in compiled["formats"]:
        rows.append([name, c["format"], f"{c['dfa_states']} DFA states", f"{1e3 * c['dfa_s']:.0f}",
                     f"{1e3 * c['automaton_s']:.0f}", f"{1e3 * c['total_s']:.0f}"])
    return rows


def verdict(name: str, rows: dict, items: list[dict]) -> str:
    """The sentences the numbers support, for one model."""
    parts = []
    ranges = []
    for fmt in dict.fromkeys(fmt for fmt, _, _ in rows):
        free_valid = [r["validity"] for (f, _, constrained), r in rows.items() if f == fmt and not constrained]
        constrained_valid = [r["validity"] for (f, _, constrained), r in rows.items() if f == fmt and constrained]
        if free_valid and constrained_valid:
            ranges.append(f"{fmt}: {_span(free_valid)} without the constraint, {_span(constrained_valid)} with it")
    constrained_valid = [r["validity"] for (_, _, constrained), r in rows.items() if constrained]
    cut = max((r["cut"] for (_, _, constrained), r in rows.items() if constrained), default=0.0)
    unexplained = sum(r["invalid_not_cut"] for (_, _, constrained), r in rows.items() if constrained)
    parts.append(f"{name}, share of replies that parse and validate (over the decoding rules): " + "; ".join(ranges)
                 + ".")
    if min(constrained_valid) < 1:
        parts.append(f"The constrained replies that are not valid were cut by the token budget before the format "
                     f"closed (up to {cut:.0%} of a cell): a constraint guarantees a valid text only if the model "
                     f"reaches its end." if unexplained == 0 else
                     f"{unexplained} constrained replies are invalid without being cut: a defect of the constraint.")
    hurts, helps, same = [], [], []
    for c in items:
        mean, stderr = c["vs_format_ignored"]
        text = f"{c['format']} {c['rule']} {mean:+.3f} ± {stderr:.3f}"
        (hurts if mean < -2 * stderr else helps if mean > 2 * stderr else same).append(text)
    parts.append("Accuracy with the constraint minus accuracy of the unconstrained replies graded with the format "
                 "ignored (paired over prompts): "
                 + "; ".join(([f"lower (beyond two s.e.): {', '.join(hurts)}"] if hurts else [])
                             + ([f"higher: {', '.join(helps)}"] if helps else [])
                             + ([f"within two s.e.: {', '.join(same)}"] if same else [])) + ".")
    loglik = [f"{fmt} {label}: {rows[(fmt, label, False)]['loglik_per_token']:.2f} -> {r['loglik_per_token']:.2f}"
              for (fmt, label, constrained), r in rows.items() if constrained and (fmt, label, False) in rows]
    parts.append("Log-likelihood per token under the unconstrained model, without -> with the constraint: "
                 + "; ".join(loglik) + " (lower: the constraint makes the model write text it would not choose).")
    return " ".join(parts)


def report(lab: LabRun, models: OwnModels, prompts: list[str], own_cells: dict, own_compile: dict,
           smol_questions: list[str], smol_cells: dict, smol_compile: dict | None) -> None:
    s = lab.settings
    own_rows = evaluate_own(prompts, own_cells)
    own_items = comparisons(own_rows)
    costs = {"minifm SFT": timing(own_cells)}
    panels = [(f"minifm SFT model ({len(prompts)} tinyworld questions)", own_rows)]
    smol_rows, smol_items = {}, []
    if smol_cells:
        smol_rows = evaluate_smollm2(smol_questions, smol_cells)
        smol_items = comparisons(smol_rows)
        costs["SmolLM2-135M"] = timing(smol_cells)
        panels.append((f"SmolLM2-135M-Instruct ({len(smol_questions)} questions)", smol_rows))
    plot_cells(panels, lab.path("validity.png"), "validity", "share of replies that parse and validate",
               "Format validity without and with the constraint (± s.e. over prompts)")
    plot_cells(panels, lab.path("accuracy.png"), "accuracy", "share of replies graded right",
               "Answer accuracy without and with the constraint (± s.e. over prompts)", also_ignoring_format=True)
    plot_cost(costs, lab.path("cost.png"))

    compile_table = cost_rows("minifm SFT", own_compile)
    if smol_compile:
        compile_table += cost_rows("SmolLM2-135M", smol_compile)
    timing_table = [[name, c["free_ms_per_token"], c["constrained_ms_per_token"], c["mask_ms_per_token"],
                     f"{100 * c['mask_share_of_constrained_wall']:.2f}%", c["generated_tokens_free"],
                     c["generated_tokens_constrained"]] for name, c in costs.items()]
    comparison_header = ["format", "rule", "valid: without -> with", "accuracy: with - without (strict)",
                         "accuracy: with - without (format ignored)"]
    setup = (f"{models.describe()}. Own model: {len(prompts)} held-out tinyworld instructions, the plain question as "
             f"the prompt; formats: one sentence `{SENTENCE_PATTERN}` and JSON `{json.dumps(OWN_JSON_SCHEMA)}`; "
             f"at most {s['own_max_new_tokens']} new tokens ({s['own_json_max_new_tokens']} for JSON). ")
    if smol_cells:
        setup += (f"SmolLM2-135M-Instruct: {len(smol_questions)} questions, system prompt "
                  f"`{SMOLLM2_SYSTEM_PROMPT}`, schema {{\"answer\": integer}} for numeric answers and "
                  f"{{\"answer\": string, maxLength 40}} otherwise, at most {s['smollm2_max_new_tokens']} new tokens, "
                  f"{s['smollm2_samples']} samples per question at each temperature. ")
    else:
        setup += "SmolLM2: not run (not installed, or switched off by the preset). "
    setup += (f"Decoding: greedy (one reply per prompt) and temperature sampling {s['temperatures']} with "
              f"{s['samples']} samples per prompt x {s['seeds']} seed(s) (top_k=0), the same seeds with and without "
              f"the constraint. Standard errors over prompts.")
    sections = [
        ("Question", f"Does constrained decoding make every output parse, how often do outputs parse without it, and "
                     f"what does it cost in accuracy and time? (The chapter: \"{CLAIM}\".)"),
        ("Setup", setup),
        ("minifm SFT model", markdown_table(TABLE_HEADER, table_rows(own_rows))
         + "\n\n" + markdown_table(comparison_header, comparison_rows(own_items))),
    ]
    if smol_cells:
        sections.append(("SmolLM2-135M-Instruct", markdown_table(TABLE_HEADER, table_rows(smol_rows))
                         + "\n\n" + markdown_table(comparison_header, comparison_rows(smol_items))
                         + "\n\nBy question kind (accuracy):\n\n"
                         + markdown_table(["answer type", "questions", "rule", "without, format ignored",
                                           "without, strict", "with the constraint"],
                                          by_kind(smol_rows, smol_questions))
                         + "\n\nExamples (greedy, without -> with the constraint):\n\n"
                         + "\n".join(f"* {smol_questions[i]}: `{_short(smol_cells['free greedy']['replies'][i][0])}`"
                                     f" -> `{_short(smol_cells['json greedy']['replies'][i][0])}`"
                                     for i in sorted({0, 1, 2, len(smol_questions) - 3, len(smol_questions) - 2,
                                                      len(smol_questions) - 1} & set(range(len(smol_questions)))))
                         if "free greedy" in smol_cells else ""))
    sections.append(("Plots", "![validity](validity.png)\n\n![accuracy](accuracy.png)\n\n![cost](cost.png)"))
    sections.append(("Cost", "Per generated token, during generation (the mask compiled in full beforehand). The wall "
                     "times with and without the constraint come from generate calls of different shapes (SmolLM2's "
                     "two schemas make two smaller batches; a batch runs until its longest row ends), on a shared "
                     "machine, so their difference is not the mask's cost: the mask alone is timed inside generate "
                     "(a wrapper around the logits processor).\n\n"
                     + markdown_table(["model", "ms / token, no constraint", "ms / token, with",
                                       "mask alone ms / token",
                                       "mask share of constrained time", "tokens (no constraint)", "tokens (with)"],
                                      timing_table)
                     + "\n\nOne-time compile (ms):\n\n"
                     + markdown_table(["model", "format", "size", "pattern -> DFA",
                                       "every state over the vocabulary", "total (trie aside)"], compile_table)))
    shows = verdict("Own model", own_rows, own_items)
    if smol_rows:
        shows += " " + verdict("SmolLM2", smol_rows, smol_items)
    shows += " " + " ".join(
        f"{name}: the mask costs {c['mask_ms_per_token']:.3f} ms per token "
        f"({100 * c['mask_share_of_constrained_wall']:.2f}% of constrained generation's wall time)."
        for name, c in costs.items())
    sections.append(("What it shows", shows))
    lab.write_report("Structured outputs: format validity and accuracy with and without a constraint", sections,
                     {"own": _keyed(own_rows), "own_comparisons": own_items, "smollm2": _keyed(smol_rows),
                      "smollm2_comparisons": smol_items, "cost": costs, "compile": {"own": own_compile,
                                                                                     "smollm2": smol_compile},
                      "models": models.figures})


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.0%}" if round(100 * low) == round(100 * high) else f"{low:.0%}-{high:.0%}"


def _short(text: str, limit: int = 70) -> str:
    text = text.replace("\n", " ").replace("`", "'").replace("|", "/")
    return text if len(text) <= limit else text[:limit] + "..."


def _keyed(rows: dict) -> dict:
    return {f"{fmt} | {label} | {'constrained' if constrained else 'free'}": r
            for (fmt, label, constrained), r in rows.items()}
