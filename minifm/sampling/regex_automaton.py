"""Regular expressions compiled to a deterministic automaton over UTF-8 bytes (for constrained decoding).

    dfa = compile_regex(r"[a-z]+@[a-z]+\\.(com|org)")
    dfa.fullmatch("ana@site.org")       -> True: the answer re.fullmatch gives on the same text
    dfa.walk(dfa.start, b"ana@")         -> a live state (DEAD = -1 when no text of the language starts so)
    dfa.accepting[state]                 -> True where the text read so far is a full match

Why bytes: a byte-level BPE token is a string of bytes, and it may end in the middle of a
multi-byte UTF-8 character (a 3-byte CJK character is often two tokens). An automaton over bytes
reads any token's bytes one at a time, whole characters or not; an automaton over characters could
not. So every character class is turned into the UTF-8 byte sequences of its code points, and the
automaton accepts exactly the UTF-8 encodings of the strings the pattern fully matches.

The pipeline is the textbook one, four steps:
  1. parse the pattern into a small syntax tree (`parse_regex`): character sets (as code-point
     ranges), sequences, alternatives and counted repeats;
  2. turn each character set into byte-range sequences (`utf8_sequences`, the UTF-8 range split
     of RE2 and Rust's regex crate): [a-é] becomes [61-7F] | [C2][80-BF] | [C3][80-A9], say;
  3. Thompson's construction: every tree node becomes an NFA fragment with one entry and one exit,
     glued with epsilon moves (`build_nfa`);
  4. the subset construction (Rabin-Scott): a DFA state is the set of NFA states reachable on the
     bytes read so far; then the states that cannot reach a match are removed ("trim": every state
     left is *live*) and equivalent states are merged (Moore's partition refinement), so the DFA is
     the minimal one and a byte either keeps the text a prefix of a match or kills it.

Semantics: anchored full match, like re.fullmatch(pattern, text) on a str with no flags. The
supported syntax is a practical subset of Python's:
  * literals; escapes \\n \\t \\r \\f \\v \\a \\0 \\xHH \\uHHHH \\UHHHHHHHH \\N{NAME} and any escaped
    punctuation; '.' (any character but a newline);
  * classes [abc] [a-z] [^...], with \\d \\w \\s \\D \\W \\S inside or outside (Unicode, as Python:
    \\d is str.isdecimal, \\w is str.isalnum or '_', \\s is str.isspace);
  * groups (...) (?:...) (?P<name>...), alternation |, quantifiers * + ? {m} {m,} {,n} {m,n}, lazy
    forms (*? ...: the same language under full-match semantics); '^' first and '$' last are
    accepted and ignored (the match is anchored anyway).
Refused with a RegexError (a ValueError) naming the position: backreferences, lookahead and
lookbehind, atomic groups and possessive quantifiers, \\b \\B \\A \\Z, '^'/'$' elsewhere, inline
flags, conditionals. Simplifications: repeats are limited to 1000 ({m,n} copies the group), the
NFA to 200 000 states and the DFA to 20 000; lone surrogate code points (U+D800-U+DFFF) have no
UTF-8 form, so a class never produces them (re would match them in a str).
"""
from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

import numpy as np

MAX_CODE_POINT = 0x10FFFF
MAX_REPEAT = 1000
MAX_NFA_STATES = 200_000
MAX_DFA_STATES = 20_000
DEAD = -1  # the "no transition" entry of a transition table: the text can no longer match


class RegexError(ValueError):
    """A pattern outside the supported subset (or malformed): the message names the position."""

    def __init__(self, message: str, pattern: str, position: int):
        self.pattern, self.position = pattern, position
        super().__init__(f"regex {pattern!r}: {message} at position {position}")


