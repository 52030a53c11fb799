"""Chat templates: render a model's own Jinja template for a conversation, as transformers does.

A pretrained chat model ships its conversation format as a Jinja template (tokenizer_config.json's
"chat_template", a chat_template.jinja file, or a GGUF file's "tokenizer.chat_template"). transformers
renders it with

    jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                 extensions=[jinja2.ext.loopcontrols])

and the variables `messages`, `add_generation_prompt` and the tokenizer's special tokens
(`bos_token`, `eos_token`, ...). The template may call `raise_exception(message)` and
`strftime_now(format)`, and filter with `tojson` (json.dumps, non-ASCII kept). This module does the
same, so the text (and, encoded without adding special tokens, the ids) equals transformers'.

    render_chat_template(template, messages, add_generation_prompt=True, bos_token="<s>") -> str

Messages are TRL's conversational format: a list of {"role": str, "content": str} dicts (content may
also be a list of content blocks, or absent when the message carries "tool_calls"). Keys whose value
is None are dropped before rendering, as transformers does. An ill-formed message is refused with
the index and the field at fault.

Simplifications: no tools/documents arguments, no assistant-token masks (the `{% generation %}`
tag is accepted and renders its body), no continue_final_message; minifm's own (non-Jinja) chat
format for its BPETokenizer lives in minifm/tokenizer/chat.py.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache


def check_messages(messages) -> list[dict]:
    """Copies of `messages` with None-valued keys dropped, after checking their structure."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{index}] must be a dict with 'role' and 'content', got {type(message).__name__}")
        message = {key: value for key, value in message.items() if value is not None}
        if "role" not in message:
            raise ValueError(f"messages[{index}] has no 'role' (keys: {sorted(map(str, message))})")
        if not isinstance(message["role"], str) or not message["role"]:
            raise TypeError(f"messages[{index}]['role'] must be a non-empty str, got {message['role']!r}")
        if "content" not in message:
            if "tool_calls" not in message:
                raise ValueError(f"messages[{index}] has no 'content' (keys: {sorted(map(str, message))})")
        elif not isinstance(message["content"], (str, list)):
            raise TypeError(
                f"messages[{index}]['content'] must be a str (or a list of content blocks), "
                f"got {type(message['content']).__name__}"
            )
        checked.append(message)
    return checked


@lru_cache(maxsize=16)
def compile_chat_template(source: str):
    """A jinja2 Template for `source` in transformers' sandboxed environment (cached per source)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """{% generation %}...{% endgeneration %}: transformers marks assistant text with it; here it
        simply renders its body."""
        tags = {"generation"}

        def parse(self, parser):
            line = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(line)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols],
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    try:
        return environment.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as error:
        raise ValueError(f"chat_template is not a valid Jinja template (line {error.lineno}: {error.message})") from None


def render_chat_template(template: str, messages, add_generation_prompt: bool = False, **variables) -> str:
    """The text of `messages` in `template`; `variables` (bos_token=..., ...) are visible to it."""
    if not isinstance(template, str) or not template:
        raise ValueError(f"template must be a non-empty str (the model's chat template), got {template!r:.80}")
    checked = check_messages(messages)
    compiled = compile_chat_template(template)
    return compiled.render(messages=checked, add_generation_prompt=bool(add_generation_prompt), **variables)
