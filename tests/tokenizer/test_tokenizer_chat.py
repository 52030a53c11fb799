"""Chat template: exact bytes, ids consistent with encode, the assistant mask covers exactly the
assistant contents and their closing <|end|>."""
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minifm.tokenizer import BPETokenizer, apply_chat_template, render_chat_text
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS
from strategies import tokenizer_text

messages_strategy = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": tokenizer_text}),
    max_size=5,
)


def masked_runs(ids, mask):
    """The maximal runs of consecutive ids whose mask is True."""
    runs = []
    for flag, group in itertools.groupby(zip(ids, mask), key=lambda pair: pair[1]):
        if flag:
            runs.append([i for i, _ in group])
    return runs


@given(messages=messages_strategy, add_generation_prompt=st.booleans())
def test_mask_covers_exactly_the_assistant_replies(tokenizer, messages, add_generation_prompt):
    ids, mask = apply_chat_template(messages, tokenizer, add_generation_prompt=add_generation_prompt)
    assert len(ids) == len(mask)
    assert tokenizer.decode(ids) == render_chat_text(messages, add_generation_prompt)
    replies = [m["content"] + "<|end|>" for m in messages if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in masked_runs(ids, mask)] == replies
    # user text that looks like a special token stays text: only the template's own specials appear
    specials = set(tokenizer.special_tokens.values())
    assert sum(i in specials for i in ids) == 2 * len(messages) + int(add_generation_prompt)
    if add_generation_prompt:
        assert ids[-1] == tokenizer.special_tokens["<|assistant|>"] and mask[-1] is False


@given(messages=messages_strategy, add_generation_prompt=st.booleans())
def test_ids_equal_encoding_the_rendered_text(tokenizer, messages, add_generation_prompt):
    if any(token in m["content"] for m in messages for token in DEFAULT_SPECIAL_TOKENS):
        return  # covered above: such content is deliberately encoded as plain text
    text = render_chat_text(messages, add_generation_prompt)
    ids, _ = apply_chat_template(messages, tokenizer, add_generation_prompt)
    assert ids == tokenizer.encode(text, allowed_special="all")


def test_rendered_bytes():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}]
    parts = ["<|system|>", "Be brief.", "<|end|>", "<|user|>", "Hi", "<|end|>", "<|assistant|>", "Hello!", "<|end|>"]
    assert render_chat_text(messages) == "".join(parts)
    assert render_chat_text(messages, add_generation_prompt=True) == "".join(parts) + "<|assistant|>"


@pytest.mark.parametrize("messages, error, pattern", [
    ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], ValueError, r"messages\[1\].*robot"),
    ([{"role": "user"}], ValueError, r"messages\[0\].*'content'"),
    ([{"content": "x"}], ValueError, r"messages\[0\].*'role'"),
    ([{"role": "user", "content": 3}], TypeError, r"messages\[0\]\['content'\]"),
    (["hello"], TypeError, r"messages\[0\]"),
    ("hello", TypeError, "messages"),
])
def test_malformed_messages_name_the_index(tokenizer, messages, error, pattern):
    with pytest.raises(error, match=pattern):
        apply_chat_template(messages, tokenizer)
    with pytest.raises(error, match=pattern):
        render_chat_text(messages)


def test_tokenizer_without_chat_tokens_is_rejected():
    plain = BPETokenizer.train(["hello world"] * 3, vocab_size=260)
    with pytest.raises(ValueError, match="<\\|user\\|>"):
        apply_chat_template([{"role": "user", "content": "hi"}], plain)
