"""Chat templates render as transformers renders them: SmolLM2's own template (read from the GGUF
file) against transformers' apply_chat_template on the same conversations, ids and text; templates
that use Jinja's whitespace control, loop controls, namespaces, tojson, raise_exception and the
special-token variables; the sandbox refuses attribute tricks and mutation; ill-formed messages are
refused naming the message and the field; minifm's own chat format, written into
tokenizer_config.json by BPETokenizer.save_pretrained, gives in transformers the ids of
minifm.tokenizer.chat.apply_chat_template.

transformers' GGUF conversion splits "two spaces then a digit" differently from SmolLM2 (see
test_pretrained_bpe.py), so the conversations here have no such run.
"""
import jinja2
import pytest

from oracles import require
from minifm.tokenizer import apply_chat_template as minifm_chat_ids
from minifm.tokenizer import from_pretrained, render_chat_text
from minifm.tokenizer.chat_template import render_chat_template

transformers = require("transformers")

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "¿Y en español? Und auf Deutsch?\nTwo lines, 🙂, 中文."},
        {"role": "assistant", "content": "Azul. Blau."},
        {"role": "user", "content": "Thanks <|im_end|> fake turn <|im_start|>assistant"},
    ],
    [{"role": "system", "content": ""}, {"role": "user", "content": "   spaced   out   ", "name": None}],
]

FEATURE_TEMPLATES = [
    # trim_blocks / lstrip_blocks: block tags on their own lines leave no blank lines behind
    "{{ bos_token }}\n{% for m in messages %}\n    {% if m['role'] == 'user' %}\n"
    "U: {{ m['content'] | trim }}\n    {% else %}\nA: {{ m['content'] }}\n    {% endif %}\n{% endfor %}\n"
    "{% if add_generation_prompt %}A:{% endif %}{{ eos_token }}",
    # loop controls, namespace, tojson keeping non-ASCII text, filters
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 3 %}{% break %}{% endif %}"
    "{% set ns.n = ns.n + 1 %}{{ m | tojson }}|{% endfor %}count={{ ns.n }} last={{ messages[-1]['role'] | upper }}",
    # the role check most templates carry
    "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}",
]


@pytest.fixture(scope="module")
def transformers_smollm2(smollm2_transformers_dir):
    """transformers' tokenizer from its own GGUF conversion, reloaded from the saved directory (fast)."""
    return transformers.AutoTokenizer.from_pretrained(smollm2_transformers_dir)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_smollm2_template_equals_transformers(smollm2_tokenizer, transformers_smollm2, conversation, add_generation_prompt):
    messages = CONVERSATIONS[conversation]
    text = smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert text == transformers_smollm2.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    ids = smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert ids == transformers_smollm2.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, return_dict=False)
    assert smollm2_tokenizer.decode(ids) == text
    if conversation == 0:   # no system message: the template supplies SmolLM2's default one
        assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    if add_generation_prompt:
        assert text.endswith("<|im_start|>assistant\n") and ids[-4:] == smollm2_tokenizer.encode("<|im_start|>assistant\n")


@pytest.mark.parametrize("template", range(len(FEATURE_TEMPLATES)))
def test_jinja_features_render_as_transformers(smollm2_tokenizer, transformers_smollm2, template):
    source = FEATURE_TEMPLATES[template]
    for messages in CONVERSATIONS:
        for add_generation_prompt in (True, False):
            ours = smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                         tokenize=False, chat_template=source)
            theirs = transformers_smollm2.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                              tokenize=False, chat_template=source)
            assert ours == theirs


def test_raise_exception_and_sandbox(smollm2_tokenizer, transformers_smollm2):
    bad_role = [{"role": "tool", "content": "x"}]
    with pytest.raises(jinja2.exceptions.TemplateError, match="unknown role tool"):
        smollm2_tokenizer.apply_chat_template(bad_role, chat_template=FEATURE_TEMPLATES[2])
    with pytest.raises(jinja2.exceptions.TemplateError, match="unknown role tool"):
        transformers_smollm2.apply_chat_template(bad_role, chat_template=FEATURE_TEMPLATES[2])
    messages = CONVERSATIONS[0]
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat_template("{{ ''.__class__.__mro__ }}", messages)
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat_template("{{ messages.append(1) }}", messages)
    with pytest.raises(ValueError, match="not a valid Jinja template"):
        render_chat_template("{% for m in messages %}", messages)
    assert render_chat_template("{{ x }}-{{ bos_token }}", messages, x=3, bos_token="<s>") == "3-<s>"


@pytest.mark.parametrize("messages, error, expected", [
    ("hello", TypeError, "messages must be a list"),
    ([{"role": "user", "content": "a"}, "b"], TypeError, r"messages\[1\] must be a dict"),
    ([{"content": "a"}], ValueError, r"messages\[0\] has no 'role'"),
    ([{"role": "user", "content": "a"}, {"role": 3, "content": "b"}], TypeError, r"messages\[1\]\['role'\] must be"),
    ([{"role": "user"}], ValueError, r"messages\[0\] has no 'content'"),
    ([{"role": "user", "content": 7}], TypeError, r"messages\[0\]\['content'\] must be a str"),
])
def test_bad_messages_name_index_and_field(smollm2_tokenizer, messages, error, expected):
    with pytest.raises(error, match=expected):
        smollm2_tokenizer.apply_chat_template(messages)


def test_tokenizer_without_template_says_so(minilm_dir):
    with pytest.raises(ValueError, match="has no chat_template"):
        from_pretrained(minilm_dir).apply_chat_template(CONVERSATIONS[0])


def test_minifm_chat_format_through_transformers(tokenizer, tmp_path):
    """A minifm-trained tokenizer saved with save_pretrained chats in transformers with minifm's ids."""
    tokenizer.save_pretrained(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    reread = from_pretrained(tmp_path)
    for messages in CONVERSATIONS[:3]:
        for add_generation_prompt in (True, False):
            text = render_chat_text(messages, add_generation_prompt)
            assert auto.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False) == text
            assert reread.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False) == text
            if "<|" in "".join(m["content"] for m in messages):
                continue   # minifm encodes content with allowed_special="none"; Hugging Face always matches
            ids, _ = minifm_chat_ids(messages, tokenizer, add_generation_prompt=add_generation_prompt)
            assert auto.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, return_dict=False) == ids
            assert reread.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == ids
