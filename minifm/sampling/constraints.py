"""Structured outputs: constraints that let generate() write only text of a regular language.

    from minifm.sampling.constraints import JsonSchemaConstraint, RegexConstraint
    constraint = RegexConstraint(r"(yes|no), because [a-z ]{1,40}\\.", tokenizer)
    out = generate(model, prompts, 48, do_sample=True, logits_processor=[constraint],
                   eos_token_id=constraint.eos_token_id)
    JsonSchemaConstraint(schema, tokenizer)    # the same for a JSON Schema subset (json_schema.py)

How it works, from text to tokens:
  1. The pattern (or the schema's pattern, minifm.sampling.json_schema) becomes a minimal DFA over
     UTF-8 bytes (minifm.sampling.regex_automaton): from each state, a byte either keeps the text
     a prefix of some match or kills it.
  2. The DFA keeps only the bytes the vocabulary has as one-byte tokens (byte-level BPE has all
     256, or all but the few its training never saw) and is trimmed again. Then every state has an
     allowed token, so constrained generation can never get stuck, whatever the model prefers.
  3. Token level: from a DFA state, a token is allowed when its whole byte string walks the DFA
     without dying, i.e. the text plus the token is still a prefix of a match; the end-of-sequence
     token is allowed only in an accepting state. Special tokens are never allowed inside the text.
     The walk runs over a trie of the vocabulary's byte strings (`TokenVocabulary`, built once per
     tokenizer): all the trie's nodes of one depth take one vectorised step of the transition table,
     so a state costs one pass over the trie's nodes (~ the vocabulary's total bytes), and it is
     done lazily, the first time a state is visited, then cached with the state each token leads to.
  4. As a logits processor (transformers' convention `(input_ids, scores) -> scores`), a constraint
     sets the scores of the tokens not allowed to -inf. It follows each row's DFA state from
     input_ids incrementally: the first call remembers the prompt length (everything after it is
     constrained text) and each later call reads the one new token of every row. Rows are matched to
     the previous call's rows by their tokens, so beam search may reorder and duplicate rows. A
     call whose rows continue none of the last call's rows starts a new generation (reuse across
     generate calls, chat turns); `reset()` forgets everything explicitly.
  5. When only the end-of-sequence token is allowed (a match that cannot be extended), it is the
     only finite score: the constraint forces it. generate must stop rows at that token: pass
     `eos_token_id=constraint.eos_token_id` (the tokenizer's eos by default; generate refuses a
     mismatch). After it, and after a token the constraint did not allow (beam search's dead slots,
     another processor forcing a token), only the end-of-sequence token is allowed.

The renormalised distribution over the allowed tokens is exactly the model's distribution
restricted to them: p(token | allowed) = p(token) / p(allowed) (the tests check it).

Limits: the text is valid when the row ends with the eos token; a row cut by max_new_tokens is
only a prefix of a match. The constraint fixes the bytes, not the tokenisation: a token path may
differ from what the tokenizer would make of the same text (as in every token-level constraint).
Tokenizers must be byte-level (minifm's BPETokenizer, a byte-level PretrainedTokenizer); WordPiece
is refused. The measurement helpers at the end (`measure_mask_cost`, `format_validity`) are the
hooks of the structured-outputs experiment.
"""
from __future__ import annotations

import time
import weakref

import numpy as np

from minifm.sampling.generate import generate
from minifm.sampling.json_schema import schema_to_regex
from minifm.sampling.processors import sample
from minifm.sampling.regex_automaton import DEAD, ByteDFA, compile_regex

FINISHED = -2  # a row state: the eos token was written after a full match
REFUSED = -3   # a row state: a token the constraint did not allow was written


# ------------------------------------------------------------------------------ vocabulary
def token_byte_strings(tokenizer) -> list[bytes | None]:
    """Each id's bytes in decoded text, None for special tokens (never part of constrained text)."""
    if hasattr(tokenizer, "token_bytes"):
        token_bytes = tokenizer.token_bytes  # PretrainedTokenizer (byte-level)
    elif hasattr(tokenizer, "id_to_bytes"):
        token_bytes = tokenizer.id_to_bytes  # minifm's BPETokenizer
    else:
        raise TypeError(f"a constraint needs a byte-level tokenizer with token_bytes(id) or id_to_bytes(id), "
                        f"got {type(tokenizer).__name__}")
    special = set(getattr(tokenizer, "special_tokens", {}).values())
    return [None if token_id in special else token_bytes(token_id) for token_id in range(len(tokenizer))]


