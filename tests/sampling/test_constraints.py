"""Structured outputs: the regex automaton against Python's re, the JSON Schema subset against a validator,
the token masks against brute force, constrained sampling (every finished sample valid, on a small
minifm BPE and on SmolLM2's tokenizer), the exact restriction of the distribution, the logits_processor
hook in transformers' place (greedy, sampling, beam search), and the --regex / --json-schema flags."""
import functools
import hashlib
import json
import math
import re
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles import require
from minifm import cli
from minifm.models import GPT, GPTConfig
from minifm.runs import save_run
from minifm.sampling.constraints import (
    FINISHED, REFUSED, JsonSchemaConstraint, RegexConstraint, TokenConstraint, format_validity, measure_mask_cost,
    vocabulary_of,
)
from minifm.sampling.generate import generate
from minifm.sampling.json_schema import schema_to_regex
from minifm.sampling.logits_processor import LogitsProcessorList, check_logits_processors
from minifm.sampling.processors import process_logits, sample
from minifm.sampling.regex_automaton import DEAD, RegexError, build_nfa, compile_regex, utf8_sequences
from minifm.tokenizer import BPETokenizer, from_pretrained
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

CORPUS = ["abc abba cab 0123 x-ray. café été 中文中 😀😀 a_b\n" * 3, "Mara lives in Tollby; ages 12, 345."] * 4
SMALL = BPETokenizer.train(CORPUS, 330, special_tokens=DEFAULT_SPECIAL_TOKENS)
SMALL_EOS = SMALL.special_tokens["<|endoftext|>"]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf):
    return from_pretrained(smollm2_gguf)


@functools.lru_cache(maxsize=None)
def compiled(pattern: str):
    return compile_regex(pattern)


# ---------------------------------------------------------------------------------- drawn patterns
LITERALS = ["a", "b", "c", "x", " ", "é", "中", "😀", r"\.", r"\-", "0", r"\n", r"\u00e9", r"\x41", "_", "{"]
CLASSES = ["[a-c]", "[^a]", "[abé]", r"\d", r"\w", r"\s", ".", r"[^\sa]", "[0-9]", "[丁-中]", "[-a]", "[]b]",
           r"[\d.]", "[é-ê]"]
QUANTIFIERS = ["*", "+", "?", "{2}", "{0,2}", "{1,3}", "{2,}", "*?", "{,2}", "??"]


def _extend(children):
    pieces = st.lists(children, min_size=2, max_size=3)
    return st.one_of(
        pieces.map("".join),
        pieces.map(lambda options: "(" + "|".join(options) + ")"),
        st.tuples(children, st.sampled_from(QUANTIFIERS)).map(lambda item: "(?:" + item[0] + ")" + item[1]),
        st.tuples(st.sampled_from(LITERALS + CLASSES), st.sampled_from(QUANTIFIERS)).map("".join),
    )


REGEXES = st.recursive(st.sampled_from(LITERALS + CLASSES + [""]), _extend, max_leaves=6)
TEXT_ALPHABET = "abcx é中😀.-0١٣_\n\tAê丁{"


def walk_sample(dfa, rng, max_bytes=40) -> bytes | None:
    """A random string of the DFA's language (a random walk that stops in accepting states), or None."""
    state, out = dfa.start, bytearray()
    for _ in range(max_bytes):
        if dfa.accepting[state] and rng.random() < 0.3:
            return bytes(out)
        moves = np.flatnonzero(dfa.transitions[state] != DEAD)
        if moves.size == 0:
            return bytes(out) if dfa.accepting[state] else None
        byte = int(rng.choice(moves))
        out.append(byte)
        state = int(dfa.transitions[state, byte])
    return bytes(out) if dfa.accepting[state] else None


@given(pattern=REGEXES, texts=st.lists(st.text(alphabet=TEXT_ALPHABET, max_size=6), max_size=30),
       seed=st.integers(0, 2**16))
def test_the_dfa_accepts_exactly_what_re_fullmatch_accepts(pattern, texts, seed):
    dfa = compiled(pattern)
    rng = np.random.default_rng(seed)
    walked = [walk_sample(dfa, rng) for _ in range(20)]
    texts += [data.decode("utf-8") for data in walked if data is not None]  # the DFA's own strings: valid UTF-8
    for text in texts:
        assert dfa.fullmatch(text) == bool(re.fullmatch(pattern, text)), (pattern, text)