# ------------------------------------------------------------------------------ code-point sets
def merge_ranges(ranges) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint, non-adjacent (low, high) code-point ranges covering the same code points."""
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return tuple((low, high) for low, high in merged)


def complement(ranges) -> tuple[tuple[int, int], ...]:
    """The code points 0..U+10FFFF not in `ranges`."""
    result, next_free = [], 0
    for low, high in merge_ranges(ranges):
        if low > next_free:
            result.append((next_free, low - 1))
        next_free = high + 1
    if next_free <= MAX_CODE_POINT:
        result.append((next_free, MAX_CODE_POINT))
    return tuple(result)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


_CLASS_PREDICATES = {"d": str.isdecimal, "w": _is_word, "s": str.isspace}


@functools.lru_cache(maxsize=None)
def unicode_class(letter: str) -> tuple[tuple[int, int], ...]:
    """The code points of \\d, \\w or \\s as Python's re sees them in a str (~0.3 s the first time)."""
    predicate = _CLASS_PREDICATES[letter]
    ranges, run_start = [], None
    for code_point in range(MAX_CODE_POINT + 2):  # one past the end closes the last run
        inside = code_point <= MAX_CODE_POINT and predicate(chr(code_point))
        if inside and run_start is None:
            run_start = code_point
        elif not inside and run_start is not None:
            ranges.append((run_start, code_point - 1))
            run_start = None
    return tuple(ranges)


def class_escape(letter: str) -> tuple[tuple[int, int], ...]:
    """\\d \\w \\s and their complements \\D \\W \\S as code-point ranges."""
    ranges = unicode_class(letter.lower())
    return complement(ranges) if letter.isupper() else ranges


ANY_BUT_NEWLINE = complement([(0x0A, 0x0A)])


# ------------------------------------------------------------------------------ syntax tree
@dataclass(frozen=True)
class CharSet:
    """One character from a set of code points (sorted disjoint ranges)."""
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Sequence:
    """The items one after the other (no items: the empty string)."""
    items: tuple


@dataclass(frozen=True)
class Choice:
    """Any one of the options (alternation a|b)."""
    options: tuple


@dataclass(frozen=True)
class Repeat:
    """`item` repeated low..high times (high None: unbounded)."""
    item: object
    low: int
    high: int | None


ANCHOR = object()  # '^' at the start or '$' at the end: true anyway under full-match semantics
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_QUANTIFIERS = {"*": (0, None), "+": (1, None), "?": (0, 1)}
_HEX_DIGITS = "0123456789abcdefABCDEF"
_OCTAL_DIGITS = "01234567"


def _literal(char: str) -> CharSet:
    return CharSet(((ord(char), ord(char)),))