class TokenVocabulary:
    """The vocabulary's byte strings as a trie whose nodes are numbered depth by depth.

    Node 0 is the root (the empty string); every other node is one byte appended to its parent
    (`parent`, `byte`); the nodes of depth d are `depth_start[d]:depth_start[d + 1]`, so one depth
    is one vectorised step. `token_node[id]` is the node spelling the token (`is_text[id]` False for
    special and empty tokens). `single_byte[b]` tells whether byte b is a token on its own.
    """

    def __init__(self, byte_strings: list[bytes | None]):
        self.size = len(byte_strings)
        children: dict[int, int] = {}  # (node << 8) | byte -> child node
        parents, node_bytes, depths = [0], [0], [0]
        token_node = np.zeros(self.size, dtype=np.int64)
        self.is_text = np.zeros(self.size, dtype=bool)
        self.single_byte = np.zeros(256, dtype=bool)
        for token_id, data in enumerate(byte_strings):
            if not data:
                continue
            node = 0
            for byte in data:  # walk down the trie, adding the nodes that are missing
                key = (node << 8) | byte
                child = children.get(key)
                if child is None:
                    child = len(parents)
                    children[key] = child
                    parents.append(node)
                    node_bytes.append(byte)
                    depths.append(depths[node] + 1)
                node = child
            token_node[token_id] = node
            self.is_text[token_id] = True
            if len(data) == 1:
                self.single_byte[data[0]] = True
        # renumber the nodes by depth (a parent is always shallower, so it keeps coming first)
        depths = np.asarray(depths)
        order = np.argsort(depths, kind="stable")
        new_number = np.empty_like(order)
        new_number[order] = np.arange(order.size)
        self.parent = new_number[np.asarray(parents)[order]]
        self.byte = np.asarray(node_bytes, dtype=np.int64)[order]
        self.token_node = new_number[token_node]
        self.max_depth = int(depths.max())
        self.depth_start = np.searchsorted(depths[order], np.arange(self.max_depth + 2))
        self.num_nodes = order.size


_VOCABULARIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def vocabulary_of(tokenizer) -> TokenVocabulary:
    """The TokenVocabulary of a tokenizer, built once per tokenizer object (SmolLM2: ~0.3 s)."""
    try:
        return _VOCABULARIES[tokenizer]
    except (KeyError, TypeError):
        pass
    vocabulary = TokenVocabulary(token_byte_strings(tokenizer))
    try:
        _VOCABULARIES[tokenizer] = vocabulary
    except TypeError:  # an object that cannot be weakly referenced: no cache
        pass
    return vocabulary