def test_fixed_patterns_against_re():
    cases = {r"[a-z]+@[a-z]+\.(com|org)": ["ana@site.org", "ana@site.net", "@x.com"],
             r"a{2,4}b?": ["a", "aa", "aaaab", "aaaaa"], r"(ab|a)*c": ["abac", "c", "abab"],
             r"^abc$": ["abc", "abc\n"], r"a{,}": ["", "aaa"], r"a{}": ["a{}", "a"], r"x{0}": ["", "x"],
             r"\w+": ["héllo_1", "a b", "١٢"], r"[^\d\s]+": ["ab", "a1"], r"\N{BULLET}\U0001F600": ["•😀"]}
    for pattern, texts in cases.items():
        dfa = compile_regex(pattern)
        for text in texts:
            assert dfa.fullmatch(text) == bool(re.fullmatch(pattern, text)), (pattern, text)


@pytest.mark.parametrize("low, high", [(0, 0x10FFFF), (0x61, 0xE9), (0x7FF, 0x800), (0xD000, 0xE100), (0x80, 0x10000),
                                       (0xFFFF, 0x10000), (0x1F600, 0x1F64F)])
def test_utf8_sequences_spell_exactly_the_code_points_of_a_range(low, high):
    sequences = utf8_sequences(low, high)
    size = sum(math.prod(last - first + 1 for first, last in sequence) for sequence in sequences)
    surrogates = max(0, min(high, 0xDFFF) - max(low, 0xD800) + 1)
    assert size == high - low + 1 - surrogates  # no byte string twice (products are disjoint) ...
    rng = np.random.default_rng(low)
    for code_point in [low, high] + rng.integers(low, high + 1, size=200).tolist():
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        data = chr(code_point).encode("utf-8")  # ... and every code point of the range is one of them
        assert any(len(s) == len(data) and all(a <= byte <= b for byte, (a, b) in zip(data, s)) for s in sequences)


@pytest.mark.parametrize("pattern, position, words", [
    ("ab(?=c)", 2, "lookahead"), ("a(?<!b)", 1, "lookbehind"), (r"(a)\1", 3, "backreferences"),
    ("(?P<x>a)(?P=x)", 8, "backreferences"), ("a*+", 2, "possessive"), (r"\bword", 0, "word boundaries"),
    ("(?i)a", 0, "inline flags"), ("(?>a)", 0, "atomic"), ("a^", 1, "'^'"), ("$a", 0, "'$'"), ("(a", 0, "missing ')'"),
    ("a)", 1, "unbalanced"), ("*a", 0, "nothing to repeat"), ("a**", 2, "multiple repeat"), ("[z-a]", 1, "bad character range"),
    (r"[\d-z]", 1, "bad character range"), ("[ab", 0, "unterminated"), (r"\q", 0, "bad escape"), ("a{3,1}", 1, "min repeat"),
    ("a{1001}", 1, "above 1000"), ("x\\", 1, "lone backslash"), (r"\x4", 0, "hex digits"), ("(?(1)a|b)", 0, "conditional"),
])
def test_unsupported_or_malformed_syntax_is_an_error_naming_the_position(pattern, position, words):
    with pytest.raises(RegexError) as raised:
        compile_regex(pattern)
    assert raised.value.position == position and words in str(raised.value)
    assert f"at position {position}" in str(raised.value) and repr(pattern) in str(raised.value)


# ---------------------------------------------------------------------------------- JSON Schema
def validate(value, schema) -> bool:
    """The subset's meaning, written out: does the parsed JSON `value` satisfy `schema`?"""
    if "anyOf" in schema:
        return any(validate(value, option) for option in schema["anyOf"])
    if "const" in schema:
        return type(value) is type(schema["const"]) and value == schema["const"]
    if "enum" in schema:
        return any(type(value) is type(option) and value == option for option in schema["enum"])
    types_ = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    for name in types_:
        if name == "null" and value is None or name == "boolean" and isinstance(value, bool):
            return True
        if name == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if name == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if name == "string" and isinstance(value, str):
            if schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf):
                return True
        if name == "array" and isinstance(value, list):
            if schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf) \
                    and all(validate(item, schema["items"]) for item in value):
                return True
        if name == "object" and isinstance(value, dict):
            properties = schema.get("properties", {})
            if set(schema.get("required", [])) <= set(value) <= set(properties) \
                    and all(validate(item, properties[key]) for key, item in value.items()):
                return True
    return False


