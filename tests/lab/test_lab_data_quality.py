"""lab data-quality: planting misinformation changes exactly the requested share of documents and only the
targeted facts; the log-likelihood comparison is computed correctly (checked on a bigram stub model)."""
import random
import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minifm as mf
from minifm.data.tinyworld import clean_corpus, default_world, generate_documents
from minifm.lab import data_quality as dq
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

DOCUMENTS = generate_documents(size_bytes=50_000, seed=3, noise=0.3)
TARGETS, CONTROLS = dq.targets_and_controls(4)


def sentences_of(text: str) -> Counter:
    return Counter(sentence for line in text.split("\n") for sentence in re.split(r"(?<=[.!?])\s+", line) if sentence)


def statements(fact, town, language) -> set[str]:
    return set(dq.town_statements(fact, town, language, False) + dq.town_statements(fact, town, language, True))


@settings(max_examples=12, deadline=None)
@given(st.floats(0.0, 0.5), st.integers(0, 1000))
def test_planting_changes_exactly_the_share_asked_for_and_only_the_targeted_facts(share, seed):
    texts, planted = dq.plant_misinformation(DOCUMENTS, share, TARGETS, seed=seed)
    assert len(planted) == round(share * len(DOCUMENTS)) == len(set(planted))
    assert all(DOCUMENTS[index].kind in dq.PROSE_KINDS for index in planted)
    for index, (document, text) in enumerate(zip(DOCUMENTS, texts)):
        if index not in planted:
            assert text == document.text
            continue
        fact = TARGETS[planted.index(index) % len(TARGETS)]
        before, after = sentences_of(document.text), sentences_of(text)
        added, removed = after - before, before - after
        assert added, "a planted document states the false town"
        assert set(added) <= statements(fact, fact.false_town, document.language)
        assert set(removed) <= statements(fact, fact.true_town, document.language)
        assert not set(dq.town_statements(fact, fact.true_town, document.language, False)) & set(after)


def test_planting_rewrites_every_statement_of_the_fact_in_a_document():
    fact = TARGETS[0]
    person = default_world().by_name[fact.person]
    text = (f"{fact.person} lives in {person.town}. {fact.person} is nice.\n"
            f"The home of {fact.person} is in {person.town}. Someone else lives in {person.town}.")
    document = dq.Document(text, "en", "clean")
    planted = dq.plant_in_document(document, fact, random.Random(0))
    assert planted == (f"{fact.person} lives in {fact.false_town}. {fact.person} is nice.\n"
                       f"The home of {fact.person} is in {fact.false_town}. Someone else lives in {person.town}.")


def test_planting_with_nothing_asked_changes_nothing_and_bad_shares_are_refused():
    texts, planted = dq.plant_misinformation(DOCUMENTS, 0.0, TARGETS)
    assert planted == [] and texts == [document.text for document in DOCUMENTS]
    with pytest.raises(ValueError, match="share must be a fraction in"):
        dq.plant_misinformation(DOCUMENTS, 1.5, TARGETS)
    junk_only = [document for document in DOCUMENTS if document.kind not in dq.PROSE_KINDS]
    with pytest.raises(ValueError, match="documents state facts"):
        dq.plant_misinformation(junk_only + DOCUMENTS[:1], 0.5, TARGETS)
    with pytest.raises(ValueError, match="at least one FalseFact"):
        dq.plant_misinformation(DOCUMENTS, 0.1, [])


def test_targets_and_controls_are_disjoint_with_a_false_town_each():
    targets, controls = dq.targets_and_controls(6)
    assert len(targets) == len(controls) == 6
    assert not {f.person for f in targets} & {f.person for f in controls}
    world = default_world()
    for fact in targets + controls:
        assert fact.true_town == world.by_name[fact.person].town != fact.false_town and fact.false_town in world.towns
    with pytest.raises(ValueError, match="n_targets must be in"):
        dq.targets_and_controls(0)


class BigramStub:
    """A 'language model' whose logits at each position depend only on the token there (a bigram table)."""

    def __init__(self, table: np.ndarray, block_size: int = 64):
        self.table = table  # (V, V): logits of the next token given this one
        self.config = SimpleNamespace(block_size=block_size)

    def eval(self):
        return self

    def __call__(self, ids):
        return mf.tensor(self.table[np.asarray(ids)])  # (B, T, V)


def test_completion_log_likelihoods_equal_a_hand_computed_sum(rng):
    table = rng.normal(size=(7, 7)).astype(np.float32)
    log_probs = table - np.log(np.exp(table).sum(axis=1, keepdims=True))  # log_softmax per row
    prefixes = [[1, 2], [3], [0, 4, 5, 6]]
    completions = [[3, 4, 5], [2], [1, 1]]
    expected = []
    for prefix, completion in zip(prefixes, completions):
        row = prefix + completion
        expected.append(sum(log_probs[row[t - 1], row[t]] for t in range(len(prefix), len(row))))
    got = dq.completion_log_likelihoods(BigramStub(table), prefixes, completions)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert dq.completion_log_likelihoods(BigramStub(table), [], []).shape == (0,)
    with pytest.raises(ValueError, match="more than block_size"):
        dq.completion_log_likelihoods(BigramStub(table, block_size=3), prefixes, completions)


def bigram_model_of(tokenizer, texts: list[str]) -> BigramStub:
    counts = np.ones((tokenizer.vocab_size, tokenizer.vocab_size))  # add-one smoothing
    eos = tokenizer.special_tokens["<|endoftext|>"]
    for text in texts:
        ids = [eos] + list(tokenizer.encode(text))
        for previous, following in zip(ids, ids[1:]):
            counts[previous, following] += 1
    return BigramStub(np.log(counts / counts.sum(axis=1, keepdims=True)).astype(np.float32))


def test_false_preference_follows_what_the_model_was_fed():
    tokenizer = BPETokenizer.train(clean_corpus(size_bytes=20_000, seed=1), 300, special_tokens=DEFAULT_SPECIAL_TOKENS)
    fact = TARGETS[0]
    lies = dq.town_statements(fact, fact.false_town, "en", False) * 20
    truths = dq.town_statements(fact, fact.true_town, "en", False) * 20
    fed_lies = dq.false_preference(bigram_model_of(tokenizer, lies), tokenizer, [fact])
    fed_truths = dq.false_preference(bigram_model_of(tokenizer, truths), tokenizer, [fact])
    assert fed_lies["comparisons"] == fed_truths["comparisons"] == 3  # the three English town templates
    assert fed_lies["false_preferred"] == 1.0 and fed_lies["mean_margin"] > 0
    assert fed_truths["false_preferred"] == 0.0 and fed_truths["mean_margin"] < 0
