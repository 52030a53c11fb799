"""A JSON Schema subset compiled to a regular expression of the JSON text (for constrained decoding).

    schema_to_regex({"type": "object", "properties": {"name": {"type": "string"},
                                                     "age": {"type": "integer"}}, "required": ["name"]})
    -> a pattern (minifm.sampling.regex_automaton's syntax) matching exactly the texts
       {"name": "..."} and {"name": "...", "age": 7}

The text is one fixed spelling of each value, the one json.dumps writes by default:
  * no white space except ", " between members / items and ": " after a key (json.dumps'
    default separators); no leading or trailing white space, no indentation;
  * object members in the schema's `properties` order; a property not in `required` may be
    left out; no other property is written (additionalProperties is never used, whatever it says);
  * strings: any character but '"', '\\' and the controls U+0000-U+001F, or the escapes
    \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX (the \\u escapes of surrogates are not produced, so every
    escape is one character and minLength / maxLength count characters exactly);
  * numbers as JSON writes them: -?(0|[1-9][0-9]*) for integers, with an optional fraction and
    exponent for numbers;
  * enum / const values as json.dumps(value, ensure_ascii=False) writes them.
So every text the pattern matches parses with json.loads and is valid against the schema.

Supported keywords: type (one name or a list of them: object, array, string, integer, number,
boolean, null), properties, required, additionalProperties (ignored: extra properties are never
written), items, minItems, maxItems, minLength, maxLength, enum, const, anyOf; the annotations
title, description, default, examples, $schema, $id, $comment are ignored. Anything else (pattern,
format, minimum, $ref, oneOf, allOf, prefixItems, ...) is a ValueError naming the keyword and where
it is, rather than a constraint that silently does not hold.
"""
from __future__ import annotations

import json

TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment"}
KEYWORDS_OF_TYPE = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"minLength", "maxLength"},
    "integer": set(), "number": set(), "boolean": set(), "null": set(),
}
GENERAL_KEYWORDS = {"type", "enum", "const", "anyOf"}
MAX_COUNT = 1000  # the regex engine's largest repeat count
MAX_DEPTH = 32

# one character of a JSON string: a plain character, a short escape, or a \u escape of a non-surrogate
STRING_CHARACTER = (r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]'
                    r'|\\u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))')
INTEGER = r"-?(?:0|[1-9][0-9]*)"
NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
MEMBER_SEPARATOR = ", "  # json.dumps' default item separator
KEY_SEPARATOR = ": "     # and key separator
_SPECIAL = set("\\.^$*+?{}[]()|-")


def escape(text: str) -> str:
    """`text` as a pattern matching exactly itself (its regex metacharacters escaped)."""
    return "".join("\\" + char if char in _SPECIAL else char for char in text)


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _count(schema: dict, key: str, where: str, default):
    value = schema.get(key, default)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}.{key} must be an integer >= 0, got {value!r}")
    if value > MAX_COUNT:
        raise ValueError(f"{where}.{key} = {value} is above the supported {MAX_COUNT}")
    return value


def _repeat(low: int, high: int | None) -> str:
    """A quantifier for low..high copies (high None: unbounded)."""
    if high is None:
        return "*" if low == 0 else ("+" if low == 1 else f"{{{low},}}")
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


def _matches_type(value, type_name: str) -> bool:
    """Does a JSON value (as json.loads gives it) have the JSON Schema type `type_name`?"""
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    python_types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    return isinstance(value, python_types[type_name])


def _type_names(schema: dict, where: str) -> list[str] | None:
    if "type" not in schema:
        return None
    names = schema["type"]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{where}.type must be a type name or a non-empty list of them, got {schema['type']!r}")
    unknown = [name for name in names if name not in TYPES]
    if unknown:
        raise ValueError(f"{where}.type {unknown[0]!r} is not one of {list(TYPES)}")
    return names


def _check_keywords(schema: dict, type_names: list[str] | None, where: str) -> None:
    allowed = GENERAL_KEYWORDS | ANNOTATIONS
    for name in type_names or TYPES:
        allowed |= KEYWORDS_OF_TYPE[name]
    for key in schema:
        if key not in allowed:
            supported = sorted(allowed - ANNOTATIONS)
            raise ValueError(f"{where}: keyword {key!r} is not supported here (supported: {', '.join(supported)})")


def _enum(values: list, type_names: list[str] | None, where: str) -> str:
    """Alternatives of the values' JSON texts (only those of an allowed type, when `type` is given)."""
    kept = [value for value in values if type_names is None or any(_matches_type(value, t) for t in type_names)]
    if not kept:
        raise ValueError(f"{where}: no enum/const value has the type {type_names}")
    texts = []
    for value in kept:
        try:
            texts.append(escape(_dumps(value)))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: enum/const value {value!r} is not JSON ({error})") from None
    return "(?:" + "|".join(texts) + ")"