SCALARS = st.one_of(st.integers(-50, 50), st.booleans(), st.none(), st.sampled_from(["a", "é", 'q"', "x\\y", ""]),
                    st.sampled_from([1.5, -0.25]))
LEAF_SCHEMAS = st.one_of(
    st.sampled_from([{"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
                     {"type": ["string", "null"], "maxLength": 3}, {"type": ["integer", "boolean"]}]),
    st.builds(lambda low, extra: {"type": "string", "minLength": low, "maxLength": low + extra},
              st.integers(0, 2), st.integers(0, 3)),
    st.lists(SCALARS, min_size=1, max_size=3).map(lambda values: {"enum": values}),
    SCALARS.map(lambda value: {"const": value}),
)
PROPERTY_NAMES = ["name", "age", "é", 'q"uote', "tags"]


def _schema_extend(children):
    objects = st.lists(st.tuples(st.sampled_from(PROPERTY_NAMES), children, st.booleans()), max_size=3,
                       unique_by=lambda item: item[0]).map(lambda members: {
        "type": "object", "properties": {name: schema for name, schema, _ in members},
        "required": [name for name, _, required in members if required]})
    arrays = st.builds(lambda items, low, extra: {"type": "array", "items": items, "minItems": low,
                                                  "maxItems": low + extra},
                       children, st.integers(0, 2), st.integers(0, 2))
    return st.one_of(objects, arrays, st.lists(children, min_size=2, max_size=2).map(lambda o: {"anyOf": o}))


SCHEMAS = st.recursive(LEAF_SCHEMAS, _schema_extend, max_leaves=5)


@given(schema=SCHEMAS, seed=st.integers(0, 2**16))
def test_every_string_of_a_schema_pattern_parses_and_is_valid(schema, seed):
    dfa = compiled(schema_to_regex(schema))
    rng = np.random.default_rng(seed)
    found = 0
    for _ in range(30):
        data = walk_sample(dfa, rng, max_bytes=120)
        if data is not None:
            found += 1
            assert validate(json.loads(data.decode("utf-8")), schema), (schema, data)
    assert dfa.fullmatch(json.dumps(_some_instance(schema), ensure_ascii=False)), schema


def _some_instance(schema):
    """A small valid instance written the way the pattern spells it (json.dumps' separators)."""
    if "anyOf" in schema:
        return _some_instance(schema["anyOf"][0])
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    name = schema["type"] if isinstance(schema["type"], str) else schema["type"][0]
    if name == "object":
        return {key: _some_instance(sub) for key, sub in schema["properties"].items() if key in schema["required"]}
    if name == "array":
        return [_some_instance(schema["items"])] * schema.get("minItems", 0)
    if name == "string":
        return "é" * schema.get("minLength", 0)
    return {"integer": -7, "number": 2.5e-3, "boolean": False, "null": None}[name]


@pytest.mark.parametrize("schema, words", [
    ({"type": "string", "pattern": "a+"}, "keyword 'pattern'"), ({"type": "integer", "minimum": 0}, "'minimum'"),
    ({"$ref": "#/x"}, "'$ref'"), ({}, "needs a `type`"), ({"type": "date"}, "'date' is not one of"),
    ({"type": "array"}, "needs `items`"), ({"type": "object", "properties": {}, "required": ["a"]}, "required names 'a'"),
    ({"type": "string", "maxLength": -1}, "maxLength must be an integer >= 0"),
    ({"type": "array", "items": {"type": "null"}, "minItems": 3, "maxItems": 1}, "maxItems 1 < minItems 3"),
    ({"enum": []}, "non-empty list"), ({"type": "string", "enum": [1, 2]}, "no enum/const value has the type"),
    ({"type": "object", "properties": {"a": {"type": "integer", "format": "x"}}}, "schema.properties['a']"),
    ({"enum": ["a"], "maxLength": 2}, "enum / const next to"),
])
def test_unsupported_schemas_are_errors_naming_the_keyword_and_place(schema, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        schema_to_regex(schema)


def test_optional_properties_keep_the_schema_order_and_the_separators():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "null"}, "c": {"type": "boolean"}},
              "required": ["b"]}
    dfa = compile_regex(schema_to_regex(schema))
    for value in ({"b": None}, {"a": 1, "b": None}, {"b": None, "c": True}, {"a": 1, "b": None, "c": False}):
        assert dfa.fullmatch(json.dumps(value))
    for text in ('{"a": 1}', '{"b": null, "a": 1}', '{"b":null}', '{ "b": null}', '{"b": null,"c": true}'):
        assert not dfa.fullmatch(text), text