# ------------------------------------------------------------------------------ token automaton
class TokenAutomaton:
    """A byte DFA lifted to a vocabulary: per DFA state, the allowed tokens and the state each leads to."""

    def __init__(self, dfa: ByteDFA, vocabulary: TokenVocabulary, eos_token_id: int):
        self.vocabulary = vocabulary
        self.eos_token_id = int(eos_token_id)
        self.dfa = dfa.restricted_to(vocabulary.single_byte)
        if self.dfa.is_empty:
            missing = np.flatnonzero(~vocabulary.single_byte)
            hint = (f" (the vocabulary has no token for the bytes {[hex(b) for b in missing[:8]]}"
                    f"{'...' if missing.size > 8 else ''})") if missing.size else ""
            raise ValueError(f"the pattern {dfa.source!r:.80} matches no text this tokenizer can write{hint}")
        self.dead = self.dfa.num_states  # an extra row: DEAD moves go there and stay
        dtype = np.int16 if self.dead < np.iinfo(np.int16).max else np.int32
        table = np.full((self.dead + 1, 256), self.dead, dtype=dtype)
        table[:self.dead] = np.where(self.dfa.transitions == DEAD, self.dead, self.dfa.transitions)
        self.table = table
        self._next: dict[int, np.ndarray] = {}     # state -> (V,) state after each token (dead: refused)
        self._allowed: dict[int, np.ndarray] = {}  # state -> (V,) bool
        self._penalty: dict[int, np.ndarray] = {}  # state -> (V,) float32: 0 allowed, -inf not
        self.visit_seconds: list[float] = []       # the cost of each first visit

    @property
    def start(self) -> int:
        return self.dfa.start

    def _visit(self, state: int) -> None:
        """Walk every token from `state` at once, depth by depth down the vocabulary's trie."""
        started = time.perf_counter()
        vocabulary = self.vocabulary
        node_states = np.full(vocabulary.num_nodes, self.dead, dtype=self.table.dtype)
        node_states[0] = state
        for depth in range(1, vocabulary.max_depth + 1):
            begin, end = vocabulary.depth_start[depth], vocabulary.depth_start[depth + 1]
            parents = node_states[vocabulary.parent[begin:end]]
            node_states[begin:end] = self.table[parents, vocabulary.byte[begin:end]]
            if (node_states[begin:end] == self.dead).all():
                break  # every deeper node extends a dead one: already dead
        following = node_states[vocabulary.token_node]  # (V,)
        following[~vocabulary.is_text] = self.dead      # special tokens never enter the text
        allowed = following != self.dead
        allowed[self.eos_token_id] = bool(self.dfa.accepting[state])  # eos only after a full match
        self._next[state] = following
        self._allowed[state] = allowed
        self._penalty[state] = np.where(allowed, 0.0, -np.inf).astype(np.float32)
        self.visit_seconds.append(time.perf_counter() - started)

    def allowed(self, state: int) -> np.ndarray:
        """Bool (V,): the tokens allowed from DFA state `state` (computed on the first visit, then cached)."""
        if state not in self._allowed:
            self._visit(state)
        return self._allowed[state]

    def penalty(self, state: int) -> np.ndarray:
        """Float32 (V,): 0 for the allowed tokens, -inf for the others (added to the scores: one pass,
        several times faster than selecting with the boolean mask)."""
        if state not in self._penalty:
            self._visit(state)
        return self._penalty[state]

    def next_state(self, state: int, token_id: int) -> int:
        """The DFA state after `token_id` from `state`, or DEAD when the token is not allowed (eos included)."""
        if state not in self._next:
            self._visit(state)
        following = int(self._next[state][token_id])
        return DEAD if following == self.dead or token_id == self.eos_token_id else following

    @property
    def states_visited(self) -> int:
        return len(self._allowed)


def _eos_of(tokenizer, eos_token_id) -> int:
    if eos_token_id is None:
        eos_token_id = getattr(tokenizer, "eos_token_id", None)
    if eos_token_id is None:
        eos_token_id = getattr(tokenizer, "special_tokens", {}).get("<|endoftext|>")
    if eos_token_id is None:
        raise ValueError(f"the tokenizer ({type(tokenizer).__name__}) has no eos token: pass eos_token_id= "
                         f"(the token that ends the constrained text)")
    if isinstance(eos_token_id, bool) or not isinstance(eos_token_id, (int, np.integer)) \
            or not 0 <= eos_token_id < len(tokenizer):
        raise ValueError(f"eos_token_id must be a token id in [0, {len(tokenizer)}), got {eos_token_id!r}")
    return int(eos_token_id)