class _Parser:
    """Recursive descent over the pattern; `position` is the index of the next character."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.position = 0

    def error(self, message: str, position: int | None = None) -> RegexError:
        return RegexError(message, self.pattern, self.position if position is None else position)

    def peek(self, offset: int = 0) -> str | None:
        index = self.position + offset
        return self.pattern[index] if index < len(self.pattern) else None

    # choice := sequence ('|' sequence)*
    def parse(self):
        node = self.parse_choice()
        if self.position < len(self.pattern):  # parse_choice stops early only at a ')'
            raise self.error("unbalanced parenthesis ')'")
        return node

    def parse_choice(self):
        options = [self.parse_sequence()]
        while self.peek() == "|":
            self.position += 1
            options.append(self.parse_sequence())
        return options[0] if len(options) == 1 else Choice(tuple(options))

    # sequence := (atom quantifier*)*
    def parse_sequence(self):
        items = []
        while self.peek() not in (None, "|", ")"):
            atom = self.parse_quantifiers(self.parse_atom())
            if atom is not ANCHOR:
                items.append(atom)
        return items[0] if len(items) == 1 else Sequence(tuple(items))

    def parse_atom(self):
        char = self.peek()
        if char == "(":
            return self.parse_group()
        if char == "[":
            return self.parse_class()
        if char == ".":
            self.position += 1
            return CharSet(ANY_BUT_NEWLINE)
        if char == "^":
            if self.position != 0:
                raise self.error("'^' is supported only as the first character (the match is anchored anyway)")
            self.position += 1
            return ANCHOR
        if char == "$":
            if self.position != len(self.pattern) - 1:
                raise self.error("'$' is supported only as the last character (the match is anchored anyway)")
            self.position += 1
            return ANCHOR
        if char == "\\":
            value = self.parse_escape(in_class=False)
            return CharSet(((value, value),)) if isinstance(value, int) else CharSet(value)
        if char in _QUANTIFIERS or (char == "{" and self.counted_quantifier() is not None):
            raise self.error("nothing to repeat")
        self.position += 1
        return _literal(char)

    def parse_group(self):
        opened_at = self.position
        self.position += 1
        rest = self.pattern[self.position:]
        if rest.startswith("?"):
            if rest.startswith("?:"):
                self.position += 2
            elif rest.startswith("?P<"):
                closing = self.pattern.find(">", self.position)
                name = self.pattern[self.position + 3:closing] if closing >= 0 else ""
                if not name.isidentifier():
                    raise self.error(f"bad group name {name!r}", opened_at)
                self.position = closing + 1
            elif rest.startswith(("?=", "?!")):
                raise self.error("lookahead (?=...) / (?!...) is not supported", opened_at)
            elif rest.startswith(("?<=", "?<!")):
                raise self.error("lookbehind (?<=...) / (?<!...) is not supported", opened_at)
            elif rest.startswith("?P="):
                raise self.error("backreferences (?P=name) are not supported", opened_at)
            elif rest.startswith("?>"):
                raise self.error("atomic groups (?>...) are not supported", opened_at)
            elif rest.startswith("?("):
                raise self.error("conditional groups (?(...)...) are not supported", opened_at)
            else:
                raise self.error("inline flags and other (?...) extensions are not supported", opened_at)
        inner = self.parse_choice()
        if self.peek() != ")":
            raise self.error("missing ')': the group opened here is not closed", opened_at)
        self.position += 1
        return inner

    def counted_quantifier(self):
        """At a '{': ((low, high), length) for {m} {m,} {,n} {m,n} {,}, or None when the brace is a
        literal (as in Python: "a{", "a{x}" and "a{}" match a literal brace)."""
        index = self.position + 1
        low_digits = ""
        while index < len(self.pattern) and self.pattern[index].isdigit() and self.pattern[index].isascii():
            low_digits += self.pattern[index]
            index += 1
        if index < len(self.pattern) and self.pattern[index] == ",":
            index += 1
            high_digits = ""
            while index < len(self.pattern) and self.pattern[index].isdigit() and self.pattern[index].isascii():
                high_digits += self.pattern[index]
                index += 1
        else:
            high_digits = low_digits
            if not low_digits:
                return None  # "{}" or "{x": a literal brace
        if index >= len(self.pattern) or self.pattern[index] != "}":
            return None
        low = int(low_digits) if low_digits else 0
        high = int(high_digits) if high_digits else None
        return (low, high), index + 1 - self.position

    def parse_quantifiers(self, atom):
        quantified = False
        while True:
            char = self.peek()
            if char in _QUANTIFIERS:
                (low, high), length = _QUANTIFIERS[char], 1
            elif char == "{" and self.counted_quantifier() is not None:
                (low, high), length = self.counted_quantifier()
            else:
                return atom
            if atom is ANCHOR:
                raise self.error("nothing to repeat")
            if quantified:
                raise self.error("multiple repeat")
            if high is not None and high < low:
                raise self.error("min repeat greater than max repeat")
            if max(low, high or 0) > MAX_REPEAT:
                raise self.error(f"repeat counts above {MAX_REPEAT} are not supported")
            self.position += length
            if self.peek() == "?":
                self.position += 1  # lazy: matches the same full strings
            elif self.peek() == "+":
                raise self.error("possessive quantifiers (*+, ++, ?+, {m,n}+) are not supported")
            atom = Repeat(atom, low, high)
            quantified = True

    def parse_escape(self, in_class: bool):
        """After a backslash: a code point (int) or a class (tuple of ranges)."""
        start = self.position
        self.position += 1
        char = self.peek()
        if char is None:
            raise self.error("the pattern ends with a lone backslash", start)
        self.position += 1
        if char in "dDwWsS":
            return class_escape(char)
        if char in _SIMPLE_ESCAPES:
            return ord(_SIMPLE_ESCAPES[char])
        if char == "b" and in_class:
            return 0x08  # backspace, as in Python
        if char in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[char]
            digits = self.pattern[self.position:self.position + width]
            if len(digits) != width or any(d not in _HEX_DIGITS for d in digits):
                raise self.error(f"bad escape \\{char}: needs {width} hex digits", start)
            self.position += width
            value = int(digits, 16)
            if value > MAX_CODE_POINT:
                raise self.error(f"bad escape \\{char}{digits}: beyond U+10FFFF", start)
            return value
        if char == "N":
            closing = self.pattern.find("}", self.position)
            if self.peek() != "{" or closing < 0:
                raise self.error("bad escape \\N: needs {NAME}", start)
            name = self.pattern[self.position + 1:closing]
            try:
                value = ord(unicodedata.lookup(name))
            except KeyError:
                raise self.error(f"undefined character name {name!r}", start) from None
            self.position = closing + 1
            return value
        if char == "0" or (in_class and char in _OCTAL_DIGITS):
            digits = char
            while len(digits) < 3 and self.peek() is not None and self.peek() in _OCTAL_DIGITS:
                digits += self.peek()
                self.position += 1
            if int(digits, 8) > 0o377:
                raise self.error(f"octal escape \\{digits} outside the range 0-0o377", start)
            return int(digits, 8)
        if char.isdigit() and char.isascii():
            raise self.error(f"backreferences (\\{char}) are not supported", start)
        if char in "bBAZ":
            raise self.error(f"anchors and word boundaries (\\{char}) are not supported", start)
        if char.isascii() and char.isalnum():
            raise self.error(f"bad escape \\{char}", start)
        return ord(char)  # an escaped punctuation (or non-ASCII) character stands for itself

    def class_item(self):
        """One member of a [...] class: a code point (int) or a class escape (tuple of ranges)."""
        if self.peek() == "\\":
            return self.parse_escape(in_class=True)
        char = self.peek()
        self.position += 1
        return ord(char)

    def parse_class(self):
        opened_at = self.position
        self.position += 1
        negate = self.peek() == "^"
        if negate:
            self.position += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            char = self.peek()
            if char is None:
                raise self.error("unterminated character set", opened_at)
            if char == "]" and not first:  # a ']' right after '[' or '[^' is a literal
                self.position += 1
                break
            first = False
            item_at = self.position
            low = self.class_item()
            if self.peek() == "-" and self.peek(1) not in ("]", None):
                self.position += 1  # a range low-high
                high = self.class_item()
                if not isinstance(low, int) or not isinstance(high, int) or high < low:
                    raise self.error(f"bad character range {self.pattern[item_at:self.position]}", item_at)
                ranges.append((low, high))
            elif isinstance(low, int):
                ranges.append((low, low))
            else:
                ranges.extend(low)
        merged = merge_ranges(ranges)
        return CharSet(complement(merged) if negate else merged)


def parse_regex(pattern: str):
    """The syntax tree of `pattern` (CharSet / Sequence / Choice / Repeat), or RegexError."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    return _Parser(pattern).parse()