# ---------------------------------------------------------------------------------- token masks
def nfa_read(nfa, current, data: bytes):
    """The NFA states after reading `data` from the state set `current` (empty: the text died)."""
    for byte in data:
        current = nfa.closure([t for s in current for low, high, t in nfa.edges[s] if low <= byte <= high])
        if not current:
            break
    return current


def nfa_feasible(nfa, current, data: bytes, usable: np.ndarray) -> bool:
    """Brute force, on the Thompson NFA (no DFA, no trie): from the NFA states `current`, is `data` a
    prefix of a string of the language written with usable bytes only (the one-byte tokens)? Simulate
    the NFA on `data`, then search for a path to the accept state."""
    if not all(usable[byte] for byte in data):
        return False
    current = nfa_read(nfa, current, data)
    if not current:
        return False
    seen, stack = set(current), list(current)
    while stack:
        state = stack.pop()
        if state == nfa.accept:
            return True
        following = list(nfa.epsilon[state])
        following += [t for low, high, t in nfa.edges[state] if usable[low:high + 1].any()]
        for target in following:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return False


def constrained_samples(constraint, vocab_size, rng, rows=4, steps=80, eos_boost=6.0, prompt=(7,)):
    """Sample with random logits through the constraint, as generate does; returns each row's new tokens
    and the masks seen at every step (a list of (prefix tokens, allowed mask))."""
    constraint.reset()
    ids = np.tile(np.asarray(prompt, dtype=np.int64), (rows, 1))
    seen = []
    for _ in range(steps):
        logits = rng.normal(size=(rows, vocab_size)) * 3.0
        logits[:, constraint.eos_token_id] += eos_boost
        scores = constraint(ids, logits)
        for row in range(rows):
            seen.append((ids[row, len(prompt):].tolist(), np.isfinite(scores[row])))
        if all(state < 0 for state in constraint.states):
            break
        ids = np.concatenate([ids, sample(scores, rng)[:, None]], axis=1)
    return [ids[row, len(prompt):].tolist() for row in range(rows)], seen


def finished_text(tokenizer, constraint, tokens) -> str | None:
    """The text of a row that ended with eos (None when it was cut by the step limit)."""
    if constraint.eos_token_id not in tokens:
        return None
    end = tokens.index(constraint.eos_token_id)
    return tokenizer.decode(tokens[:end])