# ------------------------------------------------------------------------------ logits processors
class TokenConstraint:
    """A logits processor allowing only the tokens that keep the text inside a DFA's language
    (see the module docstring). RegexConstraint and JsonSchemaConstraint build the DFA."""

    def __init__(self, dfa: ByteDFA, tokenizer, eos_token_id: int | None = None):
        if not isinstance(dfa, ByteDFA):
            raise TypeError(f"dfa must be a ByteDFA (minifm.sampling.regex_automaton.compile_regex), "
                            f"got {type(dfa).__name__}")
        self.tokenizer = tokenizer
        self.eos_token_id = _eos_of(tokenizer, eos_token_id)
        self.automaton = TokenAutomaton(dfa, vocabulary_of(tokenizer), self.eos_token_id)
        self.reset()

    def reset(self) -> None:
        """Forget the rows followed so far: the next call starts a new generation."""
        self.prompt_length: int | None = None
        self.states: list[int] = []  # each row's state after the last call (DFA state, FINISHED or REFUSED)
        self._previous: dict[bytes, int] = {}  # a row's tokens (as bytes) -> its state
        self._previous_length = -1
        self._only_eos = np.full(self.automaton.vocabulary.size, -np.inf, dtype=np.float32)
        self._only_eos[self.eos_token_id] = 0.0

    def matches(self, text: str) -> bool:
        """Whether `text` is a full match of the constraint's language (the byte DFA's answer)."""
        return self.automaton.dfa.fullmatch(text)

    def _step(self, state: int, token_id: int) -> int:
        """A row's state after one more token."""
        if state in (FINISHED, REFUSED):
            return state
        if token_id == self.eos_token_id:
            return FINISHED if self.automaton.dfa.accepting[state] else REFUSED
        following = self.automaton.next_state(state, token_id)
        return REFUSED if following == DEAD else following

    def _row_states(self, input_ids: np.ndarray) -> list[int]:
        """Every row's state, read incrementally: a row continuing a row of the last call takes one step."""
        rows, length = input_ids.shape
        states = None
        if length == self._previous_length + 1:
            keys = [input_ids[row, :-1].tobytes() for row in range(rows)]
            known = [key in self._previous for key in keys]
            if all(known):
                states = [self._step(self._previous[key], int(input_ids[row, -1])) for row, key in enumerate(keys)]
            elif any(known):
                unknown = [row for row in range(rows) if not known[row]]
                raise ValueError(f"input_ids rows {unknown[:8]} continue none of the rows of the previous call while "
                                 f"the others do: one constraint object follows one generation at a time "
                                 f"(call reset() between generations)")
        if states is None:  # a new generation: everything so far is the prompt
            self.prompt_length = length
            states = [self.automaton.start] * rows
        self._previous = {input_ids[row].tobytes(): state for row, state in enumerate(states)}
        self._previous_length = length
        self.states = states
        return states

    def allowed_tokens(self, state: int) -> np.ndarray:
        """Bool (V,): the tokens allowed in a row state (only eos after the end or a refused token)."""
        if state >= 0:
            return self.automaton.allowed(state)
        only_eos = np.zeros(self.automaton.vocabulary.size, dtype=bool)
        only_eos[self.eos_token_id] = True
        return only_eos

    def __call__(self, input_ids, scores) -> np.ndarray:
        """Scores with the tokens not allowed set to -inf (a new array)."""
        input_ids, scores = np.asarray(input_ids), np.asarray(scores)
        if input_ids.ndim != 2 or input_ids.dtype.kind not in "iu":
            raise ValueError(f"input_ids must be an integer array (batch, length), got shape {input_ids.shape} "
                             f"dtype {input_ids.dtype}")
        if scores.ndim != 2 or scores.shape[0] != input_ids.shape[0] or scores.dtype.kind != "f":
            raise ValueError(f"scores must be a float array (batch={input_ids.shape[0]}, vocab), got shape "
                             f"{scores.shape} dtype {scores.dtype}")
        vocabulary_size = self.automaton.vocabulary.size
        if scores.shape[1] < vocabulary_size:
            raise ValueError(f"scores have {scores.shape[1]} columns, fewer than the tokenizer's {vocabulary_size} "
                             f"tokens: the constraint needs the model and the tokenizer to agree")
        states = self._row_states(input_ids)
        out = np.empty_like(scores)  # (N, V_model)
        out[:, vocabulary_size:] = -np.inf  # ids beyond the tokenizer's (a padded model vocabulary)
        for row, state in enumerate(states):  # score + 0 for an allowed token, score + -inf for the others
            penalty = self.automaton.penalty(state) if state >= 0 else self._only_eos
            np.add(scores[row, :vocabulary_size], penalty, out=out[row, :vocabulary_size])
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.automaton.dfa.source!r:.60}, {self.automaton.dfa.num_states} DFA states, "
                f"eos_token_id={self.eos_token_id})")