# ------------------------------------------------------------------------------ UTF-8 byte ranges
_LENGTH_LIMITS = (0x7F, 0x7FF, 0xFFFF)  # the last code point of 1-, 2- and 3-byte UTF-8


def _split_once(low: int, high: int):
    """Split [low, high] in two where its UTF-8 forms stop being a product of byte ranges, or None.

    Splits (i) around the surrogates, (ii) where the encoded length changes, (iii) where the low
    i continuation bytes do not run over their full span 80-BF for both ends (RE2's rule)."""
    if low <= 0xDFFF and high >= 0xD800:
        return [part for part in ((low, 0xD7FF), (0xE000, high)) if part[0] <= part[1]]
    for limit in _LENGTH_LIMITS:
        if low <= limit < high:
            return [(low, limit), (limit + 1, high)]
    length = len(chr(low).encode("utf-8"))
    for i in range(1, length):
        mask = (1 << (6 * i)) - 1  # the bits carried by the last i continuation bytes
        if low & ~mask != high & ~mask:
            if low & mask != 0:
                return [(low, low | mask), ((low | mask) + 1, high)]
            if high & mask != mask:
                return [(low, (high & ~mask) - 1), (high & ~mask, high)]
    return None


def utf8_sequences(low: int, high: int) -> list[tuple[tuple[int, int], ...]]:
    """Byte-range sequences whose products are exactly the UTF-8 encodings of code points low..high
    (surrogates left out): utf8_sequences(0x61, 0xE9) -> [((0x61, 0x7F),), ((0xC2, 0xC2), (0x80, 0xBF)),
    ((0xC3, 0xC3), (0x80, 0xA9))]."""
    sequences, pending = [], [(low, high)]
    while pending:
        part_low, part_high = pending.pop()
        parts = _split_once(part_low, part_high)
        if parts is not None:
            pending.extend(parts)
            continue
        first, last = chr(part_low).encode("utf-8"), chr(part_high).encode("utf-8")
        sequences.append(tuple(zip(first, last)))
    return sorted(sequences)