@given(pattern=REGEXES, seed=st.integers(0, 2**16))
def test_constrained_samples_of_a_small_bpe_fully_match_and_masks_equal_brute_force(pattern, seed):
    constraint = RegexConstraint(pattern, SMALL)
    rng = np.random.default_rng(seed)
    samples, seen = constrained_samples(constraint, SMALL.vocab_size, rng)
    for tokens in samples:
        text = finished_text(SMALL, constraint, tokens)
        if text is not None:
            assert re.fullmatch(pattern, text), (pattern, text)
        else:  # cut by the step limit: still a prefix of a match
            assert constraint.automaton.dfa.walk(0, SMALL.decode_bytes(tokens)) != DEAD
    nfa, usable = build_nfa(pattern), vocabulary_of(SMALL).single_byte
    for prefix, allowed in seen[:: max(1, len(seen) // 4)]:  # a few of the masks, against brute force
        if SMALL_EOS in prefix:
            assert allowed.sum() == 1 and allowed[SMALL_EOS]
            continue
        after_prefix = nfa_read(nfa, nfa.closure([nfa.start]), SMALL.decode_bytes(prefix))
        for token in range(SMALL.vocab_size):
            if token in SMALL.special_tokens.values():
                expected = token == SMALL_EOS and nfa.accept in after_prefix
            else:
                expected = nfa_feasible(nfa, after_prefix, SMALL.id_to_bytes(token), usable)
            assert allowed[token] == expected, (pattern, prefix, token, SMALL.id_to_bytes(token))


@settings(max_examples=15)
@given(schema=SCHEMAS, seed=st.integers(0, 2**16))
def test_constrained_json_of_a_small_bpe_parses_and_validates(schema, seed):
    constraint = JsonSchemaConstraint(schema, SMALL)
    samples, _ = constrained_samples(constraint, SMALL.vocab_size, np.random.default_rng(seed), steps=150)
    for tokens in samples:
        text = finished_text(SMALL, constraint, tokens)
        if text is not None:
            assert validate(json.loads(text), schema), (schema, text)


@settings(max_examples=10)
@given(pattern=REGEXES, schema=SCHEMAS, seed=st.integers(0, 2**16))
def test_constrained_samples_with_smollm2_tokens_are_valid(smollm2_tokenizer, pattern, schema, seed):
    tokenizer = smollm2_tokenizer
    rng = np.random.default_rng(seed)
    regex = RegexConstraint(pattern, tokenizer)
    for tokens in constrained_samples(regex, tokenizer.vocab_size, rng, rows=3)[0]:
        text = finished_text(tokenizer, regex, tokens)
        if text is not None:
            assert re.fullmatch(pattern, text), (pattern, text)
    json_constraint = JsonSchemaConstraint(schema, tokenizer)
    for tokens in constrained_samples(json_constraint, tokenizer.vocab_size, rng, rows=3, steps=150)[0]:
        text = finished_text(tokenizer, json_constraint, tokens)
        if text is not None:
            assert validate(json.loads(text), schema), (schema, text)


def test_smollm2_masks_equal_a_token_by_token_walk_of_the_dfa(smollm2_tokenizer):
    tokenizer = smollm2_tokenizer
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "n": {"type": "integer"}},
              "required": ["name"]}
    constraint = JsonSchemaConstraint(schema, tokenizer)
    dfa = constraint.automaton.dfa
    special = set(tokenizer.special_tokens.values())
    token_bytes = [None if t in special else tokenizer.token_bytes(t) for t in range(tokenizer.vocab_size)]
    for prefix in ('', '{"na', '{"name": "ab', '{"name": "abcdefgh"', '{"name": "", "n": -1'):
        state = dfa.walk(0, prefix.encode())
        allowed = constraint.automaton.allowed(state)
        for token, data in enumerate(token_bytes):
            if data is None:
                expected = token == constraint.eos_token_id and bool(dfa.accepting[state])
            else:
                expected = dfa.walk(state, data) != DEAD
            assert allowed[token] == expected, (prefix, token, data)
    assert not constraint.automaton.allowed(0)[list(special)].any()  # special tokens never in the text


def test_the_constrained_distribution_is_the_model_distribution_restricted_exactly(rng):
    constraint = RegexConstraint(r"(ab|é)[0-9]{1,3}", SMALL)
    ids = np.array([[3, 97], [3, 98]])
    logits = rng.normal(size=(2, SMALL.vocab_size)) * 4
    constrained = constraint(ids, logits)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    for row in range(2):
        allowed = np.isfinite(constrained[row])
        assert allowed.any() and not allowed.all()
        np.testing.assert_array_equal(constrained[row, allowed], logits[row, allowed])  # kept scores unchanged
        renormalised = np.exp(constrained[row] - constrained[row, allowed].max())
        renormalised /= renormalised.sum()
        np.testing.assert_allclose(renormalised[allowed], probabilities[row, allowed] / probabilities[row, allowed].sum(),
                                   rtol=1e-12)
        assert (renormalised[~allowed] == 0).all()


def test_eos_is_forced_when_the_match_cannot_grow_and_after_the_end(rng):
    constraint = RegexConstraint("ab", SMALL)
    a, b = SMALL.token_to_id(b"a"), SMALL.token_to_id(b"b")
    for ids in ([5], [5, a]):
        scores = constraint(np.array([ids]), rng.normal(size=(1, SMALL.vocab_size)))
        assert not np.isfinite(scores[0, SMALL_EOS])  # no eos before the match is complete
    scores = constraint(np.array([[5, a, b]]), rng.normal(size=(1, SMALL.vocab_size)))
    assert np.flatnonzero(np.isfinite(scores[0])).tolist() == [SMALL_EOS]
    scores = constraint(np.array([[5, a, b, SMALL_EOS]]), rng.normal(size=(1, SMALL.vocab_size)))
    assert constraint.states == [FINISHED] and np.flatnonzero(np.isfinite(scores[0])).tolist() == [SMALL_EOS]
    constraint.reset()
    constraint(np.array([[5]]), rng.normal(size=(1, SMALL.vocab_size)))
    constraint(np.array([[5, SMALL.token_to_id(b"c")]]), rng.normal(size=(1, SMALL.vocab_size)))
    assert constraint.states == [REFUSED]  # a token it did not allow (forced from outside): only eos afterwards


