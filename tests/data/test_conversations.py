"""TRL's dataset rows through the chat template (minifm.data.conversations), on a real BPE tokenizer:
labels only on the assistant's tokens, the same ids from both dataset shapes, preference pairs that
share their prompt, truncation on the response side, and decoding that stops at the end of a turn."""
import numpy as np
import pytest

from minifm.data import conversations as conv
from minifm.data import tinyworld
from minifm.tokenizer import BPETokenizer, apply_chat_template
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.train(tinyworld.clean_corpus(30_000), 400, special_tokens=DEFAULT_SPECIAL_TOKENS)


def test_prompt_completion_labels_only_the_answer_and_its_end_token(tokenizer):
    task = tinyworld.instructions("train", n=1)[0]
    [(ids, labels)] = conv.encode_sft_examples(tokenizer, [task])
    template_ids, assistant_mask = apply_chat_template([{"role": "user", "content": task["prompt"]},
                                                        {"role": "assistant", "content": task["completion"]}],
                                                       tokenizer)
    np.testing.assert_array_equal(ids, template_ids)
    np.testing.assert_array_equal(labels != conv.IGNORE_INDEX, np.asarray(assistant_mask, bool))
    answer = labels[labels != conv.IGNORE_INDEX]
    assert answer[-1] == conv.special_id(tokenizer, conv.END_TOKEN)
    assert tokenizer.decode(answer[:-1].tolist()).strip() == task["completion"].strip()


def test_messages_and_prompt_completion_give_the_same_ids(tokenizer):
    example = {"prompt": "Where does Mara live?", "completion": "Mara lives in Tollby."}
    messages = {"messages": [{"role": "user", "content": example["prompt"]},
                             {"role": "assistant", "content": example["completion"]}]}
    (ids_a, labels_a), (ids_b, labels_b) = conv.encode_sft_examples(tokenizer, [example, messages])
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    with pytest.raises(KeyError, match="example 0 needs"):
        conv.encode_sft_examples(tokenizer, [{"text": "no chat here"}])


def test_preference_pairs_share_the_prompt_and_cut_the_response_side(tokenizer):
    pair = {"prompt": "Where does Mara live?", "chosen": "Mara lives in Tollby.", "rejected": "No idea at all."}
    [encoded] = conv.encode_preference_pairs(tokenizer, [pair], max_length=64)
    prompt = conv.prompt_ids(tokenizer, pair["prompt"])
    assert encoded["prompt_length"] == len(prompt) and encoded["margin"] == 0.0
    for side in ("chosen", "rejected"):
        assert encoded[side][:len(prompt)] == prompt
        assert encoded[side][len(prompt):] == conv.response_ids(tokenizer, pair[side])
    [short] = conv.encode_preference_pairs(tokenizer, [pair], max_length=len(prompt) + 2)
    assert short["chosen"] == encoded["chosen"][:len(prompt) + 2]       # the prompt survives whole
    with pytest.raises(KeyError, match=r"lacks \['rejected'\]"):
        conv.encode_preference_pairs(tokenizer, [{"prompt": "a", "chosen": "b"}], 64)


def test_decode_response_stops_at_the_end_of_the_turn(tokenizer):
    end, pad = conv.special_id(tokenizer, conv.END_TOKEN), conv.special_id(tokenizer, conv.PAD_TOKEN)
    ids = tokenizer.encode("Mara lives in Tollby.")
    assert conv.decode_response(tokenizer, ids + [end] + tokenizer.encode(" extra")) == "Mara lives in Tollby."
    assert conv.decode_response(tokenizer, ids + [pad, pad]) == "Mara lives in Tollby."
    with pytest.raises(KeyError, match="no special token"):
        conv.special_id(tokenizer, "<|nope|>")