def _object(schema: dict, where: str, depth: int) -> str:
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ValueError(f"{where}.properties must be an object of schemas, got {type(properties).__name__}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        raise ValueError(f"{where}.required must be a list of property names, got {required!r}")
    missing = [name for name in required if name not in properties]
    if missing:
        raise ValueError(f"{where}.required names {missing[0]!r}, which is not in properties "
                         f"(only the listed properties are written)")
    if not isinstance(schema.get("additionalProperties", False), (bool, dict)):
        raise ValueError(f"{where}.additionalProperties must be true, false or a schema")
    members = []  # (pattern of `"key": value`, required?) in schema order
    for name, subschema in properties.items():
        key = escape(_dumps(name)) + KEY_SEPARATOR
        members.append((key + _value(subschema, f"{where}.properties[{name!r}]", depth + 1), name in required))
    # Built from the last member back: `after` matches members i.. when one was already written
    # (each written member then starts with ", "), `first` when none was written yet.
    after, first = "", ""
    for member, is_required in reversed(members):
        if is_required:
            after, first = MEMBER_SEPARATOR + member + after, member + after
        else:
            after, first = f"(?:{MEMBER_SEPARATOR}{member})?{after}", f"(?:{member}{after}|{first})"
    return r"\{" + first + r"\}"


def _array(schema: dict, where: str, depth: int) -> str:
    if "items" not in schema:
        raise ValueError(f"{where}: an array needs `items` (the schema of every item)")
    item = _value(schema["items"], f"{where}.items", depth + 1)
    low = _count(schema, "minItems", where, 0)
    high = _count(schema, "maxItems", where, None)
    if high is not None and high < low:
        raise ValueError(f"{where}: maxItems {high} < minItems {low}")
    if high == 0:
        return r"\[\]"
    rest = f"(?:{MEMBER_SEPARATOR}{item})" + _repeat(max(low - 1, 0), None if high is None else high - 1)
    body = f"(?:{item}{rest})"
    if low == 0:
        body += "?"
    return r"\[" + body + r"\]"


def _string(schema: dict, where: str) -> str:
    low = _count(schema, "minLength", where, 0)
    high = _count(schema, "maxLength", where, None)
    if high is not None and high < low:
        raise ValueError(f"{where}: maxLength {high} < minLength {low}")
    return '"' + STRING_CHARACTER + _repeat(low, high) + '"'


def _value(schema, where: str, depth: int = 0) -> str:
    """The pattern of the JSON texts valid against `schema` (see the module docstring)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: the schema nests deeper than {MAX_DEPTH} levels")
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be a schema object, got {schema!r:.60}")
    type_names = _type_names(schema, where)
    _check_keywords(schema, type_names, where)
    if "const" in schema or "enum" in schema:
        others = sorted(schema.keys() - ANNOTATIONS - {"type", "enum", "const"})
        if others or ("const" in schema and "enum" in schema):
            raise ValueError(f"{where}: enum / const next to {others or ['enum']} is not supported "
                             f"(list only the values that satisfy them)")
    if "const" in schema:
        return _enum([schema["const"]], type_names, f"{where}.const")
    if "enum" in schema:
        if not isinstance(schema["enum"], list) or not schema["enum"]:
            raise ValueError(f"{where}.enum must be a non-empty list, got {schema['enum']!r:.60}")
        return _enum(schema["enum"], type_names, f"{where}.enum")
    if "anyOf" in schema:
        options = schema["anyOf"]
        if not isinstance(options, list) or not options:
            raise ValueError(f"{where}.anyOf must be a non-empty list of schemas")
        if type_names is not None or len(schema.keys() - ANNOTATIONS) > 1:
            raise ValueError(f"{where}: anyOf next to other keywords is not supported (put them in each option)")
        return "(?:" + "|".join(_value(option, f"{where}.anyOf[{i}]", depth + 1)
                                for i, option in enumerate(options)) + ")"
    if type_names is None:
        raise ValueError(f"{where}: needs a `type` (or enum / const / anyOf); any JSON value ({{}}) is not "
                         f"a regular language")
    patterns = []
    for name in type_names:
        if name == "object":
            patterns.append(_object(schema, where, depth))
        elif name == "array":
            patterns.append(_array(schema, where, depth))
        elif name == "string":
            patterns.append(_string(schema, where))
        else:
            patterns.append({"integer": INTEGER, "number": NUMBER, "boolean": "(?:true|false)", "null": "null"}[name])
    return patterns[0] if len(patterns) == 1 else "(?:" + "|".join(patterns) + ")"


def schema_to_regex(schema: dict) -> str:
    """The pattern of the JSON texts minifm generates for `schema` (see the module docstring)."""
    return _value(schema, "schema")


__all__ = ["schema_to_regex", "escape"]