def test_rows_are_followed_through_reordering_and_a_new_prompt_starts_over(rng):
    constraint = RegexConstraint("[ab]{4}", SMALL)
    a, b = SMALL.token_to_id(b"a"), SMALL.token_to_id(b"b")
    constraint(np.array([[9, 9], [8, 9]]), rng.normal(size=(2, SMALL.vocab_size)))
    assert constraint.prompt_length == 2
    constraint(np.array([[9, 9, a], [8, 9, b]]), rng.normal(size=(2, SMALL.vocab_size)))
    # beam search swaps and duplicates rows: each row is found by its tokens
    constraint(np.array([[8, 9, b, a], [8, 9, b, b], [9, 9, a, a]]), rng.normal(size=(3, SMALL.vocab_size)))
    dfa = constraint.automaton.dfa
    assert constraint.states == [dfa.walk(0, b"ba"), dfa.walk(0, b"bb"), dfa.walk(0, b"aa")]
    constraint(np.array([[1, 2, 3]]), rng.normal(size=(1, SMALL.vocab_size)))  # continues no row: a new generation
    assert constraint.prompt_length == 3 and constraint.states == [0]
    with pytest.raises(ValueError, match="continue none of the rows"):
        constraint(np.array([[1, 2, 3, a], [4, 5, 6, a]]), rng.normal(size=(2, SMALL.vocab_size)))


def test_constraint_errors_name_the_problem(rng):
    with pytest.raises(ValueError, match="matches no text this tokenizer can write"):
        RegexConstraint("[^\\x00-\\U0010ffff]", SMALL)
    with pytest.raises(ValueError, match="eos_token_id"):
        RegexConstraint("a", SMALL, eos_token_id=10**6)
    constraint = RegexConstraint("a", SMALL)
    with pytest.raises(ValueError, match="fewer than the tokenizer"):
        constraint(np.array([[1]]), np.zeros((1, 10)))
    with pytest.raises(ValueError, match="scores must be a float array"):
        constraint(np.array([[1]]), np.zeros((2, SMALL.vocab_size)))
    wider = constraint(np.array([[1]]), np.zeros((1, SMALL.vocab_size + 5)))  # a padded model vocabulary
    assert np.isneginf(wider[0, SMALL.vocab_size:]).all()


def test_wordpiece_tokenizers_are_refused(minilm_dir):
    with pytest.raises(ValueError, match="byte-level"):
        RegexConstraint("a", from_pretrained(minilm_dir), eos_token_id=0)


# ---------------------------------------------------------------------------------- the generate hook
class RandomLogitsModel:
    """A stand-in model: the logits of a row depend only on its tokens (seeded by a hash of them),
    so batches, beams and recomputation agree. No KV cache (generate recomputes)."""

    def __init__(self, vocab_size, seed=0, boost=None):
        self.vocab_size, self.seed, self.boost = vocab_size, seed, boost or {}

    def row_logits(self, row):
        digest = hashlib.blake2b(np.asarray(row, dtype=np.int64).tobytes() + bytes([self.seed]), digest_size=8)
        logits = np.random.default_rng(int.from_bytes(digest.digest(), "little")).normal(size=self.vocab_size) * 3
        for token, value in self.boost.items():
            logits[token] += value
        return logits

    def __call__(self, ids, attention_mask=None):
        return types.SimpleNamespace(data=np.stack([self.row_logits(row) for row in ids])[:, None, :])


class Recorder:
    """A torch-free processor: records the scores it is given and adds a fixed bias."""

    def __init__(self, bias):
        self.bias, self.seen = bias, []

    def __call__(self, input_ids, scores):
        self.seen.append((np.array(input_ids), np.array(scores)))
        return scores + self.bias