class RegexConstraint(TokenConstraint):
    """Only text that fully matches `pattern` (regex_automaton's subset of Python's syntax), then eos."""

    def __init__(self, pattern: str, tokenizer, eos_token_id: int | None = None):
        self.pattern = pattern
        super().__init__(compile_regex(pattern), tokenizer, eos_token_id)


class JsonSchemaConstraint(TokenConstraint):
    """Only JSON text valid against `schema` (json_schema's subset and spelling), then eos."""

    def __init__(self, schema: dict, tokenizer, eos_token_id: int | None = None):
        self.schema = schema
        self.pattern = schema_to_regex(schema)
        super().__init__(compile_regex(self.pattern), tokenizer, eos_token_id)


# ------------------------------------------------------------------------------ measurements
def measure_mask_cost(constraint: TokenConstraint, rows: int = 4, max_tokens: int = 64, seed: int = 0,
                      logit_scale: float = 3.0) -> dict:
    """Drive `constraint` like generate does, with random logits (normal * logit_scale), and time it.

    Returns the median time per row (one token's mask) of the calls that visit no new state
    ("cached_us"), the median time of a first visit of a DFA state ("first_visit_ms", from the
    automaton's own timer), the number of states visited and of calls. Starts from reset().
    """
    rng = np.random.default_rng(seed)
    constraint.reset()
    vocabulary_size = constraint.automaton.vocabulary.size
    visits_before = len(constraint.automaton.visit_seconds)
    ids = np.zeros((rows, 1), dtype=np.int64)  # a one-token "prompt"
    cached, calls = [], 0
    for _ in range(max_tokens):
        logits = rng.normal(size=(rows, vocabulary_size)) * logit_scale
        states_before = constraint.automaton.states_visited
        started = time.perf_counter()
        scores = constraint(ids, logits)
        elapsed = time.perf_counter() - started
        calls += 1
        if constraint.automaton.states_visited == states_before:
            cached.append(elapsed / rows)
        if all(state < 0 for state in constraint.states):
            break
        ids = np.concatenate([ids, sample(scores, rng)[:, None]], axis=1)
    first_visits = constraint.automaton.visit_seconds[visits_before:]
    return {"cached_us": float(np.median(cached)) * 1e6 if cached else float("nan"),
            "first_visit_ms": float(np.median(first_visits)) * 1e3 if first_visits else float("nan"),
            "states_visited": constraint.automaton.states_visited, "calls": calls}


def format_validity(model, tokenizer, prompts: list[list[int]], constraint: TokenConstraint, max_new_tokens: int,
                    is_valid=None, **generate_options) -> dict:
    """Generate for each prompt (token ids) without and with `constraint`; the share of outputs that
    are valid: `is_valid(text)` (default: the constraint's own full match; pass, say, a JSON parser
    to count any valid JSON). Returns {"unconstrained": share, "constrained": share, "texts": {...}}."""
    is_valid = constraint.matches if is_valid is None else is_valid
    result: dict = {"texts": {}}
    for label, processors in (("unconstrained", None), ("constrained", [constraint])):
        constraint.reset()
        out = generate(model, prompts, max_new_tokens, logits_processor=processors,
                       eos_token_id=constraint.eos_token_id, return_dict_in_generate=True, **generate_options)
        texts = []
        for row in range(out.sequences.shape[0]):
            tokens = [token for token in out.new_tokens(row) if token != constraint.eos_token_id]
            texts.append(tokenizer.decode(tokens))
        result["texts"][label] = texts
        result[label] = float(np.mean([bool(is_valid(text)) for text in texts])) if texts else float("nan")
    return result


__all__ = ["JsonSchemaConstraint", "RegexConstraint", "TokenAutomaton", "TokenConstraint", "TokenVocabulary",
           "format_validity", "measure_mask_cost", "token_byte_strings", "vocabulary_of"]