# ------------------------------------------------------------------------------ Thompson NFA
class NFA:
    """States with epsilon moves and byte-range edges (low, high, target); built by `build_nfa`."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.epsilon: list[list[int]] = []
        self.edges: list[list[tuple[int, int, int]]] = []
        self.start = self.accept = 0

    def add_state(self) -> int:
        if len(self.epsilon) >= MAX_NFA_STATES:
            raise RegexError(f"the automaton needs more than {MAX_NFA_STATES} NFA states (counted repeats "
                             f"{{m,n}} copy their group: make them smaller)", self.pattern, 0)
        self.epsilon.append([])
        self.edges.append([])
        return len(self.epsilon) - 1

    def fragment(self, node) -> tuple[int, int]:
        """Thompson's construction: (entry, exit) states of a fragment matching `node`."""
        if isinstance(node, CharSet):
            entry, exit_state = self.add_state(), self.add_state()
            shared: dict[tuple[int, int, int], int] = {}  # one state per common byte-range prefix
            for low, high in node.ranges:
                for sequence in utf8_sequences(low, high):
                    current = entry
                    for index, (byte_low, byte_high) in enumerate(sequence):
                        if index == len(sequence) - 1:
                            self.edges[current].append((byte_low, byte_high, exit_state))
                            continue
                        key = (current, byte_low, byte_high)
                        if key not in shared:
                            shared[key] = self.add_state()
                            self.edges[current].append((byte_low, byte_high, shared[key]))
                        current = shared[key]
            return entry, exit_state
        if isinstance(node, Sequence):
            entry = current = self.add_state()
            for item in node.items:  # chain: each fragment's exit moves to the next one's entry
                item_entry, item_exit = self.fragment(item)
                self.epsilon[current].append(item_entry)
                current = item_exit
            return entry, current
        if isinstance(node, Choice):
            entry, exit_state = self.add_state(), self.add_state()
            for option in node.options:  # a fork into every option, every option joins the exit
                option_entry, option_exit = self.fragment(option)
                self.epsilon[entry].append(option_entry)
                self.epsilon[option_exit].append(exit_state)
            return entry, exit_state
        if isinstance(node, Repeat):
            entry = current = self.add_state()
            for _ in range(node.low):  # the required copies, chained
                item_entry, item_exit = self.fragment(node.item)
                self.epsilon[current].append(item_entry)
                current = item_exit
            if node.high is None:  # a loop: the hub enters the item, the item returns to the hub
                hub = self.add_state()
                self.epsilon[current].append(hub)
                item_entry, item_exit = self.fragment(node.item)
                self.epsilon[hub].append(item_entry)
                self.epsilon[item_exit].append(hub)
                return entry, hub
            exit_state = self.add_state()
            for _ in range(node.high - node.low):  # optional copies: before each, a way out
                self.epsilon[current].append(exit_state)
                item_entry, item_exit = self.fragment(node.item)
                self.epsilon[current].append(item_entry)
                current = item_exit
            self.epsilon[current].append(exit_state)
            return entry, exit_state
        raise TypeError(f"unknown syntax node {node!r}")

    def closure(self, states) -> frozenset:
        """The states reachable from `states` by epsilon moves alone (the states themselves included)."""
        seen = set(states)
        stack = list(seen)
        while stack:
            for target in self.epsilon[stack.pop()]:
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return frozenset(seen)


def build_nfa(pattern: str) -> NFA:
    """The Thompson NFA of `pattern` (start state, one accepting state)."""
    nfa = NFA(pattern)
    nfa.start, nfa.accept = nfa.fragment(parse_regex(pattern))
    return nfa