def test_processors_run_after_the_repetition_penalty_and_before_the_warpers(rng):
    vocab = 40
    model = RandomLogitsModel(vocab)
    bias = rng.normal(size=vocab)
    first, second = Recorder(bias), Recorder(-bias / 2)
    options = dict(temperature=0.7, top_k=9, top_p=0.9, repetition_penalty=1.3)
    out = generate(model, [[1, 2, 3]], 3, do_sample=True, seed=4, output_scores=True,
                   logits_processor=[first, second], **options)
    for step in range(3):
        ids, received = first.seen[step]
        raw = model.row_logits(ids[0])[None, :]
        penalised = process_logits(raw, input_ids=ids, repetition_penalty=1.3)
        np.testing.assert_array_equal(received, penalised)  # the penalty ran, the temperature not yet
        np.testing.assert_array_equal(second.seen[step][1], penalised + bias)  # list order
        warped = process_logits(penalised + bias - bias / 2, temperature=0.7, top_k=9, top_p=0.9)
        np.testing.assert_array_equal(out.scores[step], warped.astype(np.float32))
    greedy_recorder = Recorder(bias)
    generate(model, [[1, 2, 3]], 1, repetition_penalty=1.3, logits_processor=[greedy_recorder])
    np.testing.assert_array_equal(greedy_recorder.seen[0][1],
                                  process_logits(model.row_logits([1, 2, 3])[None], input_ids=[[1, 2, 3]],
                                                 repetition_penalty=1.3))
    beam_recorder = Recorder(0.0)
    generate(model, [[1, 2, 3]], 1, num_beams=2, logits_processor=[beam_recorder])
    logits = model.row_logits([1, 2, 3])
    log_probs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    np.testing.assert_allclose(beam_recorder.seen[0][1][0], log_probs, atol=1e-12)  # beam search: log-softmax


def test_the_placement_equals_transformers_logits_processor_list(rng):
    torch = require("torch")
    require("transformers")
    from transformers import GenerationConfig
    from transformers.generation.logits_process import LogitsProcessor
    from transformers.generation.logits_process import LogitsProcessorList as HFList
    from transformers.generation.utils import GenerationMixin

    vocab = 40
    bias = rng.normal(size=vocab)

    class TorchBias(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores + torch.as_tensor(bias, dtype=scores.dtype)

    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=9, top_p=0.9, min_p=0.02, typical_p=0.95,
                              repetition_penalty=1.3)
    stub = types.SimpleNamespace(config=types.SimpleNamespace(is_encoder_decoder=False))
    stub._merge_criteria_processor_list = functools.partial(GenerationMixin._merge_criteria_processor_list, stub)
    processors = GenerationMixin._get_logits_processor(stub, config, input_ids_seq_length=3,
                                                       logits_processor=HFList([TorchBias()]), model_kwargs={})
    assert [type(p).__name__ for p in processors] == [
        "RepetitionPenaltyLogitsProcessor", "TorchBias", "TemperatureLogitsWarper", "TopKLogitsWarper",
        "TopPLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper"]
    model = RandomLogitsModel(vocab)
    out = generate(model, [[1, 2, 3]], 1, do_sample=True, seed=0, output_scores=True, logits_processor=[Recorder(bias)],
                   temperature=0.7, top_k=9, top_p=0.9, min_p=0.02, typical_p=0.95, repetition_penalty=1.3)
    expected = processors(torch.tensor([[1, 2, 3]]), torch.tensor(model.row_logits([1, 2, 3])[None]))
    kept = np.isfinite(expected.numpy())
    np.testing.assert_array_equal(np.isfinite(out.scores[0]), kept)
    np.testing.assert_allclose(out.scores[0][kept], expected.numpy()[kept], rtol=1e-5)


@pytest.mark.parametrize("options", [{}, {"do_sample": True, "seed": 3, "top_k": 0},
                                     {"do_sample": True, "seed": 3, "temperature": 0.6, "top_p": 0.8}])
def test_an_identity_processor_changes_nothing(options):
    model = RandomLogitsModel(30, seed=1)
    plain = generate(model, [[1, 2], [3]], 6, return_logprobs=True, **options)
    hooked = generate(model, [[1, 2], [3]], 6, return_logprobs=True, logits_processor=[lambda ids, s: s], **options)
    np.testing.assert_array_equal(plain.sequences, hooked.sequences)
    np.testing.assert_array_equal(plain.logprobs, hooked.logprobs)


@pytest.mark.parametrize("options", [{}, {"do_sample": True, "seed": 5}, {"num_beams": 3, "num_return_sequences": 2},
                                     {"do_sample": True, "seed": 6, "num_return_sequences": 3, "temperature": 1.5}])
def test_generate_with_a_constraint_writes_only_matches(options):
    pattern = r"(yes|no|maybe)( [a-c]{1,4}){0,3}\."
    constraint = RegexConstraint(pattern, SMALL)
    model = RandomLogitsModel(SMALL.vocab_size, seed=2, boost={SMALL_EOS: 4.0})
    out = generate(model, [[1, 2, 3], [4]], 40, eos_token_id=SMALL_EOS, logits_processor=[constraint],
                   return_dict_in_generate=True, **options)
    for row in range(out.sequences.shape[0]):
        tokens = out.new_tokens(row)
        assert tokens[-1] == SMALL_EOS, tokens
        assert re.fullmatch(pattern, SMALL.decode(tokens[:-1]))


