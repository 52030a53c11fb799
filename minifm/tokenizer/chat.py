"""The chat template: a conversation (TRL's `messages` list) -> token ids plus an assistant mask.

Each message {"role": r, "content": c} is rendered as the bytes

    <|r|> + c + <|end|>

with no spaces or newlines added, turns following each other directly. With
add_generation_prompt=True the text ends with "<|assistant|>", so a model continues with the
assistant's reply and ends it with <|end|>. For example

    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    ->  "<|user|>Hi<|end|><|assistant|>Hello!<|end|>"

Tokens: the role headers and <|end|> are the special-token ids; each content is encoded on its own
with allowed_special="none", so special-token text typed by a user stays ordinary text and cannot
forge a turn boundary. Because special tokens cut the text, the ids equal
`tokenizer.encode(render_chat_text(messages), allowed_special="all")` whenever no content contains
special-token text.

The assistant mask is True on the tokens of every assistant content and on the <|end|> that closes
it: what supervised fine-tuning trains the model to produce. Role headers, system and user turns
and the generation prompt are False.

Simplifications: roles are only system/user/assistant (no tool calls); the order of roles is not
checked; keys other than "role" and "content" are ignored.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from minifm.tokenizer.special import ASSISTANT, END_OF_TURN, SYSTEM, USER

ROLE_TOKENS: dict[str, str] = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (SYSTEM, USER, ASSISTANT, END_OF_TURN)


def _check_messages(messages) -> list[tuple[str, str]]:
    """[(role, content), ...] after checking the TRL message structure."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{index}] must be a dict with 'role' and 'content', got {type(message).__name__}")
        for key in ("role", "content"):
            if key not in message:
                raise ValueError(f"messages[{index}] has no {key!r} key (keys: {sorted(map(str, message))})")
        role, content = message["role"], message["content"]
        if role not in ROLE_TOKENS:
            raise ValueError(f"messages[{index}] has unknown role {role!r}; expected one of {sorted(ROLE_TOKENS)}")
        if not isinstance(content, str):
            raise TypeError(f"messages[{index}]['content'] must be str, got {type(content).__name__}")
        turns.append((role, content))
    return turns


def render_chat_text(messages, add_generation_prompt: bool = False) -> str:
    """The conversation as text, exactly the bytes the ids of apply_chat_template decode to."""
    parts = []
    for role, content in _check_messages(messages):
        parts.extend((ROLE_TOKENS[role], content, END_OF_TURN))
    if add_generation_prompt:
        parts.append(ASSISTANT)
    return "".join(parts)


def apply_chat_template(messages, tokenizer, add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """(ids, assistant_mask) of the conversation; mask True on assistant contents and their <|end|>."""
    turns = _check_messages(messages)
    specials = tokenizer.special_tokens
    missing = [token for token in CHAT_SPECIAL_TOKENS if token not in specials]
    if missing:
        raise ValueError(
            f"tokenizer lacks the chat special tokens {missing}; train it with "
            f"special_tokens=DEFAULT_SPECIAL_TOKENS (minifm.tokenizer.special)"
        )
    ids: list[int] = []
    mask: list[bool] = []
    for role, content in turns:
        content_ids = tokenizer.encode(content, allowed_special="none")
        trained = role == "assistant"
        ids.append(specials[ROLE_TOKENS[role]])
        mask.append(False)
        ids.extend(content_ids)
        mask.extend([trained] * len(content_ids))
        ids.append(specials[END_OF_TURN])
        mask.append(trained)
    if add_generation_prompt:
        ids.append(specials[ASSISTANT])
        mask.append(False)
    return ids, mask