# ------------------------------------------------------------------------------ DFA
def subset_construction(nfa: NFA) -> tuple[np.ndarray, np.ndarray]:
    """Rabin-Scott: (transitions (S, 256) int32 with DEAD for no move, accepting (S,) bool); state 0
    is the epsilon closure of the NFA's start, each DFA state one set of NFA states."""
    start = nfa.closure([nfa.start])
    sets, index = [start], {start: 0}
    rows, accepting = [], []
    while len(rows) < len(sets):
        current = sets[len(rows)]
        moves: list[list[int]] = [[] for _ in range(256)]  # byte -> NFA states one edge away
        for state in current:
            for byte_low, byte_high, target in nfa.edges[state]:
                for byte in range(byte_low, byte_high + 1):
                    moves[byte].append(target)
        row = np.full(256, DEAD, dtype=np.int32)
        closures: dict[frozenset, frozenset] = {}  # many bytes share one target set
        previous_targets = None
        for byte, targets in enumerate(moves):
            if not targets:
                previous_targets = None
                continue
            if targets == previous_targets:  # a run of bytes under the same edges: the same next state
                row[byte] = row[byte - 1]
                continue
            previous_targets = targets
            key = frozenset(targets)
            if key not in closures:
                closures[key] = nfa.closure(key)
            following = closures[key]
            if following not in index:
                if len(sets) >= MAX_DFA_STATES:
                    raise RegexError(f"the automaton needs more than {MAX_DFA_STATES} DFA states",
                                     nfa.pattern, 0)
                index[following] = len(sets)
                sets.append(following)
            row[byte] = index[following]
        rows.append(row)
        accepting.append(nfa.accept in current)
    return np.array(rows, dtype=np.int32).reshape(-1, 256), np.array(accepting, dtype=bool)


def _unique_rows(array: np.ndarray) -> np.ndarray:
    """For each row of a 2-D array, the number of its distinct row (rows compared as raw bytes:
    np.unique on a void view, much faster than np.unique(axis=0))."""
    rows = np.ascontiguousarray(array)
    as_bytes = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)
    return np.unique(as_bytes, return_inverse=True)[1].reshape(-1)