def test_generate_refuses_an_eos_mismatch_and_bad_processor_lists():
    model = RandomLogitsModel(SMALL.vocab_size)
    constraint = RegexConstraint("a", SMALL)
    with pytest.raises(ValueError, match=f"pass eos_token_id={SMALL_EOS}"):
        generate(model, [[1]], 2, logits_processor=[constraint])
    with pytest.raises(TypeError, match="wrap it in a list"):
        generate(model, [[1]], 2, logits_processor=constraint, eos_token_id=SMALL_EOS)
    with pytest.raises(TypeError, match=r"logits_processor\[1\] must be callable"):
        check_logits_processors([constraint, 3])
    with pytest.raises(ValueError, match="shape"):
        LogitsProcessorList([lambda ids, s: s[:, :2]])(np.zeros((1, 1), dtype=np.int64), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="removed every token of rows"):
        LogitsProcessorList([lambda ids, s: s - np.inf])(np.zeros((1, 1), dtype=np.int64), np.zeros((1, 4)))
    original = np.zeros((1, 4))

    def in_place(ids, scores):
        scores[0, 0] = -np.inf
        return scores
    LogitsProcessorList([in_place])(np.zeros((1, 1), dtype=np.int64), original)
    assert (original == 0).all()  # the caller's logits stay untouched


def test_measurement_hooks_report_costs_and_validity():
    constraint = RegexConstraint(r"[a-c]{2,6}", SMALL)
    cost = measure_mask_cost(constraint, rows=2, max_tokens=12)
    assert cost["states_visited"] >= 1 and cost["calls"] >= 1 and cost["first_visit_ms"] > 0
    model = RandomLogitsModel(SMALL.vocab_size, seed=3, boost={SMALL_EOS: 3.0})
    validity = format_validity(model, SMALL, [[1, 2], [3]], constraint, 12, do_sample=True, seed=0)
    assert validity["constrained"] == 1.0 and validity["unconstrained"] < 1.0
    assert len(validity["texts"]["constrained"]) == 2


# ---------------------------------------------------------------------------------- command line
@pytest.fixture
def tiny_run(tmp_path):
    model = GPT(GPTConfig(vocab_size=SMALL.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=16))
    return save_run(model, SMALL, tmp_path / "run")


def test_generate_and_chat_with_regex_and_json_schema(tiny_run, tmp_path, monkeypatch, capsys):
    assert cli.main(["generate", "--model", str(tiny_run), "--prompt", "Mara", "--regex", "(ab|c){1,3}x",
                     "--max-new-tokens", "12", "--seed", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()[0]
    assert printed.startswith("Mara") and re.fullmatch("(ab|c){1,3}x", printed[len("Mara"):])
    schema_file = tmp_path / "schema.json"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 22, "x"]}},
              "required": ["ok"]}
    schema_file.write_text(json.dumps(schema))
    lines = iter(["hello", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert cli.main(["chat", "--model", str(tiny_run), "--json-schema", str(schema_file), "--max-new-tokens", "30",
                     "--temperature", "1.0", "--top-p", "1.0", "--seed", "2"]) == 0
    reply = capsys.readouterr().out.strip()
    assert validate(json.loads(reply), schema), reply


@pytest.mark.parametrize("argv, words", [
    (["--regex", "a(?=b)"], "--regex: regex 'a(?=b)': lookahead"),
    (["--regex", "a", "--json-schema", "x.json"], "not allowed with argument"),
    (["--json-schema", "missing.json"], "--json-schema missing.json: missing.json does not exist"),
    (["--json-schema", "."], "is a directory"),
    (["--json-schema", "bad.json"], "not valid JSON"),
    (["--json-schema", "unsupported.json"], "keyword 'minimum'"),
])
@pytest.mark.parametrize("command", ["generate", "chat"])
def test_bad_patterns_and_schema_files_are_one_line_errors_before_the_model_loads(command, argv, words, tmp_path,
                                                                                   monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "unsupported.json").write_text('{"type": "integer", "minimum": 1}')
    try:
        code = cli.main([command, "--model", "no-such-model"] + argv)
    except SystemExit as exit_info:  # argparse's own errors (two flags that exclude each other)
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err
