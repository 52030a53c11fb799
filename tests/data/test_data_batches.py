"""Batch builders: packing preserves tokens, MLM proportions (binomial tests), span-corruption round trip,
SFT labels only on assistant tokens, preference batches; all seeded and reproducible."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from minifm.data import batches as b

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|mask|>",
            "<|cls|>", "<|sep|>"] + [f"<|extra_{i}|>" for i in range(32)]


class ByteTokenizer:
    """A stand-in tokenizer: one id per UTF-8 byte, special tokens after 256."""

    def __init__(self):
        self.special_tokens = {s: 256 + i for i, s in enumerate(SPECIALS)}
        self.vocab_size = 256 + len(SPECIALS)

    def encode(self, text, allowed_special="none"):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def stand_in_chat_template(messages, tokenizer, add_generation_prompt=False):
    """<|role|> content <|end|> per message; the mask covers assistant content and its <|end|>."""
    ids, mask = [], []
    for message in messages:
        header = tokenizer.special_tokens[f"<|{message['role']}|>"]
        body = tokenizer.encode(message["content"]) + [tokenizer.special_tokens["<|end|>"]]
        is_assistant = message["role"] == "assistant"
        ids += [header] + body
        mask += [False] + [is_assistant] * len(body)
    return ids, mask


TOK = ByteTokenizer()


# ------------------------------------------------------------------ causal LM
@given(st.lists(st.lists(st.integers(0, 200), max_size=30), min_size=1, max_size=8), st.integers(1, 16))
def test_packing_preserves_the_token_stream(docs, block_size):
    stream = [t for d in docs for t in d + [999]]
    if len(stream) < block_size + 1:
        with pytest.raises(ValueError, match="block_size"):
            b.pack_causal_lm(docs, block_size, eos_id=999)
        return
    packed = b.pack_causal_lm(docs, block_size, eos_id=999)
    assert packed.dtype == np.int64 and packed.shape == ((len(stream) - 1) // block_size, block_size + 1)
    rebuilt = np.concatenate([packed[:, :-1].ravel(), packed[-1:, -1]])
    np.testing.assert_array_equal(rebuilt, stream[: rebuilt.size])
    np.testing.assert_array_equal(packed[1:, 0], packed[:-1, -1])        # windows overlap by one token


def test_causal_lm_batches_shift_and_cover_every_window(rng):
    packed = b.pack_causal_lm([list(range(50)), list(range(100, 170))], 8, eos_id=255)
    seen = []
    for inputs, targets in b.causal_lm_batches(packed, 4, rng):
        assert inputs.shape == targets.shape and inputs.shape[1] == 8 and inputs.dtype == np.int64
        np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
        seen += [tuple(row) for row in inputs]
    assert sorted(seen) == sorted(tuple(row) for row in packed[:, :-1])
    again = [x for x, _ in b.causal_lm_batches(packed, 4, np.random.default_rng(1234))]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate([x for x, _ in b.causal_lm_batches(
        packed, 4, np.random.default_rng(1234))]))


# ------------------------------------------------------------------ BERT masking
def test_mlm_proportions_follow_80_10_10(rng):
    vocab, mask_id, specials = 500, 3, [0, 1, 2, 3]
    ids = rng.integers(0, vocab, size=(200, 128))
    ids[:, 0] = 0                                                      # a [CLS]-like special per row
    inputs, labels = b.mask_for_mlm(ids, rng, mask_id, vocab, specials)
    special = np.isin(ids, specials)
    selected = labels != -100
    assert not (selected & special).any()
    np.testing.assert_array_equal(inputs[special], ids[special])        # specials untouched
    np.testing.assert_array_equal(labels[selected], ids[selected])
    n_eligible, n_selected = int((~special).sum()), int(selected.sum())
    assert stats.binomtest(n_selected, n_eligible, 0.15).pvalue > 1e-4
    masked = int((inputs[selected] == mask_id).sum())
    unchanged = int((inputs[selected] == ids[selected]).sum())
    replaced = n_selected - masked - unchanged
    # a random replacement equals the original with probability 1/|non-special vocab|: fold it into "unchanged"
    p_same = 0.1 / (vocab - len(specials))
    observed = [masked, replaced, unchanged]
    expected = n_selected * np.array([0.8, 0.1 - p_same, 0.1 + p_same])
    assert stats.chisquare(observed, expected).pvalue > 1e-4
    assert not np.isin(inputs[selected & (inputs != ids) & (inputs != mask_id)], specials).any()


def test_mlm_is_seeded_and_validates(rng):
    ids = np.arange(40).reshape(2, 20)
    first = b.mask_for_mlm(ids, np.random.default_rng(5), 1, 64, [0, 1])
    second = b.mask_for_mlm(ids, np.random.default_rng(5), 1, 64, [0, 1])
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="vocab_size"):
        b.mask_for_mlm([70], rng, 1, 64, [0])
    with pytest.raises(TypeError, match="rng"):
        b.mask_for_mlm(ids, 5, 1, 64, [0])


# ------------------------------------------------------------------ T5 span corruption
SENTINEL_IDS = list(range(1000, 1032))


@given(st.integers(2, 400), st.integers(0, 2**32 - 1), st.floats(0.05, 0.5), st.floats(1.0, 5.0))
def test_span_corruption_round_trips(length, seed, density, mean_span):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 1000, size=length)
    num_noise = min(max(int(round(length * density)), 1), length - 1)
    num_spans = min(max(int(round(num_noise / mean_span)), 1), num_noise, length - num_noise)
    if num_spans > len(SENTINEL_IDS):
        with pytest.raises(ValueError, match="sentinel"):
            b.span_corruption(tokens, rng, SENTINEL_IDS, density, mean_span)
        return
    encoder, decoder = b.span_corruption(tokens, rng, SENTINEL_IDS, density, mean_span)
    np.testing.assert_array_equal(b.fill_sentinels(encoder, decoder, SENTINEL_IDS), tokens)
    used = [t for t in decoder.tolist() if t in SENTINEL_IDS]
    assert used == SENTINEL_IDS[:num_spans]                              # sentinels in order, once each
    assert [t for t in encoder.tolist() if t in SENTINEL_IDS] == used
    assert decoder.size - num_spans == num_noise                          # exactly the noise tokens
    assert encoder.size - num_spans == length - num_noise
    assert encoder[0] not in SENTINEL_IDS                                 # T5 starts with kept tokens


def test_span_lengths_average_mean_span_length(rng):
    lengths = []
    for _ in range(300):
        _, decoder = b.span_corruption(rng.integers(0, 1000, size=200), rng, SENTINEL_IDS, 0.15, 3.0)
        cuts = np.flatnonzero(np.isin(decoder, SENTINEL_IDS))
        lengths += np.diff(np.append(cuts, decoder.size)).tolist()
    assert abs(np.mean(lengths) - 1 - 3.0) < 0.1                         # 30 noise tokens / 10 spans exactly


# ------------------------------------------------------------------ SFT and preferences
def test_sft_labels_only_on_assistant_tokens_and_pre_shifted():
    example = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                            {"role": "assistant", "content": "Hello."}]}
    ids, mask = stand_in_chat_template(example["messages"], TOK)
    input_ids, labels = b.sft_example(example, TOK, max_length=64, chat_template=stand_in_chat_template)
    np.testing.assert_array_equal(input_ids, ids[:-1])
    supervised = labels != -100
    np.testing.assert_array_equal(supervised, np.asarray(mask[1:]))
    np.testing.assert_array_equal(labels[supervised], np.asarray(ids[1:])[supervised])
    assert TOK.decode(labels[supervised].tolist()) == "Hello."
    same = b.sft_example({"prompt": "Hi?", "completion": "Hello."}, TOK, 64, stand_in_chat_template)
    np.testing.assert_array_equal(same[1][same[1] != -100], labels[supervised])


def test_sft_truncates_to_max_length():
    input_ids, labels = b.sft_example({"prompt": "x" * 50, "completion": "y" * 50}, TOK, 20, stand_in_chat_template)
    assert input_ids.size == labels.size == 20
    assert (labels == -100).all()                                        # the answer was cut off


@pytest.mark.parametrize("packing", [False, True])
def test_sft_batches_pad_right_and_keep_every_supervised_token(rng, packing):
    examples = [{"prompt": f"question {i}?" * (i % 3 + 1), "completion": f"answer {i}."} for i in range(11)]
    pad = TOK.special_tokens["<|pad|>"]
    singles = [b.sft_example(e, TOK, 48, stand_in_chat_template) for e in examples]
    out = list(b.sft_batches(examples, TOK, 48, 4, rng, packing=packing, chat_template=stand_in_chat_template))
    total_supervised = sum(int((lab != -100).sum()) for _, lab in out)
    assert total_supervised == sum(int((s[1] != -100).sum()) for s in singles)
    for inputs, labels in out:
        assert inputs.shape == labels.shape and inputs.dtype == labels.dtype == np.int64
        assert inputs.shape[0] <= 4
        if packing:
            assert inputs.shape[1] == 48
        padded = inputs == pad
        assert (labels[padded] == -100).all()
        for row in padded:                                                # padding only on the right
            if row.any():
                assert row[np.argmax(row):].all()
    if not packing:
        rows = sorted(tuple(r[r != pad]) for inputs, _ in out for r in inputs)
        assert rows == sorted(tuple(s[0]) for s in singles)


def test_preference_batch_shapes_masks_and_labels():
    triples = [{"prompt": "Where does Mara live?", "chosen": "Sure! Mara lives in Tollby.", "rejected": "No."},
               {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Ugh. Hello, whatever you want."}]
    batch = b.preference_batch(triples, TOK, 64, chat_template=stand_in_chat_template)
    assert set(batch) == {"chosen_ids", "chosen_labels", "rejected_ids", "rejected_labels",
                          "chosen_attention_mask", "rejected_attention_mask"}
    shapes = {v.shape for v in batch.values()}
    assert len(shapes) == 1 and all(v.dtype == np.int64 for v in batch.values())
    for side in ("chosen", "rejected"):
        for row, triple in enumerate(triples):
            labels = batch[f"{side}_labels"][row]
            text = TOK.decode(labels[labels != -100].tolist())
            assert text == triple[side]
            length = int(batch[f"{side}_attention_mask"][row].sum())
            assert (batch[f"{side}_ids"][row, length:] == TOK.special_tokens["<|pad|>"]).all()
    with pytest.raises(ValueError, match="rejected"):
        b.preference_batch([{"prompt": "a", "chosen": "b"}], TOK, 64, chat_template=stand_in_chat_template)


def test_real_chat_template_labels_only_assistant_turns():
    chat = pytest.importorskip("minifm.tokenizer.chat", reason="minifm.tokenizer.chat not available yet")
    from minifm.data import tinyworld
    from minifm.tokenizer import BPETokenizer
    from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

    tokenizer = BPETokenizer.train(tinyworld.clean_corpus(30_000), 400, special_tokens=DEFAULT_SPECIAL_TOKENS)
    task = tinyworld.instructions("train", n=1)[0]
    input_ids, labels = b.sft_example(task, tokenizer, 128)
    ids, mask = chat.apply_chat_template([{"role": "user", "content": task["prompt"]},
                                          {"role": "assistant", "content": task["completion"]}], tokenizer)
    np.testing.assert_array_equal(input_ids, ids[:-1])
    np.testing.assert_array_equal(labels != -100, np.asarray(mask[1:], bool))
    assert task["completion"] in tokenizer.decode(labels[labels != -100].tolist())