def _edges(transitions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (source, target) pairs of a transition table."""
    num_states = transitions.shape[0]
    sources = np.repeat(np.arange(num_states, dtype=np.int64), transitions.shape[1])
    targets = transitions.reshape(-1).astype(np.int64)
    keep = targets != DEAD
    pairs = np.unique(sources[keep] * num_states + targets[keep])  # one int per pair
    return pairs // num_states, pairs % num_states


def _reachable(starts: np.ndarray, sources: np.ndarray, targets: np.ndarray, num_states: int) -> np.ndarray:
    """Boolean (num_states,): the states reachable from `starts` along source -> target edges."""
    order = np.argsort(sources, kind="stable")
    sources, targets = sources[order], targets[order]
    begin = np.searchsorted(sources, np.arange(num_states), side="left")
    end = np.searchsorted(sources, np.arange(num_states), side="right")
    seen = np.zeros(num_states, dtype=bool)
    seen[starts] = True
    stack = list(np.flatnonzero(seen))
    while stack:
        state = stack.pop()
        for target in targets[begin[state]:end[state]]:
            if not seen[target]:
                seen[target] = True
                stack.append(int(target))
    return seen


def trim(transitions: np.ndarray, accepting: np.ndarray, start: int = 0):
    """Keep the states reachable from `start` that can still reach an accepting state ("live"),
    renumbered with the start first; moves into dropped states become DEAD. An empty language
    gives one non-accepting state without moves."""
    num_states = transitions.shape[0]
    sources, targets = _edges(transitions)
    reachable = _reachable(np.array([start]), sources, targets, num_states)
    live = _reachable(np.flatnonzero(accepting), targets, sources, num_states)  # backwards from matches
    keep = reachable & live
    if not keep[start]:
        return np.full((1, 256), DEAD, dtype=np.int32), np.zeros(1, dtype=bool)
    others = np.flatnonzero(keep & (np.arange(num_states) != start))
    order = np.concatenate([[start], others]).astype(np.int64)
    old_to_new = np.full(num_states, DEAD, dtype=np.int32)  # dropped states map to DEAD
    old_to_new[order] = np.arange(order.size, dtype=np.int32)
    kept = transitions[order]
    moved = np.where(kept == DEAD, DEAD, old_to_new[np.maximum(kept, 0)])
    return moved.astype(np.int32), accepting[order].copy()


def minimise(transitions: np.ndarray, accepting: np.ndarray):
    """Moore's partition refinement: merge states no byte string can tell apart; start stays 0.

    Start from {accepting, not accepting}; split a block when its states move to different blocks
    on some byte; stop when nothing splits. The bytes are first grouped into classes that every
    state treats alike (a column of the table per class), so each round compares few columns."""
    byte_class_of = _unique_rows(transitions.T)
    representatives = np.unique(byte_class_of, return_index=True)[1]
    columns = transitions[:, representatives]  # (S, number of byte classes)
    _, blocks = np.unique(accepting, return_inverse=True)  # block ids 0.. (one or two blocks)
    blocks = blocks.reshape(-1)
    count = int(blocks.max()) + 1
    while True:
        target_blocks = np.where(columns == DEAD, -1, blocks[np.maximum(columns, 0)])
        signature = np.concatenate([blocks[:, None], target_blocks], axis=1)
        refined = _unique_rows(signature)
        if refined.max() + 1 == count:
            break
        blocks, count = refined, int(refined.max()) + 1
    # one representative per block; number the blocks in order of first appearance, start first
    _, first_state = np.unique(blocks, return_index=True)
    order = np.argsort(first_state)  # blocks sorted by their first state; state 0's block first
    block_number = np.empty(count, dtype=np.int32)
    block_number[order] = np.arange(count, dtype=np.int32)
    representative_states = first_state[order]
    kept = transitions[representative_states]
    new_transitions = np.where(kept == DEAD, DEAD, block_number[blocks[np.maximum(kept, 0)]])
    return new_transitions.astype(np.int32), accepting[representative_states].copy()


class ByteDFA:
    """A trimmed, minimal DFA over bytes: `transitions[state, byte]` is the next state or DEAD;
    `accepting[state]` marks full matches; the start is state 0. Every state is live: from each one
    some byte string reaches an accepting state (so DEAD is the only dead end)."""

    start = 0

    def __init__(self, transitions: np.ndarray, accepting: np.ndarray, source: str = ""):
        transitions, accepting = trim(np.asarray(transitions, dtype=np.int32), np.asarray(accepting, dtype=bool))
        self.transitions, self.accepting = minimise(transitions, accepting)
        self.source = source

    @property
    def num_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def is_empty(self) -> bool:
        """True when no byte string matches (the pattern's language is empty)."""
        return not self.accepting.any()

    def walk(self, state: int, data: bytes) -> int:
        """The state after reading `data` from `state`, or DEAD."""
        for byte in data:
            if state == DEAD:
                return DEAD
            state = int(self.transitions[state, byte])
        return state

    def accepts(self, data: bytes) -> bool:
        end = self.walk(self.start, data)
        return end != DEAD and bool(self.accepting[end])

    def fullmatch(self, text: str) -> bool:
        """Whether the whole `text` matches (re.fullmatch's answer, surrogates aside)."""
        return self.accepts(text.encode("utf-8", "surrogatepass"))

    def restricted_to(self, allowed_bytes: np.ndarray) -> "ByteDFA":
        """The same automaton without the moves on bytes outside `allowed_bytes` (bool (256,)),
        trimmed again: the language of the strings that use only the allowed bytes."""
        allowed_bytes = np.asarray(allowed_bytes, dtype=bool)
        if allowed_bytes.shape != (256,):
            raise ValueError(f"allowed_bytes must be a boolean array of shape (256,), got {allowed_bytes.shape}")
        transitions = np.where(allowed_bytes[None, :], self.transitions, DEAD)
        return ByteDFA(transitions, self.accepting, source=self.source)

    def __repr__(self) -> str:
        return f"ByteDFA({self.num_states} states, source={self.source!r:.60})"


def compile_regex(pattern: str) -> ByteDFA:
    """The minimal byte DFA of `pattern` under full-match semantics (see the module docstring)."""
    nfa = build_nfa(pattern)
    transitions, accepting = subset_construction(nfa)
    return ByteDFA(transitions, accepting, source=pattern)


__all__ = ["ByteDFA", "DEAD", "NFA", "RegexError", "build_nfa", "compile_regex", "minimise", "parse_regex",
           "subset_construction", "trim", "utf8_sequences"]
